"""An OpenAI-compatible server around any responder (a local transformers model, a script):
`/v1/chat/completions`, and `/v1/completions` for raw text (a Request with `prompt`). With a
`score_prompt` function, `/v1/completions` also takes `echo: true`: the prompt (text, or token
ids as vLLM and lm-eval send them) comes back first with its own tokens' log-probs (null for the
first token), then what `max_tokens` (0: nothing) generates.

`ptdata llm-serve MODEL_DIR` serves a local model for demos and tests; the test suite also
serves scripted answers and injects faults (429 with Retry-After, 500, a hang, an unreadable
body, a malformed judge answer) to prove that steps retry and never lose a prompt. Every
call is counted, so a test can assert that a cached rerun made zero calls.
"""

import asyncio
import socket
import inspect
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from .base import Request, Result, Sample, Sampling

Responder = Callable[[Request], Result]  # sync (run on a thread) or async
# prompt (text or token ids) -> (its text, its tokens, each token's log-prob given those before it, None first)
PromptScorer = Callable[[str | list[int]], tuple[str, list[str], list[float | None]]]


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = ""
    messages: list[dict[str, Any]] = Field(min_length=1)
    n: int = Field(1, ge=1, le=128)
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    logprobs: bool = False
    stream: bool = False
    stream_options: dict[str, Any] | None = None


class CompletionBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = ""
    prompt: str | list[int]  # token ids: with echo only
    n: int = Field(1, ge=1, le=128)
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=0)  # 0: with echo only (score the prompt, generate nothing)
    seed: int | None = None
    stop: str | list[str] | None = None
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    stream: bool = False
    stream_options: dict[str, Any] | None = None


@dataclass
class Fault:
    """What to do instead of answering: `kind` is 429, 500, hang, bad_body or bad_answer."""

    kind: Literal["429", "500", "hang", "bad_body", "bad_answer"]
    match: str = ""  # substring of the last user message; "" matches every request
    times: int = 1
    retry_after: float | None = None
    hang_s: float = 30.0
    answer: str = "this is not the JSON you asked for"


@dataclass
class CallLog:
    calls: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    entries: list[tuple[float, int, str]] = field(default_factory=list)  # (monotonic time, status, last user message)

    def add(self, status: int, prompt: str) -> None:
        self.calls += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1
        self.entries.append((time.monotonic(), status, prompt))


def _last_user(messages: list[dict]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else orjson.dumps(c).decode()
    return ""


def make_app(responder: Responder, *, model_name: str = "ptdata-local", api_key: str | None = None,
             faults: list[Fault] | None = None, score_prompt: PromptScorer | None = None):
    from fastapi import FastAPI, Request as HTTPRequest
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    app = FastAPI(title="ptdata OpenAI-compatible server", docs_url=None, redoc_url=None)
    app.state.log = CallLog()
    app.state.faults = list(faults or [])
    lock = threading.Lock()
    is_async = inspect.iscoroutinefunction(responder)

    def take_fault(prompt: str) -> Fault | None:
        with lock:
            for f in app.state.faults:
                if f.times > 0 and f.match in prompt:
                    f.times -= 1
                    return f
        return None

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "ptdata"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody, http: HTTPRequest):
        return await answer(body, http, _last_user(body.messages), body.messages, None,
                            body.max_completion_tokens or body.max_tokens, bool(body.logprobs))

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, http: HTTPRequest):
        text = body.prompt if isinstance(body.prompt, str) else orjson.dumps(body.prompt).decode()
        bad = ("echo needs a server that scores prompts (ptdata llm-serve MODEL)" if body.echo and score_prompt is None
               else "echo does not stream here" if body.echo and body.stream
               else "a token-id prompt needs echo" if not body.echo and not isinstance(body.prompt, str)
               else "max_tokens 0 needs echo" if not body.echo and body.max_tokens == 0 else None)
        return await answer(body, http, text, [], text, body.max_tokens, body.logprobs is not None, body.echo, bad)

    async def answer(body, http: HTTPRequest, prompt: str, messages: list, raw: str | None, max_tokens: int | None,
                     want_lp: bool, echo: bool = False, bad: str | None = None):
        if api_key and http.headers.get("authorization") != f"Bearer {api_key}":
            app.state.log.add(401, "")
            return JSONResponse({"error": {"message": "invalid API key", "type": "auth"}}, status_code=401)
        if bad:
            return JSONResponse({"error": {"message": bad, "type": "invalid_request_error"}}, status_code=400)
        fault = take_fault(prompt)
        if fault and fault.kind == "429":
            app.state.log.add(429, prompt)
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            return JSONResponse({"error": {"message": "rate limited"}}, status_code=429, headers=headers)
        if fault and fault.kind == "500":
            app.state.log.add(500, prompt)
            return JSONResponse({"error": {"message": "injected server error"}}, status_code=500)
        if fault and fault.kind == "hang":
            app.state.log.add(0, prompt)  # 0: hung, the client gave up on it
            await asyncio.sleep(fault.hang_s)
            return JSONResponse({"error": {"message": "hung"}}, status_code=504)
        if fault and fault.kind == "bad_body":
            app.state.log.add(200, prompt)
            return Response(b'{"choices": [{"message": ', media_type="application/json")
        stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop) if body.stop else None
        sampling = Sampling(n=body.n, temperature=body.temperature, top_p=body.top_p, max_tokens=max_tokens or 256,
                            seed=body.seed, stop=stop, logprobs=want_lp)
        from starlette.concurrency import run_in_threadpool

        if echo:
            try:
                raw, ptoks, plps = await run_in_threadpool(score_prompt, body.prompt)
            except ValueError as e:
                return JSONResponse({"error": {"message": str(e), "type": "invalid_request_error"}}, status_code=400)
        req = Request(messages=messages, sampling=sampling, prompt=raw)
        if fault and fault.kind == "bad_answer":
            res = Result(samples=[Sample(fault.answer, "stop")] * body.n)
        elif echo and max_tokens == 0:
            res = Result(samples=[Sample("", "length", [], [])] * body.n)
        elif is_async:
            res = await responder(req)
        else:
            res = await run_in_threadpool(responder, req)
        if echo:  # the prompt, its tokens and log-probs, before what was generated
            res = Result(samples=[Sample(raw + s.text, s.finish_reason, [*plps, *(s.logprobs or [])] if want_lp else None,
                                         [*ptoks, *(s.tokens or [])] if want_lp else None) for s in res.samples],
                         prompt_tokens=len(ptoks), completion_tokens=res.completion_tokens)
        app.state.log.add(200, prompt)
        cid = f"{'cmpl' if raw is not None else 'chatcmpl'}-{uuid.uuid4().hex[:24]}"
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(_sse(res, cid, model_name, include_usage, raw is not None),
                                     media_type="text/event-stream")
        return JSONResponse(_completion(res, cid, model_name, want_lp, raw is not None))

    return app


def _logprobs(s, want: bool) -> dict | None:
    if not want or s.logprobs is None:
        return None
    toks = s.tokens or [""] * len(s.logprobs)
    return {"content": [{"token": t, "logprob": lp, "top_logprobs": []} for t, lp in zip(toks, s.logprobs)]}


def _text_logprobs(s, want: bool) -> dict | None:
    """The legacy completions shape: parallel `tokens` and `token_logprobs`."""
    if not want or s.logprobs is None:
        return None
    return {"tokens": s.tokens or [""] * len(s.logprobs), "token_logprobs": s.logprobs}


def _completion(res: Result, cid: str, model: str, want_lp: bool, raw: bool = False) -> dict:
    if raw:
        choices = [{"index": i, "text": s.text, "finish_reason": s.finish_reason or "stop",
                    "logprobs": _text_logprobs(s, want_lp)} for i, s in enumerate(res.samples)]
    else:
        choices = [{"index": i, "message": {"role": "assistant", "content": s.text},
                    "finish_reason": s.finish_reason or "stop", "logprobs": _logprobs(s, want_lp)}
                   for i, s in enumerate(res.samples)]
    return {
        "id": cid, "object": "text_completion" if raw else "chat.completion", "created": int(time.time()),
        "model": model, "choices": choices,
        "usage": {"prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
                  "total_tokens": res.prompt_tokens + res.completion_tokens},
    }


def _sse(res: Result, cid: str, model: str, include_usage: bool, raw: bool = False):
    """Server-sent events in OpenAI's chunk shape: one chunk per token (or word)."""
    created = int(time.time())

    def ev(choices: list, usage: dict | None = None) -> bytes:
        d: dict = {"id": cid, "object": "text_completion" if raw else "chat.completion.chunk", "created": created,
                   "model": model, "choices": choices}
        if usage is not None:
            d["usage"] = usage
        return b"data: " + orjson.dumps(d) + b"\n\n"

    for i, s in enumerate(res.samples):
        if raw:
            for text, lp in _pieces(s):
                yield ev([{"index": i, "text": text, "finish_reason": None,
                           "logprobs": {"tokens": [lp["token"]], "token_logprobs": [lp["logprob"]]} if lp else None}])
            yield ev([{"index": i, "text": "", "finish_reason": s.finish_reason or "stop"}])
            continue
        yield ev([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        pieces = _pieces(s)
        for text, lp in pieces:
            choice: dict = {"index": i, "delta": {"content": text}, "finish_reason": None}
            if lp is not None:
                choice["logprobs"] = {"content": [lp]}
            yield ev([choice])
        yield ev([{"index": i, "delta": {}, "finish_reason": s.finish_reason or "stop"}])
    if include_usage:
        yield ev([], {"prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
                      "total_tokens": res.prompt_tokens + res.completion_tokens})
    yield b"data: [DONE]\n\n"


def _pieces(s) -> list[tuple[str, dict | None]]:
    if s.logprobs is not None and s.tokens is not None and "".join(s.tokens) == s.text:
        return [(t, {"token": t, "logprob": lp, "top_logprobs": []}) for t, lp in zip(s.tokens, s.logprobs)]
    words = s.text.split(" ")
    return [(w if j == 0 else " " + w, None) for j, w in enumerate(words)] if s.text else []


def listen_socket(host: str, port: int) -> socket.socket:
    """A bound listening socket for uvicorn, so a port in use is one `error:` line (exit 1) before
    anything (a model, a store) is loaded."""
    from ..errors import InputError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, OverflowError) as e:
        raise InputError(f"--host {host!r} --port {port}: {e}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise InputError(f"--port {port}: cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


class LoopbackServer:
    """Run an ASGI app with uvicorn on 127.0.0.1 in a background thread (tests, demos, benches)."""

    def __init__(self, app, port: int = 0) -> None:
        import socket

        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                                    timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "LoopbackServer":
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("loopback server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
