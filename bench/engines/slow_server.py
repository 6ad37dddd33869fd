"""A loopback OpenAI-compatible endpoint that answers every request after a fixed delay.

A minimal HTTP/1.1 keep-alive server on asyncio protocols (uvloop when installed), so the
server's own cost per request is tens of microseconds and the benchmark measures the client:
how close it gets to the concurrency/latency bound. It answers chat completions
(`/v1/chat/completions`) and raw text completions (`/v1/completions`, what Magpie-style clients
send), and `GET /v1/models` at once; GET /v1/stats returns the number served (and per kind).

The answers are short, varied and distinct per request (words drawn from a hash of the request
and a counter), so a multi-turn client's repetition checks pass them: a request for a user turn
(a raw completion ending in a user prefix, or a user-simulator prompt) gets a question, any other
request an answer, and a judge prompt ("Reply with exactly one JSON object") a valid verdict
that passes (coherent / consistent / shards).
Usage: python slow_server.py PORT DELAY_S
"""
import asyncio
import hashlib
import random
import sys

import orjson

DELAY = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
MODELS = orjson.dumps({"object": "list", "data": [{"id": "bench", "object": "model", "created": 0, "owned_by": "bench"}]})
served = 0
seq = 0  # requests received: with the body, what makes each answer distinct
kinds: dict[str, int] = {}

WORDS = ("cache index thread buffer schema query vector kernel socket parser tensor batch shard replica "
         "lock queue stream filter token layer gradient matrix graph tree heap stack pointer record column "
         "table row join merge sort hash bucket window offset cursor page block frame packet header payload "
         "checksum codec driver module package import export config secret policy role audit metric trace "
         "span event signal timer clock budget quota limit retry backoff timeout deadline latency spike "
         "memory disk network region cluster node pod container image volume mount snapshot backup restore "
         "migration rollback deploy release branch commit patch review test fixture mock stub assertion "
         "coverage profile sample median variance outlier baseline forecast trend season holiday invoice "
         "ledger balance account payment refund discount coupon order cart catalog inventory supplier "
         "garden soil compost seedling pruning harvest recipe flour yeast dough oven crust sauce spice "
         "violin scale chord rhythm tempo melody lyric verse chorus bridge canvas pigment brush sketch").split()
OPENERS = ("How do I", "Why does my", "What is a good way to handle the", "Can you explain the", "When should I use the",
           "Which option fits a", "Is it safe to change the", "What happens to the", "How would you compare the",
           "What should I check first in the")
STARTS = ("In short,", "Usually", "The main point is that", "A simple rule:", "It depends, but", "In practice",
          "First,", "The usual fix is that", "Think of it this way:", "Most often")
LINKS = ("then", "so", "while", "because", "unless", "and then", "after which", "whereas")
USER_PREFIXES = ("<|im_start|>user\n", "<|start_header_id|>user<|end_header_id|>\n\n", "[INST]", "<start_of_turn>user\n")


def response(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\nConnection: keep-alive\r\n\r\n" + body)


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def question(rng: random.Random, ref: str) -> str:
    return f"{rng.choice(OPENERS)} {_words(rng, 3)} for a {_words(rng, 2)} when the {_words(rng, 2)} grows (ref {ref})?"


def answer(rng: random.Random, ref: str) -> str:
    return (f"{rng.choice(STARTS)} the {_words(rng, 3)} keeps the {_words(rng, 2)} small, {rng.choice(LINKS)} the "
            f"{_words(rng, 3)} handles each {_words(rng, 2)}. Check the {_words(rng, 2)} first (ref {ref}).")


def reply(path: str, raw: bytes) -> tuple[bytes, str]:
    """The response body for one request, and its kind (for /stats)."""
    global seq
    seq += 1
    try:
        req = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        req = {}
    n = int(req.get("n") or 1)
    digest = hashlib.blake2b(raw + str(seq).encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    completion = path.endswith("/completions") and not path.endswith("/chat/completions")
    if completion:
        prompt = req.get("prompt") or ""
        prompt = prompt if isinstance(prompt, str) else str(prompt[0] if prompt else "")
        kind = "user" if prompt.endswith(USER_PREFIXES) else "answer"
        text = ""
    else:
        msgs = req.get("messages") or []
        text = "\n".join(m.get("content") or "" for m in msgs if isinstance(m.get("content"), str))
        system = next((m.get("content") or "" for m in msgs if m.get("role") == "system"), "")
        if "Reply with exactly one JSON object" in text:
            kind = "judge"
        elif "role-playing a real human user" in system or "你在扮演" in system:
            kind = "user"
        else:
            kind = "answer"
    kinds[kind] = kinds.get(kind, 0) + 1
    outs = []
    for i in range(n):
        ref = digest.hex()[:6] + (f"-{i}" if i else "")
        if kind == "user":
            outs.append(question(rng, ref))
        elif kind == "answer":
            outs.append(answer(rng, ref))
        elif '"coherent"' in text:
            outs.append(orjson.dumps({"coherent": True, "explanation": f"it follows from the history ({ref})"}).decode())
        elif '"consistent"' in text:
            outs.append(orjson.dumps({"consistent": True, "turn": None, "explanation": f"no contradiction ({ref})"}).decode())
        elif '"shards"' in text:
            outs.append(orjson.dumps({"shards": [question(rng, ref + "a"), question(rng, ref + "b"),
                                                 question(rng, ref + "c")]}).decode())
        else:
            outs.append(orjson.dumps({"ok": True, "explanation": ref}).decode())
    usage = {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32}
    if completion:
        body = {"id": "cmpl-bench", "object": "text_completion", "created": 0, "model": "bench",
                "choices": [{"index": i, "text": t, "finish_reason": "stop", "logprobs": None} for i, t in enumerate(outs)],
                "usage": usage}
    else:
        body = {"id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
                "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop",
                             "logprobs": None} for i, t in enumerate(outs)],
                "usage": usage}
    return orjson.dumps(body), kind


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
            raw = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            path = head.split(" ", 2)[1].split("?", 1)[0].rstrip("/")
            if path.endswith("/stats"):
                self.t.write(response(orjson.dumps({"served": served, **kinds})))
            elif path.endswith("/models"):
                self.t.write(response(MODELS))
            else:
                self.loop.call_later(DELAY, self.answer, reply(path, raw)[0])

    def answer(self, body: bytes):
        global served
        served += 1
        if not self.t.is_closing():
            self.t.write(response(body))


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
