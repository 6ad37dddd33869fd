"""The flywheel service: an OpenAI-compatible logging proxy plus the feedback API.

Clients change only their base URL. Every chat completion (streaming or not) is forwarded
unchanged to the upstream, stored with an interaction id, and answered with the upstream's
bytes plus that id (an `X-Interaction-Id` header and an `interaction_id` field spliced into
the JSON). Upstream errors and timeouts pass through and are stored too.

Security: a write key (proxy calls, feedback) and an admin key (reads) are separate; keys
are compared in constant time and never logged; a request without a known key is refused
before its body is read, and a body must arrive within `body_timeout` (408) and fit
`max_body_bytes` (413); bodies are validated (422) before the upstream is called, so what a
client sends cannot make the store refuse the interaction after tokens were spent; a request
without consent is stored without its content (its error text too), or not at all. User ids
are stored only as salted hashes (the store keeps a random salt when PTDATA_FLYWHEEL_SALT is
not set).

Every acknowledged interaction is stored: the store write is shielded from the client going
away, and a stream the client cuts is stored with what it got and `finish_reason:
"client_disconnected"`. An interaction the store cannot take is answered 503, not acknowledged.
"""
import contextlib
import hashlib
import hmac
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import aiohttp
import anyio
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints, ValidationError, model_validator

from .store import Store

CONSENT_FALSE = {"false", "0", "no", "off"}
MAX_DEPTH = 64  # JSON nesting a request may have (real requests, tool schemas included, stay far below)
MAX_STORED_DEPTH = 200  # an upstream answer deeper than this is stored without its body
log = logging.getLogger("ptdata.flywheel")
_CONTROL = r"^[^\x00-\x1f\x7f]*$"
Label = Annotated[str, StringConstraints(max_length=200, pattern=_CONTROL)]  # a varchar(200) column, printable
InteractionId = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.:\-]+$")]
# Upstream response headers that describe the connection or the body's encoding, not the answer:
# the rest (Retry-After, rate-limit headers, request ids) reach the client.
HOP_HEADERS = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
               "transfer-encoding", "upgrade", "content-length", "content-encoding", "content-type", "date", "server",
               "set-cookie", "x-interaction-id"}


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
    body_timeout: float = 30.0  # seconds a client has to send its whole body (then 408)

    def __post_init__(self) -> None:
        if not self.write_keys or not self.admin_keys:
            raise ValueError("the flywheel service needs a write key and an admin key")
        if set(self.write_keys) & set(self.admin_keys):
            raise ValueError("write and admin keys must differ")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def bearer_digest(header: str) -> bytes | None:
    """The digest of an `Authorization: Bearer KEY` header's key, None without one."""
    if not header.startswith("Bearer ") or not header[7:].strip():
        return None
    return _digest(header[7:].strip())


def hash_user(user: str | None, salt: str) -> str | None:
    return hashlib.sha256((salt + "\0" + user).encode()).hexdigest() if user else None


_IID = re.compile(r"[A-Za-z0-9_.:\-]{1,40}")


def _is_id(v: Any) -> bool:
    return isinstance(v, str) and _IID.fullmatch(v) is not None


def _is_text(v: Any) -> bool:
    """Text with something in it: a correction of spaces is no correction."""
    return isinstance(v, str) and 0 < len(v) <= 100_000 and not v.isspace()


class Feedback(BaseModel):
    """One feedback event. `event_id` makes a retry idempotent; the same id with other content
    is a conflict (409)."""

    model_config = ConfigDict(extra="forbid")
    interaction_id: InteractionId
    event_id: Label | None = Field(None, min_length=1)
    kind: Literal["thumbs", "rating", "correction", "comment", "regenerate", "choice"]
    value: Any = None
    user: Label | None = None

    @model_validator(mode="after")
    def _check_value(self) -> "Feedback":
        v, k = self.value, self.kind
        ok = ((k == "thumbs" and v in ("up", "down"))
              or (k == "rating" and isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 5)
              or (k in ("correction", "comment") and _is_text(v))
              or (k == "regenerate" and (v is None or (_is_id(v) and v != self.interaction_id)))
              or (k == "choice" and isinstance(v, dict) and set(v) == {"chosen", "rejected"}
                  and all(_is_id(x) for x in v.values()) and v["chosen"] != v["rejected"]))
        if not ok:
            raise ValueError({"thumbs": "value must be 'up' or 'down'", "rating": "value must be an integer 1-5",
                              "correction": "value must be the corrected answer text (not only spaces)",
                              "comment": "value must be text (not only spaces)",
                              "regenerate": "value must be the id of the new interaction (another one) or null",
                              "choice": "value must be {chosen: interaction id, rejected: interaction id}"}[k])
        return self

    def referenced(self) -> list[str]:
        """Every interaction id this event names: each must exist."""
        if self.kind == "choice":
            return [self.interaction_id, *self.value.values()]
        if self.kind == "regenerate" and self.value:
            return [self.interaction_id, self.value]
        return [self.interaction_id]


class Metadata(BaseModel):
    """The request's `metadata` as the proxy reads it (other keys pass through to the upstream)."""

    model_config = ConfigDict(extra="allow")
    conversation_id: Label | None = None
    consent: StrictBool | StrictInt | Label | None = None


class ChatRequest(BaseModel):
    """What the proxy checks before calling the upstream: every value it stores fits its column
    (a label of at most 200 printable characters), `stream` is a real boolean; the rest goes to
    the upstream unchanged."""

    model_config = ConfigDict(extra="allow")
    model: Label | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: StrictBool | None = None
    user: Label | None = None
    metadata: Metadata | None = None


class Invalid(Exception):
    """A request the proxy refuses with 422 before calling the upstream."""


def depth(obj: Any) -> int:
    """How deeply a parsed JSON value nests (iterative: a hostile body cannot exhaust the stack)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (dict, list)):
            deepest = max(deepest, d)
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return deepest


def header(request: Any, name: str) -> str | None:
    """A header as the client sent it: UTF-8 (HTTP libraries read bytes as Latin-1), printable,
    at most 200 characters, like the column that stores it."""
    raw = request.headers.get(name)
    if raw is None or raw == "":
        return None
    try:
        v = raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise Invalid(f"header {name}: not UTF-8") from None
    if len(v) > 200 or re.search(r"[\x00-\x1f\x7f]", v):
        raise Invalid(f"header {name}: at most 200 printable characters")
    return v


def pass_headers(upstream: Any) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers the client should see (Retry-After, rate limits, ...)."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1", "replace")) for k, v in upstream.items()
            if k.lower() not in HOP_HEADERS]


class BodyLimit:
    """ASGI middleware, before a body is parsed: a request without a known key is refused
    (401/403) without reading its body; a body larger than `limit` bytes gets 413 and one not
    sent in full within `timeout` seconds 408, so no client holds a connection open for free."""

    def __init__(self, app, limit: int, on_reject=None, keys: list[bytes] | None = None, timeout: float = 30.0) -> None:
        self.app, self.limit, self.on_reject, self.keys, self.timeout = app, limit, on_reject, keys, timeout

    def _denied(self, scope) -> tuple[int, str, str] | None:
        if self.keys is None:
            return None
        d = bearer_digest(next((v for k, v in scope.get("headers", []) if k == b"authorization"), b"").decode("latin-1"))
        if d is None:
            return 401, "missing API key (Authorization: Bearer ...)", "auth"
        if not any(hmac.compare_digest(d, k) for k in self.keys):
            return 401, "invalid API key", "auth"  # 401: no valid credentials; 403 is for a valid key without the right
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if (denied := self._denied(scope)) is not None:
            if self.on_reject:
                self.on_reject(denied[0])
            return await _send_error(send, *denied)
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.limit:
                return await self._reject(send)
        chunks, size, more = [], 0, True
        try:
            with anyio.fail_after(self.timeout):
                while more:
                    msg = await receive()
                    if msg["type"] != "http.request":
                        break
                    size += len(msg.get("body", b""))
                    if size > self.limit:
                        return await self._reject(send)
                    chunks.append(msg.get("body", b""))
                    more = msg.get("more_body", False)
        except TimeoutError:
            if self.on_reject:
                self.on_reject(408)
            return await _send_error(send, 408, f"request body not received within {self.timeout:g} s", "timeout")
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
    await _send_error(send, 413, f"request body larger than {limit} bytes", "too_large")


async def _send_error(send, status: int, message: str, kind: str) -> None:
    body = orjson.dumps({"error": {"message": message, "type": kind}})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
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

    class ClosingStream(StreamingResponse):
        """A stream that closes its generator however the response ends (the client leaving
        included), at once: the generator's `finally`, which stores the interaction, always runs."""

        async def __call__(self, scope, receive, send) -> None:
            try:
                await super().__call__(scope, receive, send)
            finally:
                with anyio.CancelScope(shield=True):
                    await self.body_iterator.aclose()

    store = store or Store(cfg.store_url)
    write = [_digest(k) for k in cfg.write_keys]
    admin = [_digest(k) for k in cfg.admin_keys]
    salt = cfg.user_salt or store.salt()
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
        d = bearer_digest(request.headers.get("authorization", ""))
        if d is None:
            count(401)
            return _error(401, "missing API key (Authorization: Bearer ...)", "auth")
        known = [hmac.compare_digest(d, k) for k in write + admin]  # every key compared: no timing hint
        if not any(known):
            count(401)
            return _error(401, "invalid API key", "auth")
        if need_admin and not any(known[len(write):]):
            count(403)
            return _error(403, "this key may not do that (an admin key is needed)", "forbidden")
        return None

    def invalid(message: str, details: list | None = None) -> JSONResponse:
        count(422)
        err: dict[str, Any] = {"message": message, "type": "invalid"}
        if details is not None:
            err["details"] = details
        return JSONResponse({"error": err}, status_code=422)

    async def session() -> aiohttp.ClientSession:
        if state["session"] is None:
            headers = {"Authorization": f"Bearer {cfg.upstream_key}"} if cfg.upstream_key else {}
            state["session"] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=512), headers=headers, cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=cfg.timeout))
        return state["session"]

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return invalid("invalid request body", _details(exc.errors()))

    def who(request: Request, req: ChatRequest) -> tuple[bool, str | None, str | None]:
        md = req.metadata or Metadata()
        c = header(request, "x-ptdata-consent")
        c = md.consent if c is None else c
        consent = cfg.default_consent if c is None else str(c).strip().lower() not in CONSENT_FALSE
        user = header(request, "x-ptdata-user") or req.user
        conv = header(request, "x-ptdata-conversation") or md.conversation_id
        return consent, hash_user(user, salt), conv

    async def save(row: dict) -> bool:
        """Store the row; the client going away cannot cancel this. False: the store refused
        it (logged in one line, without the row's content)."""
        if not row["consent"]:
            if cfg.no_consent == "drop":
                return True
            row["request"] = row["response"] = None
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(store.add_interaction, row)
            except Exception as e:  # noqa: BLE001 - one line, no parameters (prompt text) in the log
                log.error("flywheel: interaction %s not stored: %s", row["id"], type(e).__name__)
                return False
        return True

    def not_stored(iid: str) -> JSONResponse:
        count(503)
        return JSONResponse({"error": {"message": f"the store could not take interaction {iid}; retry", "type": "store_error"}},
                            status_code=503)

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

    def parse(raw: bytes) -> tuple[dict, ChatRequest]:
        """The body as JSON and as a checked request; Invalid or ValidationError: 422."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Invalid("request body is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            raise Invalid("request body needs a non-empty 'messages' list")
        if depth(body) > MAX_DEPTH:
            raise Invalid(f"request body nests deeper than {MAX_DEPTH} levels")
        return body, ChatRequest.model_validate(body)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        if (denied := auth(request, False)) is not None:
            return denied
        raw = await request.body()
        try:
            body, req = parse(raw)
            consent, user_hash, conv = who(request, req)
            mv = header(request, "x-ptdata-model-version") or cfg.model_version
        except Invalid as e:
            return invalid(str(e))
        except ValidationError as e:
            return invalid("invalid request body", _details(e.errors()))
        iid = uuid.uuid4().hex
        params = {k: v for k, v in body.items() if k not in ("messages", "user")}  # the user id only as its hash
        row = {"id": iid, "created_at": time.time(), "conversation_id": conv, "user_hash": user_hash, "consent": consent,
               "model": req.model, "model_version": mv,
               "request": {"messages": body["messages"], "params": params}, "response": None, "finish_reason": None,
               "status": 0, "error": None, "stream": bool(req.stream), "prompt_tokens": None,
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
            if not await save(row):
                return not_stored(iid)
            count(row["status"])
            return JSONResponse({"error": {"message": row["error"], "type": "upstream_error"}, "interaction_id": iid},
                                status_code=row["status"], headers=hdr)
        if resp.status != 200 or not row["stream"]:
            try:
                content = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as e:
                resp.release()
                row.update(status=504, error=f"upstream timeout: {type(e).__name__}", latency_ms=(time.perf_counter() - t0) * 1000)
                if not await save(row):
                    return not_stored(iid)
                count(504)
                return JSONResponse({"error": {"message": row["error"], "type": "upstream_error"}, "interaction_id": iid},
                                    status_code=504, headers=hdr)
            row["status"], row["latency_ms"] = resp.status, (time.perf_counter() - t0) * 1000
            ctype = resp.headers.get("content-type", "application/json")
            if resp.status == 200:
                _record_completion(row, content)
            else:  # an error body may echo the prompt: kept only with consent
                row["error"] = (content[:2000].decode("utf-8", "replace") if consent
                                else f"upstream answered HTTP {resp.status} (body not stored: no consent)")
            if not await save(row):
                return not_stored(iid)
            count(resp.status)
            out = _splice(content, iid) if resp.status == 200 and content.lstrip().startswith(b"{") else content
            reply = Response(out, status_code=resp.status, media_type=ctype.split(";")[0], headers=hdr)
            reply.raw_headers.extend(pass_headers(resp.headers))
            return reply

        async def relay():
            acc = _StreamAcc()
            saved = ended = False
            try:
                async for line in resp.content:
                    if line.startswith(b"data:"):
                        payload = line[5:].strip()
                        if payload == b"[DONE]":
                            row.update(status=200, latency_ms=(time.perf_counter() - t0) * 1000)
                            acc.into(row)
                            saved = True
                            if not await save(row):  # committed before the client sees the end of the stream
                                count(503)
                                yield b"data: " + orjson.dumps({"error": {"message": f"the store could not take "
                                                                          f"interaction {iid}", "type": "store_error"}}) + b"\n\n"
                                return
                            yield line
                            continue
                        acc.add(payload)
                        yield line[:5] + b" " + _splice(payload, iid) + b"\n"
                    else:
                        yield line
                ended = True
            except (aiohttp.ClientError, TimeoutError) as e:
                ended = True
                row.update(status=504, error=f"upstream stream broke: {type(e).__name__}")
            finally:
                resp.release()
                if not saved:  # the stream ended without [DONE], or the client went away: keep what came
                    row["latency_ms"] = (time.perf_counter() - t0) * 1000
                    row["status"] = row["status"] or 200
                    acc.into(row, None if ended else "client_disconnected")
                    await save(row)
                count(200)  # the client's status line was sent before the body

        reply = ClosingStream(relay(), media_type="text/event-stream", headers=hdr)
        reply.raw_headers.extend(pass_headers(resp.headers))
        return reply

    @app.post("/v1/feedback")
    async def add_feedback(ev: Feedback, request: Request):
        if (denied := auth(request, False)) is not None:
            return denied
        for i in ev.referenced():
            if not await run_sync(store.has_interaction, i):
                count(404)
                return _error(404, f"no interaction {i!r}", "not_found")
        row = {"event_id": ev.event_id or uuid.uuid4().hex, "interaction_id": ev.interaction_id, "created_at": time.time(),
               "kind": ev.kind, "value": ev.value, "user_hash": hash_user(ev.user, salt)}
        stored, outcome = await run_sync(store.add_feedback, row)
        if outcome == "conflict":
            count(409)
            return _error(409, f"event {row['event_id']!r} was recorded with other content; use a new event id", "conflict")
        created = outcome == "created"
        count(201 if created else 200)
        return JSONResponse({"event_id": stored["event_id"], "created": created}, status_code=201 if created else 200)

    @app.get("/v1/interactions/{iid}")
    async def get_interaction(iid: str, request: Request):
        if (denied := auth(request, True)) is not None:
            return denied
        r = await run_sync(store.interaction, iid) if _is_id(iid) else None
        if r is None:
            return _error(404, f"no interaction {iid!r}", "not_found")
        r["feedback"] = await run_sync(store.feedback_for, [iid])
        return JSONResponse(orjson.loads(orjson.dumps(r)))

    @app.get("/admin/stats")
    async def stats(request: Request):
        if (denied := auth(request, True)) is not None:
            return denied
        c = await run_sync(store.counts)
        return {"store": c, "responses": {str(k): v for k, v in sorted(app.state.counts.items())}}

    return BodyLimit(app, cfg.max_body_bytes, count, keys=write + admin, timeout=cfg.body_timeout), app


async def run_sync(fn, *args):
    """A store call on a worker thread, shielded: a client that leaves does not cut a write short."""
    with anyio.CancelScope(shield=True):
        return await anyio.to_thread.run_sync(fn, *args)


def _details(errors: list) -> list[dict]:
    """Pydantic's errors without the input values (they may be long, or prompt text)."""
    return [{"loc": list(e.get("loc", [])), "msg": str(e.get("msg", ""))} for e in errors]


def _record_completion(row: dict, content: bytes) -> None:
    try:
        d = orjson.loads(content)
        if depth(d) > MAX_STORED_DEPTH:
            row["error"] = f"upstream answer nests deeper than {MAX_STORED_DEPTH} levels: not stored"
            return
        choices = d.get("choices") or []
        row["response"] = {"id": d.get("id"), "model": d.get("model"),
                           "choices": [{"index": c.get("index", 0), "message": c.get("message"),
                                        "finish_reason": c.get("finish_reason")} for c in choices]}
        row["finish_reason"] = choices[0].get("finish_reason") if choices else None
        u = d.get("usage") or {}
        row["prompt_tokens"], row["completion_tokens"] = u.get("prompt_tokens"), u.get("completion_tokens")
        if isinstance(d.get("model"), str) and d["model"]:
            row["model"] = d["model"]
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        row["error"] = "upstream answered 200 with an unreadable body"


class _Choice:
    """One choice rebuilt from its deltas: text, refusal, tool calls (by their index, the id,
    type and name taken once, the arguments concatenated, as OpenAI streams them)."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.refusal: list[str] = []
        self.tools: dict[int, dict] = {}
        self.function_call: dict | None = None
        self.finish: str | None = None

    def add(self, delta: dict) -> None:
        if isinstance(delta.get("content"), str):
            self.text.append(delta["content"])
        if isinstance(delta.get("refusal"), str):
            self.refusal.append(delta["refusal"])
        for tc in delta.get("tool_calls") or []:
            if isinstance(tc, dict):
                self._tool(tc)
        fc = delta.get("function_call")
        if isinstance(fc, dict):  # the legacy single call
            self.function_call = self.function_call or {"name": "", "arguments": ""}
            self._extend(self.function_call, fc)

    def _tool(self, tc: dict) -> None:
        i = tc.get("index", len(self.tools))
        i = i if isinstance(i, int) else len(self.tools)
        call = self.tools.setdefault(i, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        if isinstance(tc.get("id"), str):
            call["id"] = tc["id"]
        if isinstance(tc.get("type"), str):
            call["type"] = tc["type"]
        if isinstance(tc.get("function"), dict):
            self._extend(call["function"], tc["function"])

    @staticmethod
    def _extend(into: dict, part: dict) -> None:
        for k in ("name", "arguments"):
            if isinstance(part.get(k), str):
                into[k] += part[k]

    def message(self) -> dict:
        msg: dict[str, Any] = {"role": "assistant", "content": "".join(self.text) if self.text or not self.tools else None}
        if self.refusal:
            msg["refusal"] = "".join(self.refusal)
        if self.tools:
            msg["tool_calls"] = [self.tools[i] for i in sorted(self.tools)]
        if self.function_call:
            msg["function_call"] = self.function_call
        return msg


class _StreamAcc:
    """Rebuilds the completion from stream chunks, for the store."""

    def __init__(self) -> None:
        self.choices: dict[int, _Choice] = {}
        self.usage: dict = {}
        self.model = self.id = None

    def add(self, payload: bytes) -> None:
        try:
            d = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(d, dict):
            return
        self.model, self.id = d.get("model") or self.model, d.get("id") or self.id
        self.usage = d.get("usage") if isinstance(d.get("usage"), dict) else self.usage
        for c in d.get("choices") or []:
            if not isinstance(c, dict):
                continue
            i = c.get("index", 0) if isinstance(c.get("index", 0), int) else 0
            ch = self.choices.setdefault(i, _Choice())
            if isinstance(c.get("delta"), dict):
                ch.add(c["delta"])
            if c.get("finish_reason"):
                ch.finish = c["finish_reason"]

    def into(self, row: dict, cut: str | None = None) -> None:
        """Fill the row; `cut` is the finish reason of a stream that stopped early."""
        row["response"] = {"id": self.id, "model": self.model, "choices": [
            {"index": i, "message": c.message(), "finish_reason": c.finish or cut} for i, c in sorted(self.choices.items())]}
        first = self.choices.get(0)
        row["finish_reason"] = cut or (first.finish if first else None)
        row["prompt_tokens"], row["completion_tokens"] = self.usage.get("prompt_tokens"), self.usage.get("completion_tokens")
        if isinstance(self.model, str) and self.model:
            row["model"] = self.model


def config_from_env(upstream: str, store_url: str, **kw: Any) -> ServiceConfig:
    """Keys come from the environment, never from the command line (which `ps` shows)."""
    def keys(var: str) -> list[str]:
        return [k.strip() for k in os.environ.get(var, "").split(",") if k.strip()]
    return ServiceConfig(upstream=upstream, store_url=store_url, write_keys=keys("PTDATA_FLYWHEEL_WRITE_KEYS"),
                         admin_keys=keys("PTDATA_FLYWHEEL_ADMIN_KEYS"),
                         upstream_key=os.environ.get(kw.pop("upstream_key_env", "") or "UPSTREAM_API_KEY"),
                         user_salt=os.environ.get("PTDATA_FLYWHEEL_SALT", ""), **kw)
