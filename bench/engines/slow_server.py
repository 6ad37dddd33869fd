"""A loopback OpenAI-compatible endpoint that answers every chat completion after a fixed delay.

A minimal HTTP/1.1 keep-alive server on asyncio protocols (uvloop when installed), so the
server's own cost per request is tens of microseconds and the benchmark measures the client:
how close it gets to the concurrency/latency bound. GET /v1/stats returns the number served.
Usage: python slow_server.py PORT DELAY_S
"""
import asyncio
import sys

import orjson

DELAY = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
BODY = orjson.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "A fixed answer of a few words."},
                 "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
})
served = 0


def response(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\nConnection: keep-alive\r\n\r\n" + body)


class Handler(asyncio.Protocol):
    def connection_made(self, transport):
        self.t, self.buf, self.loop = transport, b"", asyncio.get_running_loop()

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v)
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            if head.split(" ", 2)[1].endswith("/stats"):
                self.t.write(response(orjson.dumps({"served": served})))
            else:
                self.loop.call_later(DELAY, self.answer)

    def answer(self):
        global served
        served += 1
        if not self.t.is_closing():
            self.t.write(response(BODY))


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Handler, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop
        uvloop.run(main(int(sys.argv[1])))
    except ImportError:
        asyncio.run(main(int(sys.argv[1])))
