"""OpenAI-compatible chat completions over HTTP (vLLM, SGLang, Ollama, llama.cpp, TGI, hosted APIs),
and raw text completions (`/v1/completions`) for requests that carry a `prompt`.

Async with a bounded number of requests in flight; retries 429, 5xx, timeouts, connection
errors and unreadable bodies with exponential backoff and jitter (honouring Retry-After);
asks for log-probs when wanted; streams when configured. A request that still fails comes
back as a `Result` with the reason, never as an exception.

The client is aiohttp, not httpx: at 64 requests in flight httpx's connection pool spent
8.5 s of CPU on 640 requests on this machine (aiohttp: 0.16 s), which capped throughput at
12% of the concurrency/latency bound (bench/RESULTS.md).
"""
from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import aiohttp
import orjson

from .base import Backend, Done, LLMConfig, Request, Result, Sample

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class _Retry(Exception):
    def __init__(self, reason: str, detail: str, wait: float | None = None) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.wait = reason, detail, wait


class _Fail(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class OpenAIBackend(Backend):
    def __init__(self, config: LLMConfig) -> None:
        super().__init__(config)
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.completions_url = config.base_url.rstrip("/") + "/completions"

    def _headers(self) -> dict[str, str]:
        key = self.config.api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _compute(self, requests: list[Request], done: Done) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self.agenerate(requests, done=done))
            return
        # called from inside an event loop (a notebook, a server): run on a thread of its own
        failed: list[BaseException] = []

        def work() -> None:
            try:
                asyncio.run(self.agenerate(requests, done=done))
            except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
                failed.append(e)

        t = threading.Thread(target=work)
        t.start()
        t.join()
        if failed:
            raise failed[0]

    async def agenerate(self, requests: list[Request], done: Done | None = None) -> list[Result]:
        """`concurrency` workers pull requests in order; results keep the input order."""
        cfg = self.config
        results: list[Result | None] = [None] * len(requests)
        todo = iter(range(len(requests)))
        connector = aiohttp.TCPConnector(limit=cfg.concurrency, ttl_dns_cache=300)
        headers = {"Content-Type": "application/json", **self._headers()}
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=cfg.timeout),
                                         headers=headers, cookie_jar=aiohttp.DummyCookieJar()) as client:
            async def worker() -> None:
                for i in todo:
                    results[i] = await self._one(client, requests[i])
                    if done:
                        done(i, results[i])

            await asyncio.gather(*(worker() for _ in range(min(cfg.concurrency, len(requests)))))
        return results  # type: ignore[return-value]

    def _body(self, req: Request) -> dict[str, Any]:
        s = req.sampling
        body: dict[str, Any] = {"model": self.config.model, "n": s.n, "temperature": s.temperature, "top_p": s.top_p,
                                "max_tokens": s.max_tokens}
        if req.prompt is not None:
            body["prompt"] = req.prompt
        else:
            body["messages"] = req.messages
        if s.seed is not None:
            body["seed"] = s.seed
        if s.stop:
            body["stop"] = list(s.stop)
        if s.logprobs:
            body["logprobs"] = True if req.prompt is None else 0  # completions: an int, the top-k alternatives
        if self.config.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def _one(self, client: aiohttp.ClientSession, req: Request) -> Result:
        cfg = self.config
        body = orjson.dumps(self._body(req))
        url, raw = (self.url, False) if req.prompt is None else (self.completions_url, True)
        last = _Retry("unknown", "")
        for attempt in range(cfg.max_retries + 1):
            if attempt:
                self.usage.retries += 1
                await asyncio.sleep(_wait(cfg, attempt, last.wait))
            self.usage.http_calls += 1
            try:
                if cfg.stream:
                    res = await self._streamed(client, url, body, req.sampling.n, raw)
                else:
                    async with client.post(url, data=body) as r:
                        content = await r.read()
                    _check_status(r.status, r.headers, content)
                    res = _parse(content, req.sampling.n, raw)
                res.attempts = attempt + 1
                return res
            except _Retry as e:
                last = e
            except _Fail as e:
                return Result(error=e.reason, detail=e.detail, attempts=attempt + 1)
            except asyncio.TimeoutError:
                last = _Retry("timeout", f"no answer within {cfg.timeout:g} s")
            except aiohttp.ClientError as e:
                last = _Retry("connection", f"{type(e).__name__}: {e}"[:300])
        return Result(error=last.reason, detail=f"{last.detail} (gave up after {cfg.max_retries + 1} attempts)",
                      attempts=cfg.max_retries + 1)

    async def _streamed(self, client: aiohttp.ClientSession, url: str, body: bytes, n: int, raw: bool) -> Result:
        texts: dict[int, list[str]] = {}
        lps: dict[int, list[float]] = {}
        toks: dict[int, list[str]] = {}
        finish: dict[int, str | None] = {}
        usage: dict = {}
        async with client.post(url, data=body) as r:
            if r.status != 200:
                _check_status(r.status, r.headers, await r.read())
            async for chunk_bytes in r.content:
                line = chunk_bytes.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise _Retry("bad_response", f"unreadable stream chunk: {data[:200]!r}") from None
                try:  # a chunk of the wrong shape is a bad response, never an exception
                    usage = chunk.get("usage") or usage
                    for ch in chunk.get("choices") or []:
                        i = ch.get("index", 0)
                        if raw:
                            texts.setdefault(i, []).append(ch.get("text") or "")
                            lp = ch.get("logprobs") or {}
                            lps.setdefault(i, []).extend(float(x) for x in lp.get("token_logprobs") or [] if x is not None)
                            toks.setdefault(i, []).extend(lp.get("tokens") or [])
                        else:
                            delta = ch.get("delta") or {}
                            texts.setdefault(i, []).append(delta.get("content") or "")
                            for t in ((ch.get("logprobs") or {}).get("content") or []):
                                lps.setdefault(i, []).append(float(t["logprob"]))
                                toks.setdefault(i, []).append(t.get("token", ""))
                        if ch.get("finish_reason"):
                            finish[i] = ch["finish_reason"]
                except (AttributeError, TypeError, ValueError, KeyError) as e:
                    raise _Retry("bad_response", f"unreadable stream chunk ({type(e).__name__}: {e}): {data[:200]!r}") from None
        if len(texts) < n:
            raise _Retry("bad_response", f"stream ended with {len(texts)} of {n} choices")
        try:
            samples = [Sample("".join(texts[i]), finish.get(i), lps.get(i) or None, toks.get(i) or None)
                       for i in sorted(texts)]
        except TypeError as e:  # a text piece that is not a string, indexes that do not compare
            raise _Retry("bad_response", f"unreadable stream ({e})") from None
        return Result(samples=samples, **_usage(usage))


def _wait(cfg: LLMConfig, attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(retry_after, cfg.backoff_max)
    return min(cfg.backoff_max, cfg.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)


def _check_status(status: int, headers, content: bytes) -> None:
    if status == 200:
        return
    snippet = content[:300].decode("utf-8", "replace").replace("\n", " ")
    if status in RETRYABLE_STATUS:
        wait = None
        ra = headers.get("retry-after")
        if ra:
            try:
                wait = max(0.0, float(ra))
            except ValueError:
                wait = None
        reason = "rate_limited" if status == 429 else "server_error"
        raise _Retry(reason, f"HTTP {status}: {snippet}", wait)
    raise _Fail("auth_error" if status in (401, 403) else "http_4xx" if status < 500 else "server_error",
                f"HTTP {status}: {snippet}")


def _parse(content: bytes, n: int, raw: bool = False) -> Result:
    """A chat completion's choices, or a text completion's (`raw`: `text`, legacy logprobs)."""
    try:
        d = orjson.loads(content)
        choices = sorted(d["choices"], key=lambda c: c.get("index", 0))
        samples = []
        for c in choices:
            text = c["text"] if raw else c["message"].get("content") or ""
            if not isinstance(text, str):
                raise TypeError("the completion text is not a string")
            if raw:
                lp = c.get("logprobs") or {}
                values = [float(x) for x in lp.get("token_logprobs") or [] if x is not None]
                samples.append(Sample(text, c.get("finish_reason"), values or None, lp.get("tokens") or None))
                continue
            lp = (c.get("logprobs") or {}).get("content")
            samples.append(Sample(text, c.get("finish_reason"),
                                  [float(t["logprob"]) for t in lp] if lp else None,
                                  [t.get("token", "") for t in lp] if lp else None))
        tokens = _usage(d.get("usage"))
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
        raise _Retry("bad_response", f"unreadable completion ({type(e).__name__}: {e}): {content[:200]!r}") from None
    if len(samples) < n:
        raise _Retry("bad_response", f"asked for {n} choices, got {len(samples)}")
    return Result(samples=samples, **tokens)


def _usage(u: Any) -> dict[str, int]:
    """A response's token counts; an unreadable `usage` (not an object, counts that are not
    numbers) counts as none rather than failing an answer that came back."""
    try:
        return {"prompt_tokens": int((u or {}).get("prompt_tokens") or 0),
                "completion_tokens": int((u or {}).get("completion_tokens") or 0)}
    except (AttributeError, TypeError, ValueError, OverflowError):
        return {"prompt_tokens": 0, "completion_tokens": 0}
