"""`ptdata flywheel import`: traces teams already log elsewhere, as store interactions and feedback.

One function per source (Langfuse, LiteLLM spend logs, OpenTelemetry GenAI spans, plain OpenAI
request/response logs) turns a file into `(rows, feedback, rejects)`: interaction rows in the
proxy's shape (request `{messages, params}`, response `{id, model, choices}`), feedback events,
and one reject (machine-readable reason, `file:line`) for every record that could not be mapped.

The proxy's rules hold: an interaction id is derived from the source's own id (a re-import stores
nothing new), user ids are stored only as salted hashes (the store's salt), a record without
consent is stored without its content (request, response, error text), and text is stored raw:
`flywheel mine` scrubs PII before anything leaves the store.

Feedback mapping (Langfuse scores; `--score-map NAME=KIND` overrides it by score name):
  BOOLEAN, or a score named thumbs/user-feedback/feedback/like with value 0/1 -> thumbs down/up
  CATEGORICAL up/down (thumbs_up, positive, good / thumbs_down, negative, bad) -> thumbs
  NUMERIC named like rating/score/stars/quality with an integer value 1-5 -> rating
  a score's comment -> a comment event (correction when the score is mapped to correction)
A trace-level score goes to the trace's last generation; any other score is a reject.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson

from .server import CONSENT_FALSE, hash_user

SOURCES = ("langfuse", "litellm", "otel", "openai-log")
FEEDBACK_KINDS = ("thumbs", "rating", "comment", "correction")


@dataclass
class ImportConfig:
    salt: str
    consent: str = "all"  # all | none | field:NAME (a metadata field; missing: no consent)
    model_version: str = ""
    score_map: dict[str, str] = field(default_factory=dict)


def stable_id(source: str, key: str) -> str:
    """The interaction id for a source record: the same record always gets the same id."""
    return "imp_" + hashlib.sha256(f"{source}\0{key}".encode("utf-8", "surrogatepass")).hexdigest()[:36]


def reject(loc: str, reason: str, detail: str = "") -> dict:
    file, _, line = loc.rpartition(":")
    return {"file": file, "line": int(line) if line.isdigit() else line, "reason": reason, "detail": detail[:300]}


def read_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(`file:line`, object) for each record: a JSON document (a list, or an object with a `data`
    list, or one object) or JSON Lines. An unparseable line gives (loc, ValueError)."""
    raw = path.read_bytes()
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    else:
        items = doc.get("data") if isinstance(doc, dict) and isinstance(doc.get("data"), list) else doc
        if isinstance(items, list):
            for i, o in enumerate(items, 1):
                yield f"{path}:{i}", o
        else:
            yield f"{path}:1", items
        return
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{n}", orjson.loads(line)
        except orjson.JSONDecodeError as e:
            yield f"{path}:{n}", ValueError(str(e))

def parsed(paths: list[Path], rejects: list[dict]) -> Iterator[tuple[str, Any]]:
    """(`file:line`, object) over every file; an unparseable line becomes an `unparseable_json` reject."""
    for p in paths:
        for loc, o in read_records(p):
            if isinstance(o, ValueError):
                rejects.append(reject(loc, "unparseable_json", str(o)))
            else:
                yield loc, o



def epoch(v: Any) -> float | None:
    """ISO 8601 text, epoch seconds/milliseconds or nanoseconds (OTLP) as epoch seconds."""
    if v is None or v == "":
        return None
    if isinstance(v, str) and not v.strip().lstrip("-").replace(".", "", 1).isdigit():
        try:
            d = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return (d if d.tzinfo else d.replace(tzinfo=timezone.utc)).timestamp()
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    for limit, scale in ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3)):
        if x > limit:
            return x / scale
    return x


def _json(v: Any) -> Any:
    """A value that may be JSON text (LiteLLM and OTel keep messages as strings)."""
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return orjson.loads(v)
        except orjson.JSONDecodeError:
            return v
    return v


def _messages(v: Any) -> list[dict] | None:
    v = _json(v)
    if isinstance(v, dict) and isinstance(v.get("messages"), list):
        v = v["messages"]
    if isinstance(v, list) and v and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in v):
        return v
    return None


def _choices(v: Any) -> tuple[list[dict], dict] | None:
    """(choices, the completion object or {}) from an OpenAI completion, a message or a string."""
    v = _json(v)
    if isinstance(v, dict) and isinstance(v.get("choices"), list) and v["choices"]:
        return [{"index": c.get("index", i), "message": c.get("message"), "finish_reason": c.get("finish_reason")}
                for i, c in enumerate(v["choices"]) if isinstance(c, dict)], v
    if isinstance(v, dict) and ("content" in v or "tool_calls" in v):
        msg = {"role": v.get("role") or "assistant", **{k: v[k] for k in ("content", "tool_calls") if k in v}}
        return [{"index": 0, "message": msg, "finish_reason": v.get("finish_reason")}], {}
    if isinstance(v, str) and v.strip():
        return [{"index": 0, "message": {"role": "assistant", "content": v}, "finish_reason": "stop"}], {}
    return None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else (int(v) if isinstance(v, str) and v.isdigit() else None)


def _consent(cfg: ImportConfig, meta: Any) -> bool:
    if cfg.consent == "all":
        return True
    if cfg.consent == "none":
        return False
    name = cfg.consent.removeprefix("field:")
    v = meta.get(name) if isinstance(meta, dict) else None
    return v is not None and v != "" and str(v).strip().lower() not in CONSENT_FALSE


def make_row(cfg: ImportConfig, source: str, key: str, *, created_at: float | None, conversation: Any, user: Any,
             meta: Any, model: Any, messages: list[dict] | None, params: dict | None, out: tuple[list[dict], dict] | None,
             status: int = 200, error: str | None = None, prompt_tokens: Any = None, completion_tokens: Any = None,
             latency_ms: float | None = None) -> dict:
    """An interaction row as the proxy stores it (no consent: no request, response or error text)."""
    consent = _consent(cfg, meta)
    choices, comp = out or ([], {})
    u = comp.get("usage") if isinstance(comp.get("usage"), dict) else {}
    row = {"id": stable_id(source, key), "created_at": created_at if created_at is not None else time.time(),
           "conversation_id": str(conversation) if conversation else None,
           "user_hash": hash_user(str(user), cfg.salt) if user else None, "consent": consent,
           "model": comp.get("model") or model or None, "model_version": cfg.model_version or None,
           "request": {"messages": messages, "params": params or {}} if messages else None,
           "response": {"id": comp.get("id"), "model": comp.get("model") or model, "choices": choices} if choices else None,
           "finish_reason": choices[0].get("finish_reason") if choices else None, "status": status, "error": error,
           "stream": False, "prompt_tokens": _int(prompt_tokens if prompt_tokens is not None else u.get("prompt_tokens")),
           "completion_tokens": _int(completion_tokens if completion_tokens is not None else u.get("completion_tokens")),
           "latency_ms": latency_ms if latency_ms is None or latency_ms >= 0 else None}
    if not consent:
        row["request"] = row["response"] = None
        if error:
            row["error"] = "source recorded an error (text not stored: no consent)"
    return row


def _latency(t0: float | None, t1: float | None) -> float | None:
    return (t1 - t0) * 1000 if t0 is not None and t1 is not None else None


Result = tuple[list[dict], list[dict], list[dict]]


# ---- Langfuse -------------------------------------------------------------------------------
THUMBS_NAMES = {"thumbs", "user-feedback", "user_feedback", "feedback", "like", "thumbs_up", "helpful"}
RATING_WORDS = ("rating", "score", "stars", "quality")
UP, DOWN = {"up", "thumbs_up", "positive", "good", "true", "1", "yes"}, {"down", "thumbs_down", "negative", "bad", "false", "0", "no"}


def score_events(s: dict, kind_for: dict[str, str]) -> tuple[list[tuple[str, Any]], str | None]:
    """[(kind, value)] for a Langfuse score, or ([], reason)."""
    name, dtype = str(s.get("name") or ""), str(s.get("dataType") or "NUMERIC").upper()
    v, sv = s.get("value"), s.get("stringValue")
    comment = s.get("comment") if isinstance(s.get("comment"), str) and s["comment"].strip() else None
    kind = kind_for.get(name)
    if kind is None:
        low = name.lower()
        if dtype == "BOOLEAN" or (low in THUMBS_NAMES and v in (0, 1)):
            kind = "thumbs"
        elif dtype == "CATEGORICAL" and str(sv if sv is not None else v).strip().lower() in UP | DOWN:
            kind = "thumbs"
        elif dtype == "NUMERIC" and any(w in low for w in RATING_WORDS):
            kind = "rating"
    out: list[tuple[str, Any]] = []
    if kind == "thumbs":
        t = str(sv if dtype == "CATEGORICAL" and sv is not None else v).strip().lower()
        if t in ("1.0",):
            t = "1"
        if t in ("0.0",):
            t = "0"
        if t not in UP | DOWN:
            return [], "unmapped_score_value"
        out.append(("thumbs", "up" if t in UP else "down"))
    elif kind == "rating":
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v != int(v) or not 1 <= v <= 5:
            return ([("comment", comment)] if comment else []), (None if comment else "rating_outside_1_5")
        out.append(("rating", int(v)))
    elif kind in ("comment", "correction"):
        text = comment or (sv if isinstance(sv, str) and sv.strip() else None) or (v if isinstance(v, str) and v.strip() else None)
        if not text:
            return [], "empty_text"
        return [(kind, text)], None
    elif kind is not None:
        return [], "unknown_kind"
    if comment:
        out.append(("comment", comment))
    return (out, None) if out else ([], "unmapped_score")


def import_langfuse(paths: list[Path], cfg: ImportConfig) -> Result:
    """Langfuse exports (GET /api/public/traces, /observations, /scores: lists, `{data: [...]}`
    pages or JSON Lines, in one file or several): one interaction per GENERATION observation
    (a trace without observations but with message input: the trace itself), scores as feedback."""
    traces: dict[str, tuple[str, dict]] = {}
    gens: list[tuple[str, dict]] = []
    scores: list[tuple[str, dict]] = []
    rejects: list[dict] = []
    for p in paths:
        for loc, o in read_records(p):
            if isinstance(o, ValueError):
                rejects.append(reject(loc, "unparseable_json", str(o)))
            elif not isinstance(o, dict):
                rejects.append(reject(loc, "not_an_object"))
            elif "dataType" in o or ("value" in o and "traceId" in o and "name" in o and "type" not in o):
                scores.append((loc, o))
            elif "traceId" in o and "type" in o:
                if str(o["type"]).upper() == "GENERATION":
                    gens.append((loc, o))
                else:
                    rejects.append(reject(loc, "not_a_generation", str(o["type"])))
            elif isinstance(o.get("id"), str):
                traces[o["id"]] = (loc, o)
                for ob in o.get("observations") or []:  # a trace with its observations inline
                    if isinstance(ob, dict) and str(ob.get("type", "")).upper() == "GENERATION":
                        gens.append((loc, {"traceId": o["id"], **ob}))
                for sc in o.get("scores") or []:
                    if isinstance(sc, dict):
                        scores.append((loc, {"traceId": o["id"], **sc}))
            else:
                rejects.append(reject(loc, "unrecognized_record"))
    rows: list[dict] = []
    by_obs: dict[str, str] = {}
    last_in_trace: dict[str, tuple[float, str]] = {}
    with_gen = {g.get("traceId") for _, g in gens}

    def add(loc: str, key: str, trace: dict, o: dict, t0: float | None, t1: float | None) -> None:
        msgs = _messages(o.get("input"))
        if msgs is None:
            rejects.append(reject(loc, "no_messages", key))
            return
        err = str(o.get("level", "")).upper() == "ERROR"
        out = _choices(o.get("output"))
        if out is None and not err:
            rejects.append(reject(loc, "no_output", key))
            return
        u = o.get("usageDetails") or o.get("usage") or {}
        u = u if isinstance(u, dict) else {}
        md = {**(trace.get("metadata") or {} if isinstance(trace.get("metadata"), dict) else {}),
              **(o.get("metadata") if isinstance(o.get("metadata"), dict) else {})}
        params = o.get("modelParameters") if isinstance(o.get("modelParameters"), dict) else {}
        row = make_row(cfg, "langfuse", key, created_at=t0, conversation=trace.get("sessionId") or o.get("traceId") or trace.get("id"),
                       user=trace.get("userId"), meta=md, model=o.get("model"), messages=msgs, params=params,
                       out=None if err else out, status=500 if err else 200,
                       error=(o.get("statusMessage") or "error") if err else None,
                       prompt_tokens=u.get("input", u.get("promptTokens", u.get("prompt_tokens"))),
                       completion_tokens=u.get("output", u.get("completionTokens", u.get("completion_tokens"))),
                       latency_ms=_latency(t0, t1))
        rows.append(row)
        by_obs[key] = row["id"]
        tid = o.get("traceId") or trace.get("id")
        if tid and (tid not in last_in_trace or (row["created_at"], row["id"]) >= last_in_trace[tid]):
            last_in_trace[tid] = (row["created_at"], row["id"])

    for loc, g in gens:
        tid = g.get("traceId")
        trace = traces.get(tid, (None, {}))[1]
        if not g.get("id"):
            rejects.append(reject(loc, "no_id"))
            continue
        add(loc, str(g["id"]), trace, g, epoch(g.get("startTime")), epoch(g.get("endTime") or g.get("completionStartTime")))
    for tid, (loc, t) in traces.items():
        if tid in with_gen:
            continue
        t0 = epoch(t.get("timestamp"))
        lat = t.get("latency")  # seconds in the public API
        add(loc, "trace:" + tid, t, t, t0, t0 + lat if t0 is not None and isinstance(lat, (int, float)) else None)
    known_traces = set(traces) | with_gen
    fb: list[dict] = []
    for loc, s in scores:
        oid, tid = s.get("observationId"), s.get("traceId")
        iid = by_obs.get(oid) if oid else last_in_trace.get(tid, (0, None))[1]
        if iid is None:
            reason = "unknown_trace" if tid not in known_traces else ("unknown_observation" if oid else "no_interaction")
            rejects.append(reject(loc, reason, str(oid or tid)))
            continue
        events, why = score_events(s, cfg.score_map)
        if why:
            rejects.append(reject(loc, why, str(s.get("name"))))
            continue
        sid = str(s.get("id") or f"{tid}:{oid}:{s.get('name')}")
        for k, (kind, value) in enumerate(events):
            fb.append({"event_id": f"langfuse:{sid}" + (f":{kind}" if k else ""), "interaction_id": iid,
                       "created_at": epoch(s.get("timestamp")) or time.time(), "kind": kind, "value": value,
                       "user_hash": hash_user(str(s["authorUserId"]), cfg.salt) if s.get("authorUserId") else None,
                       "_loc": loc})
    return rows, fb, rejects


# ---- LiteLLM --------------------------------------------------------------------------------
def import_litellm(paths: list[Path], cfg: ImportConfig) -> Result:
    """LiteLLM_SpendLogs rows (`messages` is there with store_prompts_in_spend_logs)."""
    rows, rejects = [], []
    for loc, o in parsed(paths, rejects):
        if not isinstance(o, dict) or not o.get("request_id"):
            rejects.append(reject(loc, "no_request_id"))
            continue
        ct = str(o.get("call_type") or "completion")
        if "completion" not in ct or "text_completion" in ct:
            rejects.append(reject(loc, "not_a_chat_completion", ct))
            continue
        msgs = _messages(o.get("messages"))
        if msgs is None:
            rejects.append(reject(loc, "no_messages", str(o["request_id"])))
            continue
        md = _json(o.get("metadata"))
        md = md if isinstance(md, dict) else {}
        failed = str(o.get("status") or "success").lower() not in ("success", "200")
        out = None if failed else _choices(o.get("response"))
        if out is None and not failed:
            rejects.append(reject(loc, "no_response", str(o["request_id"])))
            continue
        info = md.get("error_information") if isinstance(md.get("error_information"), dict) else {}
        code = _int(info.get("error_code")) if info else None
        t0, t1 = epoch(o.get("startTime")), epoch(o.get("endTime"))
        req = _json(o.get("proxy_server_request"))
        params = {k: v for k, v in req.items() if k not in ("messages", "user")} if isinstance(req, dict) else {}
        rows.append(make_row(cfg, "litellm", str(o["request_id"]), created_at=t0, conversation=o.get("session_id"),
                             user=o.get("end_user") or o.get("user"), meta=md, model=o.get("model"), messages=msgs,
                             params=params, out=out, status=(code if code and code >= 400 else 500) if failed else 200,
                             error=(info.get("error_message") or "error") if failed else None,
                             prompt_tokens=o.get("prompt_tokens"), completion_tokens=o.get("completion_tokens"),
                             latency_ms=_latency(t0, t1)))
    return rows, [], rejects


# ---- OpenTelemetry GenAI ----------------------------------------------------------------------
def _anyvalue(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    for k in ("stringValue", "boolValue", "doubleValue"):
        if k in v:
            return v[k]
    if "intValue" in v:
        return int(v["intValue"])
    if "arrayValue" in v:
        return [_anyvalue(x) for x in (v["arrayValue"].get("values") or [])]
    if "kvlistValue" in v:
        return _attrs(v["kvlistValue"].get("values"))
    return None


def _attrs(kvs: Any) -> dict:
    return {kv["key"]: _anyvalue(kv.get("value")) for kv in kvs or [] if isinstance(kv, dict) and "key" in kv}


def _otel_message(m: Any, default_role: str) -> dict | None:
    """A message of the newer conventions (`parts`) or a plain {role, content}, as OpenAI's."""
    m = _json(m)
    if not isinstance(m, dict):
        return None
    out: dict[str, Any] = {"role": m.get("role") or default_role}
    if isinstance(m.get("parts"), list):
        texts, calls = [], []
        for part in m["parts"]:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                texts.append(str(part.get("content", "")))
            elif part.get("type") == "tool_call":
                calls.append({"id": part.get("id"), "type": "function", "function": {
                    "name": part.get("name"), "arguments": part["arguments"] if isinstance(part.get("arguments"), str)
                    else orjson.dumps(part.get("arguments")).decode()}})
            elif part.get("type") == "tool_call_response":
                out["role"], out["tool_call_id"] = "tool", part.get("id")
                r = part.get("response")
                texts.append(r if isinstance(r, str) else orjson.dumps(r).decode())
        out["content"] = "".join(texts) if texts or not calls else None
        if calls:
            out["tool_calls"] = calls
    else:
        for k in ("content", "tool_calls", "tool_call_id", "name"):
            if k in m:
                out[k] = _json(m[k]) if k == "tool_calls" else m[k]
    return out


def _otel_span(cfg: ImportConfig, loc: str, span: dict, rattrs: dict, rejects: list[dict]) -> dict | None:
    a = {**rattrs, **_attrs(span.get("attributes"))}
    op = a.get("gen_ai.operation.name")
    if op not in ("chat", "text_completion") and not (op is None and any(k.startswith("gen_ai.") for k in a)):
        rejects.append(reject(loc, "not_a_chat_span", str(op or span.get("name") or "")))
        return None
    key = f"{span.get('traceId')}:{span.get('spanId')}"
    msgs, out_msgs = None, []
    if "gen_ai.input.messages" in a:  # the newer conventions: JSON text attributes
        ins = _json(a["gen_ai.input.messages"])
        msgs = [m for m in (_otel_message(x, "user") for x in ins) if m] if isinstance(ins, list) else None
        sysi = _json(a.get("gen_ai.system_instructions"))
        if msgs and isinstance(sysi, list):
            text = "".join(str(p.get("content", "")) for p in sysi if isinstance(p, dict))
            msgs.insert(0, {"role": "system", "content": text})
        outs = _json(a.get("gen_ai.output.messages"))
        for i, m in enumerate(outs if isinstance(outs, list) else []):
            mm = _otel_message(m, "assistant")
            if mm:
                out_msgs.append({"index": i, "message": mm, "finish_reason": m.get("finish_reason") if isinstance(m, dict) else None})
    else:  # the older conventions: one span event per message, gen_ai.choice for the answer
        msgs = []
        for ev in span.get("events") or []:
            name, ea = ev.get("name", ""), _attrs(ev.get("attributes"))
            body = _anyvalue(ev.get("body")) if "body" in ev else None
            if name == "gen_ai.choice":
                msg = _json(ea.get("message") if "message" in ea else (body or {}).get("message") if isinstance(body, dict) else None)
                msg = msg if isinstance(msg, dict) else {"content": ea.get("content")}
                out_msgs.append({"index": int(ea.get("index", len(out_msgs))), "message": {"role": "assistant", **msg},
                                 "finish_reason": ea.get("finish_reason")})
            elif name.startswith("gen_ai.") and name.endswith(".message"):
                role = name[len("gen_ai."):-len(".message")]
                src = ea if ("content" in ea or "tool_calls" in ea) else (body if isinstance(body, dict) else {})
                m = _otel_message({"role": ea.get("role") or role, **src}, role)
                if m:
                    msgs.append(m)
        k = 0
        while f"gen_ai.prompt.{k}.role" in a:  # OpenLLMetry's indexed attributes
            msgs.append({"role": a[f"gen_ai.prompt.{k}.role"], "content": a.get(f"gen_ai.prompt.{k}.content")})
            k += 1
        k = 0
        while f"gen_ai.completion.{k}.content" in a or f"gen_ai.completion.{k}.role" in a:
            out_msgs.append({"index": k, "message": {"role": "assistant", "content": a.get(f"gen_ai.completion.{k}.content")},
                             "finish_reason": a.get(f"gen_ai.completion.{k}.finish_reason")})
            k += 1
        msgs = msgs or None
    if not msgs:
        rejects.append(reject(loc, "no_messages", key))
        return None
    st = span.get("status") or {}
    failed = st.get("code") in (2, "STATUS_CODE_ERROR") or bool(a.get("error.type"))
    if not out_msgs and not failed:
        rejects.append(reject(loc, "no_output", key))
        return None
    fr = a.get("gen_ai.response.finish_reasons")
    if out_msgs and out_msgs[0]["finish_reason"] is None and isinstance(fr, list) and fr:
        out_msgs[0]["finish_reason"] = fr[0]
    t0, t1 = epoch(span.get("startTimeUnixNano")), epoch(span.get("endTimeUnixNano"))
    comp = {"id": a.get("gen_ai.response.id"), "model": a.get("gen_ai.response.model")}
    params = {k.removeprefix("gen_ai.request."): v for k, v in a.items()
              if k.startswith("gen_ai.request.") and k != "gen_ai.request.model"}
    return make_row(cfg, "otel", key, created_at=t0,
                    conversation=a.get("gen_ai.conversation.id") or a.get("session.id") or span.get("traceId"),
                    user=a.get("user.id") or a.get("enduser.id"), meta=a, model=a.get("gen_ai.request.model"),
                    messages=msgs, params=params, out=None if failed else (out_msgs, comp),
                    status=500 if failed else 200, error=(st.get("message") or a.get("error.type") or "error") if failed else None,
                    prompt_tokens=a.get("gen_ai.usage.input_tokens", a.get("gen_ai.usage.prompt_tokens")),
                    completion_tokens=a.get("gen_ai.usage.output_tokens", a.get("gen_ai.usage.completion_tokens")),
                    latency_ms=_ns_latency(span.get("startTimeUnixNano"), span.get("endTimeUnixNano")) or _latency(t0, t1))


def _ns_latency(a: Any, b: Any) -> float | None:
    """Milliseconds between two OTLP nanosecond timestamps, exactly (floats of epoch ns lose digits)."""
    try:
        return (int(b) - int(a)) / 1e6
    except (TypeError, ValueError):
        return None


def import_otel(paths: list[Path], cfg: ImportConfig) -> Result:
    """OTLP JSON (`resourceSpans[].scopeSpans[].spans[]`; one document or the file exporter's JSON
    Lines): one interaction per GenAI chat span; a reject's line is the document's, `#N` the span."""
    rows, rejects = [], []
    for loc, o in parsed(paths, rejects):
        if not isinstance(o, dict) or not isinstance(o.get("resourceSpans"), list):
            rejects.append(reject(loc, "not_otlp_json"))
            continue
        n = 0
        for rs in o["resourceSpans"]:
            rattrs = _attrs((rs.get("resource") or {}).get("attributes"))
            for ss in rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []:
                for span in ss.get("spans") or []:
                    n += 1
                    row = _otel_span(cfg, f"{loc}#{n}", span, rattrs, rejects)
                    if row:
                        rows.append(row)
    return rows, [], rejects


# ---- plain OpenAI request/response logs -----------------------------------------------------
def import_openai_log(paths: list[Path], cfg: ImportConfig) -> Result:
    """JSON Lines of `{request: chat.completions body, response: chat.completion}` or `{messages,
    response}`; optional `id`, `created_at`, `conversation_id`, `user`, `consent`, `status`, `error`,
    and `feedback` ({thumbs: up|down, rating: 1-5, comment: text, correction: text})."""
    rows, fb, rejects = [], [], []
    for loc, o in parsed(paths, rejects):
        if not isinstance(o, dict):
            rejects.append(reject(loc, "not_an_object"))
            continue
        req = o.get("request") if isinstance(o.get("request"), dict) else {"messages": o.get("messages")}
        msgs = _messages(req.get("messages"))
        if msgs is None:
            rejects.append(reject(loc, "no_messages"))
            continue
        resp = o.get("response")
        err = o.get("error") or (resp.get("error") if isinstance(resp, dict) else None)
        status = _int(o.get("status")) or (500 if err else 200)
        out = _choices(resp) if status == 200 else None
        if out is None and status == 200:
            rejects.append(reject(loc, "no_response"))
            continue
        rid = o.get("id") or (resp.get("id") if isinstance(resp, dict) else None)
        key = str(rid) if rid else hashlib.sha256(orjson.dumps(o, option=orjson.OPT_SORT_KEYS)).hexdigest()
        md = {**(req.get("metadata") if isinstance(req.get("metadata"), dict) else {}),
              **(o.get("metadata") if isinstance(o.get("metadata"), dict) else {}),
              **({"consent": o["consent"]} if "consent" in o else {})}
        params = {k: v for k, v in req.items() if k not in ("messages", "user")}
        created = epoch(o.get("created_at")) or (epoch(resp.get("created")) if isinstance(resp, dict) else None)
        row = make_row(cfg, "openai-log", key, created_at=created,
                       conversation=o.get("conversation_id") or md.get("conversation_id"), user=o.get("user") or req.get("user"),
                       meta=md, model=req.get("model"), messages=msgs, params=params, out=out, status=status,
                       error=(err if isinstance(err, str) else orjson.dumps(err).decode()) if err else None,
                       latency_ms=o.get("latency_ms") if isinstance(o.get("latency_ms"), (int, float)) else None)
        rows.append(row)
        f = o.get("feedback") if isinstance(o.get("feedback"), dict) else {}
        for kind, value in f.items():
            ok = ((kind == "thumbs" and value in ("up", "down"))
                  or (kind == "rating" and isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5)
                  or (kind in ("comment", "correction") and isinstance(value, str) and value.strip()))
            if not ok:
                rejects.append(reject(loc, "invalid_feedback", kind))
                continue
            fb.append({"event_id": f"openai-log:{key}:{kind}", "interaction_id": row["id"], "created_at": row["created_at"],
                       "kind": kind, "value": value, "user_hash": row["user_hash"], "_loc": loc})
    return rows, fb, rejects


IMPORTERS: dict[str, Callable[[list[Path], ImportConfig], Result]] = {
    "langfuse": import_langfuse, "litellm": import_litellm, "otel": import_otel, "openai-log": import_openai_log}


def import_into(store, source: str, paths: list[Path], cfg: ImportConfig) -> dict:
    """Read `paths`, store what is new; counts: in = stored + already_present + rejected (each
    for interactions and feedback events), and the rejects (with reasons and file:line)."""
    rows, fb, rejects = IMPORTERS[source](paths, cfg)
    stored = {"interactions": 0, "feedback": 0}
    present = {"interactions": 0, "feedback": 0}
    seen: set[str] = set()
    for r in rows:
        if r["id"] in seen or store.has_interaction(r["id"]):
            present["interactions"] += 1
        else:
            store.add_interaction(r)
            stored["interactions"] += 1
        seen.add(r["id"])
    for e in fb:
        loc = e.pop("_loc")
        _, outcome = store.add_feedback(e)
        if outcome == "created":
            stored["feedback"] += 1
        elif outcome == "same":
            present["feedback"] += 1
        else:
            rejects.append(reject(loc, "feedback_conflict", e["event_id"]))
    reasons: dict[str, int] = {}
    for x in rejects:
        reasons[x["reason"]] = reasons.get(x["reason"], 0) + 1
    n_in = len(rows) + len(fb) + len(rejects) - reasons.get("feedback_conflict", 0)
    return {"source": source, "in": n_in, "stored": stored, "already_present": present, "rejected": len(rejects),
            "reasons": reasons, "rejects": rejects}
