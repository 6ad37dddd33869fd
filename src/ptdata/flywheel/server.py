"""The flywheel service: an OpenAI-compatible logging proxy plus the feedback API.

Clients change only their base URL. Every chat completion (streaming or not) is forwarded
unchanged to the upstream, stored with an interaction id, and answered with the upstream's
bytes plus that id (an `X-Interaction-Id` header and an `interaction_id` field spliced into
the JSON). Upstream errors and timeouts pass through and are stored too.

Security: a write key (proxy calls, feedback) and an admin key (reads) are separate; keys
are compared in constant time and never logged; bodies are size-limited (413) and validated
(422); a request without consent is stored without its content, or not at all.
"""
import contextlib
import hashlib
import hmac
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .store import Store

CONSENT_FALSE = {"false", "0", "no", "off"}


@dataclass
class ServiceConfig:
    upstream: str  # e.g. http://127.0.0.1:8000/v1
    store_url: str = "flywheel.sqlite"
    write_keys: list[str] = field(default_factory=list)
    admin_keys: list[str] = field(default_factory=list)
    upstream_key: str | None = field(default=None, repr=False)
    model_version: str = ""
    no_consent: Literal["metadata", "drop"] = "metadata"
    default_consent: bool = True
    max_body_bytes: int = 1 << 20
    timeout: float = 120.0
    user_salt: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not self.write_keys or not self.admin_keys:
            raise ValueError("the flywheel service needs a write key and an admin key")
        if set(self.write_keys) & set(self.admin_keys):
            raise ValueError("write and admin keys must differ")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def hash_user(user: str | None, salt: str) -> str | None:
    return hashlib.sha256((salt + "\0" + user).encode()).hexdigest() if user else None


class Feedback(BaseModel):
    """One feedback event. `event_id` makes a retry idempotent."""

    model_config = ConfigDict(extra="forbid")
    interaction_id: str = Field(min_length=1, max_length=40)
    event_id: str | None = Field(None, min_length=1, max_length=200)
    kind: Literal["thumbs", "rating", "correction", "comment", "regenerate", "choice"]
    value: Any = None
    user: str | None = Field(None, max_length=200)

    @model_validator(mode="after")
    def _check_value(self) -> "Feedback":
        v, k = self.value, self.kind
        ok = ((k == "thumbs" and v in ("up", "down"))
              or (k == "rating" and isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 5)
              or (k in ("correction", "comment") and isinstance(v, str) and 0 < len(v) <= 100_000)
              or (k == "regenerate" and (v is None or (isinstance(v, str) and len(v) <= 40)))
              or (k == "choice" and isinstance(v, dict) and set(v) == {"chosen", "rejected"}
                  and all(isinstance(x, str) and x for x in v.values()) and v["chosen"] != v["rejected"]))
        if not ok:
            raise ValueError({"thumbs": "value must be 'up' or 'down'", "rating": "value must be an integer 1-5",
                              "correction": "value must be the corrected answer text", "comment": "value must be text",
                              "regenerate": "value must be the new interaction id or null",
                              "choice": "value must be {chosen: interaction id, rejected: interaction id}"}[k])
        return self


class BodyLimit:
    """ASGI middleware: reject a body larger than `limit` bytes with 413 before it is parsed."""

    def __init__(self, app, limit: int, on_reject=None) -> None:
        self.app, self.limit, self.on_reject = app, limit, on_reject

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.limit:
                return await self._reject(send)
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                break
            size += len(msg.get("body", b""))
            if size > self.limit:
                return await self._reject(send)
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _reject(self, send) -> None:
        if self.on_reject:
            self.on_reject(413)
        await _too_large(send, self.limit)


async def _too_large(send, limit: int) -> None:
    body = orjson.dumps({"error": {"message": f"request body larger than {limit} bytes", "type": "too_large"}})
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _error(status: int, message: str, kind: str):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def _splice(obj: bytes, iid: str) -> bytes:
    """Add `"interaction_id"` as the first field of a JSON object, leaving every other byte."""
    i = obj.find(b"{")
    if i < 0:
        return obj
    rest = obj[i + 1:].lstrip()
    sep = b"" if rest.startswith(b"}") else b","
    return obj[:i + 1] + b'"interaction_id":"' + iid.encode() + b'"' + sep + obj[i + 1:]


def make_app(cfg: ServiceConfig, store: Store | None = None):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.concurrency import run_in_threadpool

    store = store or Store(cfg.store_url)
    write = [_digest(k) for k in cfg.write_keys]
    admin = [_digest(k) for k in cfg.admin_keys]
    state: dict[str, Any] = {"session": None}

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        if state["session"] is not None:
            await state["session"].close()

    app = FastAPI(title="ptdata flywheel", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.store = store
    app.state.counts = {}
    up_url = cfg.upstream.rstrip("/")

    def count(status: int) -> None:
        app.state.counts[status] = app.state.counts.get(status, 0) + 1

    def auth(request: Request, need_admin: bool) -> JSONResponse | None:
        h = request.headers.get("authorization", "")
        if not h.startswith("Bearer ") or not h[7:].strip():
            count(401)
            return _error(401, "missing API key (Authorization: Bearer ...)", "auth")
        d = _digest(h[7:].strip())
        allowed = admin if need_admin else write + admin
        if not any(hmac.compare_digest(d, k) for k in allowed):
            count(403)
            return _error(403, "this key may not do that", "forbidden")
        return None

    async def session() -> aiohttp.ClientSession:
        if state["session"] is None:
            headers = {"Authorization": f"Bearer {cfg.upstream_key}"} if cfg.upstream_key else {}
            state["session"] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=512), headers=headers, cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=cfg.timeout))
        return state["session"]

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        count(422)
        errs = [{"loc": list(e.get("loc", [])), "msg": str(e.get("msg", ""))} for e in exc.errors()]
        return JSONResponse({"error": {"message": "invalid request body", "type": "invalid", "details": errs}},
                            status_code=422)

    def who(request: Request, body: dict) -> tuple[bool, str | None, str | None]:
        md = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        c = request.headers.get("x-ptdata-consent", md.get("consent"))
        consent = cfg.default_consent if c is None else str(c).strip().lower() not in CONSENT_FALSE
        user = request.headers.get("x-ptdata-user") or (body.get("user") if isinstance(body.get("user"), str) else None)
        conv = request.headers.get("x-ptdata-conversation") or md.get("conversation_id")
        return consent, hash_user(user, cfg.user_salt), conv if isinstance(conv, str) else None

    async def save(row: dict) -> None:
        if not row["consent"]:
            if cfg.no_consent == "drop":
                return
            row["request"] = row["response"] = None
        await run_in_threadpool(store.add_interaction, row)

    @app.get("/v1/models")
    async def models(request: Request):
        if (denied := auth(request, False)) is not None:
            return denied
        try:
            s = await session()
            async with s.get(up_url + "/models") as r:
                content, status = await r.read(), r.status
        except (aiohttp.ClientError, TimeoutError) as e:
            return _error(502, f"upstream unreachable: {type(e).__name__}", "upstream_error")
        return Response(content, status_code=status, media_type="application/json")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        if (denied := auth(request, False)) is not None:
            return denied
        raw = await request.body()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            count(422)
            return _error(422, "request body is not JSON", "invalid")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            count(422)
            return _error(422, "request body needs a non-empty 'messages' list", "invalid")
        iid = uuid.uuid4().hex
        consent, user_hash, conv = who(request, body)
        params = {k: v for k, v in body.items() if k not in ("messages",)}
        row = {"id": iid, "created_at": time.time(), "conversation_id": conv, "user_hash": user_hash, "consent": consent,
               "model": body.get("model"), "model_version": request.headers.get("x-ptdata-model-version") or cfg.model_version,
               "request": {"messages": body["messages"], "params": params}, "response": None, "finish_reason": None,
               "status": 0, "error": None, "stream": bool(body.get("stream")), "prompt_tokens": None,
               "completion_tokens": None, "latency_ms": None}
        t0 = time.perf_counter()
        hdr = {"X-Interaction-Id": iid}
        s = await session()
        try:
            resp = await s.post(up_url + "/chat/completions", data=raw, headers={"Content-Type": "application/json"})
        except (aiohttp.ClientError, TimeoutError) as e:
            timeout = isinstance(e, TimeoutError)
            row.update(status=504 if timeout else 502, error=f"upstream {'timeout' if timeout else 'error'}: {type(e).__name__}",
                       latency_ms=(time.perf_counter() - t0) * 1000)
            await save(row)
            count(row["status"])
            return JSONResponse({"error": {"message": row["error"], "type": "upstream_error"}, "interaction_id": iid},
                                status_code=row["status"], headers=hdr)
        if resp.status != 200 or not row["stream"]:
            try:
                content = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as e:
                resp.release()
                row.update(status=504, error=f"upstream timeout: {type(e).__name__}", latency_ms=(time.perf_counter() - t0) * 1000)
                await save(row)
                count(504)
                return JSONResponse({"error": {"message": row["error"], "type": "upstream_error"}, "interaction_id": iid},
                                    status_code=504, headers=hdr)
            row["status"], row["latency_ms"] = resp.status, (time.perf_counter() - t0) * 1000
            ctype = resp.headers.get("content-type", "application/json")
            if resp.status == 200:
                _record_completion(row, content)
            else:
                row["error"] = content[:2000].decode("utf-8", "replace")
            await save(row)
            count(resp.status)
            out = _splice(content, iid) if resp.status == 200 and content.lstrip().startswith(b"{") else content
            return Response(out, status_code=resp.status, media_type=ctype.split(";")[0], headers=hdr)

        async def relay():
            acc = _StreamAcc()
            saved = False
            try:
                async for line in resp.content:
                    if line.startswith(b"data:"):
                        payload = line[5:].strip()
                        if payload == b"[DONE]":
                            row.update(status=200, latency_ms=(time.perf_counter() - t0) * 1000)
                            acc.into(row)
                            await save(row)  # committed before the client sees the end of the stream
                            saved = True
                            yield line
                            continue
                        acc.add(payload)
                        yield line[:5] + b" " + _splice(payload, iid) + b"\n"
                    else:
                        yield line
            except (aiohttp.ClientError, TimeoutError) as e:
                row.update(status=504, error=f"upstream stream broke: {type(e).__name__}")
            finally:
                resp.release()
                if not saved:  # the stream ended without [DONE]: keep what came
                    row["latency_ms"] = (time.perf_counter() - t0) * 1000
                    row["status"] = row["status"] or 200
                    acc.into(row)
                    await save(row)
                count(200)  # the client's status line was sent before the body

        return StreamingResponse(relay(), media_type="text/event-stream", headers=hdr)

    @app.post("/v1/feedback")
    async def add_feedback(ev: Feedback, request: Request):
        if (denied := auth(request, False)) is not None:
            return denied
        ids = [ev.interaction_id] + ([*ev.value.values()] if ev.kind == "choice" else [])
        for i in ids:
            if not await run_in_threadpool(store.has_interaction, i):
                count(404)
                return _error(404, f"no interaction {i!r}", "not_found")
        row = {"event_id": ev.event_id or uuid.uuid4().hex, "interaction_id": ev.interaction_id, "created_at": time.time(),
               "kind": ev.kind, "value": ev.value, "user_hash": hash_user(ev.user, cfg.user_salt)}
        stored, created = await run_in_threadpool(store.add_feedback, row)
        count(201 if created else 200)
        return JSONResponse({"event_id": stored["event_id"], "created": created}, status_code=201 if created else 200)

    @app.get("/v1/interactions/{iid}")
    async def get_interaction(iid: str, request: Request):
        if (denied := auth(request, True)) is not None:
            return denied
        r = await run_in_threadpool(store.interaction, iid)
        if r is None:
            return _error(404, f"no interaction {iid!r}", "not_found")
        r["feedback"] = await run_in_threadpool(store.feedback_for, [iid])
        return JSONResponse(orjson.loads(orjson.dumps(r)))

    @app.get("/admin/stats")
    async def stats(request: Request):
        if (denied := auth(request, True)) is not None:
            return denied
        c = await run_in_threadpool(store.counts)
        return {"store": c, "responses": {str(k): v for k, v in sorted(app.state.counts.items())}}

    return BodyLimit(app, cfg.max_body_bytes, count), app


def _record_completion(row: dict, content: bytes) -> None:
    try:
        d = orjson.loads(content)
        choices = d.get("choices") or []
        row["response"] = {"id": d.get("id"), "model": d.get("model"),
                           "choices": [{"index": c.get("index", 0), "message": c.get("message"),
                                        "finish_reason": c.get("finish_reason")} for c in choices]}
        row["finish_reason"] = choices[0].get("finish_reason") if choices else None
        u = d.get("usage") or {}
        row["prompt_tokens"], row["completion_tokens"] = u.get("prompt_tokens"), u.get("completion_tokens")
        if d.get("model"):
            row["model"] = d["model"]
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        row["error"] = "upstream answered 200 with an unreadable body"


class _StreamAcc:
    """Rebuilds the completion from stream chunks, for the store."""

    def __init__(self) -> None:
        self.text: dict[int, list[str]] = {}
        self.finish: dict[int, str] = {}
        self.usage: dict = {}
        self.model = self.id = None

    def add(self, payload: bytes) -> None:
        try:
            d = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        self.model, self.id = d.get("model") or self.model, d.get("id") or self.id
        self.usage = d.get("usage") or self.usage
        for c in d.get("choices") or []:
            i = c.get("index", 0)
            self.text.setdefault(i, []).append((c.get("delta") or {}).get("content") or "")
            if c.get("finish_reason"):
                self.finish[i] = c["finish_reason"]

    def into(self, row: dict) -> None:
        row["response"] = {"id": self.id, "model": self.model, "choices": [
            {"index": i, "message": {"role": "assistant", "content": "".join(t)}, "finish_reason": self.finish.get(i)}
            for i, t in sorted(self.text.items())]}
        row["finish_reason"] = self.finish.get(0)
        row["prompt_tokens"], row["completion_tokens"] = self.usage.get("prompt_tokens"), self.usage.get("completion_tokens")
        if self.model:
            row["model"] = self.model


def config_from_env(upstream: str, store_url: str, **kw: Any) -> ServiceConfig:
    """Keys come from the environment, never from the command line (which `ps` shows)."""
    def keys(var: str) -> list[str]:
        return [k.strip() for k in os.environ.get(var, "").split(",") if k.strip()]
    return ServiceConfig(upstream=upstream, store_url=store_url, write_keys=keys("PTDATA_FLYWHEEL_WRITE_KEYS"),
                         admin_keys=keys("PTDATA_FLYWHEEL_ADMIN_KEYS"),
                         upstream_key=os.environ.get(kw.pop("upstream_key_env", "") or "UPSTREAM_API_KEY"),
                         user_salt=os.environ.get("PTDATA_FLYWHEEL_SALT", ""), **kw)
