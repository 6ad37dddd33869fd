"""`ptdata flywheel import` (issue 22): traces logged by Langfuse, LiteLLM, OpenTelemetry GenAI
instrumentation and plain OpenAI logs, written here in each tool's documented export shape,
imported into a real store: in = stored + already present + rejected, each reject with its reason
and file:line; a re-import stores nothing; no consent, no text; `mine` turns them into SFT records."""
from __future__ import annotations

import orjson

from ptdata.flywheel.importers import ImportConfig, import_openai_log, score_events
from ptdata.flywheel.store import Store

from .conftest import run_cli
from .test_flywheel_service import postgres_url, store_url  # noqa: F401 - the SQLite/PostgreSQL fixture

EMAIL = "alice.smith@example.com"


def jl(path, objs, bad_line: str | None = None):
    lines = [orjson.dumps(o).decode() for o in objs]
    if bad_line is not None:
        lines.insert(len(lines) // 2, bad_line)
    path.write_text("\n".join(lines) + "\n")
    return path


def run_import(files, source, url, *extra, code=0):
    r = run_cli("flywheel", "import", *map(str, files), "--from", source, "--store", url, "--json", *extra,
                env_extra={"PTDATA_FLYWHEEL_SALT": "s"})
    assert r.returncode == code and "Traceback" not in r.stderr, r.stderr[-3000:]
    return orjson.loads(r.stdout)


def rows_of(url) -> dict:
    s = Store(url)
    try:
        return {r["id"]: r for r in s.interactions()}, s.feedback_for()
    finally:
        s.close()


def by_conv_and_prompt(rows, text):
    return next(r for r in rows.values() if r["request"] and r["request"]["messages"][-1]["content"] == text)


def rejects_of(path):
    return [orjson.loads(x) for x in path.read_text().splitlines()]


# ---- Langfuse: GET /api/public/traces, /observations, /scores --------------------------------------------
def langfuse_files(d):
    traces = {"data": [
        {"id": "t1", "timestamp": "2025-03-01T10:00:00.000Z", "name": "chat", "sessionId": "sess-1", "userId": "alice",
         "input": None, "output": None, "metadata": {"consent": True}, "tags": []},
        {"id": "t2", "timestamp": "2025-03-01T11:00:00.000Z", "userId": "bob", "metadata": {}},
        {"id": "t3", "timestamp": "2025-03-01T12:00:00.000Z", "metadata": {}},
        {"id": "t4", "timestamp": "2025-03-01T13:00:00.000Z", "metadata": {}},
        {"id": "t5", "timestamp": "2025-03-01T14:00:00.000Z", "userId": "dan", "latency": 0.5,
         "input": [{"role": "user", "content": "What is 2+2?"}], "output": "4", "metadata": {}},
    ], "meta": {"page": 1, "limit": 50, "totalItems": 5, "totalPages": 1}}
    sysm = {"role": "system", "content": "You are helpful."}
    obs = {"data": [
        {"id": "g1", "traceId": "t1", "type": "GENERATION", "name": "llm", "startTime": "2025-03-01T10:00:01.000Z",
         "endTime": "2025-03-01T10:00:02.500Z", "model": "gpt-4o-mini", "modelParameters": {"temperature": 0.2},
         "input": [sysm, {"role": "user", "content": f"Hi, I am {EMAIL}. What is Python?"}],
         "output": {"role": "assistant", "content": "Python is a programming language."},
         "usageDetails": {"input": 21, "output": 7, "total": 28}, "level": "DEFAULT"},
        {"id": "g2", "traceId": "t1", "type": "GENERATION", "startTime": "2025-03-01T10:01:00.000Z",
         "endTime": "2025-03-01T10:01:01.000Z", "model": "gpt-4o-mini",
         "input": [sysm, {"role": "user", "content": f"Hi, I am {EMAIL}. What is Python?"},
                   {"role": "assistant", "content": "Python is a programming language."},
                   {"role": "user", "content": "Show me a hello world."}],
         "output": {"role": "assistant", "content": "print('hello world')"}, "usage": {"input": 40, "output": 5}},
        {"id": "g3", "traceId": "t2", "type": "GENERATION", "startTime": "2025-03-01T11:00:01.000Z", "model": "gpt-4o",
         "input": {"messages": [{"role": "user", "content": "Weather in Paris?"}]},
         "output": {"role": "assistant", "content": None, "tool_calls": [
             {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}},
        {"id": "g4", "traceId": "t3", "type": "GENERATION", "startTime": "2025-03-01T12:00:01.000Z", "model": "gpt-4o",
         "input": [{"role": "user", "content": "Summarize this."}], "output": None, "level": "ERROR",
         "statusMessage": "429 rate limited"},
        {"id": "g5", "traceId": "t4", "type": "GENERATION", "startTime": "2025-03-01T13:00:01.000Z",
         "input": "just a string prompt", "output": "some text"},
        {"id": "sp1", "traceId": "t1", "type": "SPAN", "name": "retrieval", "startTime": "2025-03-01T10:00:00.500Z"},
    ]}
    scores = [
        {"id": "sc1", "traceId": "t1", "observationId": "g1", "name": "user-feedback", "value": 1, "dataType": "BOOLEAN",
         "comment": "very clear", "timestamp": "2025-03-01T10:05:00.000Z", "source": "API"},
        {"id": "sc2", "traceId": "t1", "observationId": None, "name": "rating", "value": 5, "dataType": "NUMERIC",
         "timestamp": "2025-03-01T10:06:00.000Z", "source": "ANNOTATION"},
        {"id": "sc3", "traceId": "t2", "observationId": "g3", "name": "thumbs", "value": 0, "stringValue": "down",
         "dataType": "CATEGORICAL", "timestamp": "2025-03-01T11:05:00.000Z"},
        {"id": "sc4", "traceId": "no-such-trace", "name": "rating", "value": 4, "dataType": "NUMERIC",
         "timestamp": "2025-03-01T11:05:00.000Z"},
        {"id": "sc5", "traceId": "t5", "name": "latency-ok", "value": 0.3, "dataType": "NUMERIC",
         "timestamp": "2025-03-01T14:05:00.000Z"},
    ]
    (d / "traces.json").write_bytes(orjson.dumps(traces))
    (d / "observations.json").write_bytes(orjson.dumps(obs))
    return [d / "traces.json", d / "observations.json", jl(d / "scores.jsonl", scores, bad_line='{"id": "sc6", "traceId": ')]


def test_langfuse_import_is_idempotent_and_mines(tmp_path):
    url = f"sqlite:///{tmp_path / 'fw.sqlite'}"
    files = langfuse_files(tmp_path)
    r = run_import(files, "langfuse", url, "--model-version", "prod-1")
    assert r["stored"] == {"interactions": 5, "feedback": 4}  # g1-g4, t5 (a trace without observations); sc1 x2, sc2, sc3
    assert r["reasons"] == {"no_messages": 1, "not_a_generation": 1, "unknown_trace": 1, "unmapped_score": 1,
                            "unparseable_json": 1}
    assert r["in"] == 5 + 4 + 5 == sum(r["stored"].values()) + sum(r["already_present"].values()) + r["rejected"]
    rej = {x["reason"]: x for x in rejects_of(tmp_path / "import.rejects.jsonl")}
    assert (rej["unparseable_json"]["file"], rej["unparseable_json"]["line"]) == (str(files[2]), 3)
    assert (rej["no_messages"]["file"], rej["no_messages"]["line"]) == (str(files[1]), 5)
    assert rej["unknown_trace"]["line"] == 5 and rej["not_a_generation"]["line"] == 6

    rows, fb = rows_of(url)
    g1 = by_conv_and_prompt(rows, f"Hi, I am {EMAIL}. What is Python?")
    assert g1["conversation_id"] == "sess-1" and g1["model"] == "gpt-4o-mini" and g1["model_version"] == "prod-1"
    assert (g1["prompt_tokens"], g1["completion_tokens"], g1["latency_ms"]) == (21, 7, 1500.0)
    assert g1["response"]["choices"][0]["message"]["content"] == "Python is a programming language."
    assert g1["request"]["params"] == {"temperature": 0.2} and g1["status"] == 200 and g1["consent"] is True
    assert g1["user_hash"] and g1["user_hash"] != "alice" and len(g1["user_hash"]) == 64
    g2 = by_conv_and_prompt(rows, "Show me a hello world.")
    assert len(g2["request"]["messages"]) == 4 and g2["conversation_id"] == "sess-1" and g2["user_hash"] == g1["user_hash"]
    g3 = by_conv_and_prompt(rows, "Weather in Paris?")
    assert g3["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    g4 = by_conv_and_prompt(rows, "Summarize this.")
    assert (g4["status"], g4["error"], g4["response"]) == (500, "429 rate limited", None)
    t5 = by_conv_and_prompt(rows, "What is 2+2?")
    assert t5["response"]["choices"][0]["message"]["content"] == "4" and t5["latency_ms"] == 500.0
    kinds = sorted((e["interaction_id"], e["kind"], e["value"]) for e in fb)
    assert kinds == sorted([(g1["id"], "thumbs", "up"), (g1["id"], "comment", "very clear"),
                            (g2["id"], "rating", 5), (g3["id"], "thumbs", "down")])

    again = run_import(files, "langfuse", url)
    assert again["stored"] == {"interactions": 0, "feedback": 0}
    assert again["already_present"] == {"interactions": 5, "feedback": 4} and again["rejected"] == 5
    assert len(rows_of(url)[0]) == 5

    m = run_cli("flywheel", "mine", "--version", "d1", "--store", url, "--out", tmp_path / "data", "--eval-share", "0", "--json")
    assert m.returncode == 0, m.stderr[-2000:]
    assert orjson.loads(m.stdout)["counts"]["sft"] == 2
    sft = [orjson.loads(x) for x in (tmp_path / "data" / "d1" / "sft.jsonl").read_text().splitlines()]
    answers = sorted(rec["messages"][-1]["content"] for rec in sft)
    assert answers == ["Python is a programming language.", "print('hello world')"]
    assert EMAIL not in (tmp_path / "data" / "d1" / "sft.jsonl").read_text()  # mine scrubs imported text like proxied text


# ---- LiteLLM: LiteLLM_SpendLogs rows ---------------------------------------------------------------------
def test_litellm_spend_logs(tmp_path):
    url = f"sqlite:///{tmp_path / 'fw.sqlite'}"
    base = {"api_key": "hashed", "spend": 0.0001, "total_tokens": 0, "cache_hit": "False", "api_base": "https://api.openai.com",
            "model_group": "gpt-4o", "custom_llm_provider": "openai", "team_id": "", "request_tags": []}
    logs = [
        {**base, "request_id": "chatcmpl-a1", "call_type": "acompletion", "model": "gpt-4o", "status": "success",
         "startTime": "2025-03-02T09:00:00.000000", "endTime": "2025-03-02T09:00:00.800000", "end_user": "erin",
         "user": "default_user_id", "session_id": "ls-1", "prompt_tokens": 9, "completion_tokens": 3, "metadata": {},
         "messages": [{"role": "user", "content": "Capital of France?"}],
         "response": {"id": "chatcmpl-a1", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}},
        {**base, "request_id": "chatcmpl-a2", "call_type": "completion", "model": "gpt-4o", "status": "success",
         "startTime": "2025-03-02T09:01:00", "endTime": "2025-03-02T09:01:01", "session_id": "ls-1",
         "prompt_tokens": 20, "completion_tokens": 4, "metadata": "{}",
         "messages": orjson.dumps([{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."},
                                   {"role": "user", "content": "And of Spain?"}]).decode(),
         "response": orjson.dumps({"id": "chatcmpl-a2", "choices": [{"index": 0, "finish_reason": "stop",
                                   "message": {"role": "assistant", "content": "Madrid."}}]}).decode()},
        {**base, "request_id": "req-fail", "call_type": "acompletion", "model": "gpt-4o", "status": "failure",
         "startTime": "2025-03-02T09:02:00", "endTime": "2025-03-02T09:02:00.1", "messages": [{"role": "user", "content": "x"}],
         "response": {}, "metadata": {"error_information": {"error_code": "429", "error_class": "RateLimitError",
                                                           "error_message": "litellm.RateLimitError: slow down"}}},
        {**base, "request_id": "req-noprompt", "call_type": "acompletion", "model": "gpt-4o", "status": "success",
         "messages": {}, "response": {}, "startTime": "2025-03-02T09:03:00", "endTime": "2025-03-02T09:03:01"},
        {**base, "request_id": "req-emb", "call_type": "aembedding", "model": "text-embedding-3-small", "status": "success",
         "messages": [], "response": {}, "startTime": "2025-03-02T09:04:00", "endTime": "2025-03-02T09:04:01"},
    ]
    f = jl(tmp_path / "spend.jsonl", logs, bad_line="{not json")
    r = run_import([f], "litellm", url)
    assert r["stored"]["interactions"] == 3 and r["in"] == 6
    assert r["reasons"] == {"no_messages": 1, "not_a_chat_completion": 1, "unparseable_json": 1}
    rows, _ = rows_of(url)
    a1 = by_conv_and_prompt(rows, "Capital of France?")
    assert (a1["model"], a1["prompt_tokens"], a1["completion_tokens"], a1["conversation_id"]) == ("gpt-4o-2024-08-06", 9, 3, "ls-1")
    assert abs(a1["latency_ms"] - 800) < 1e-3 and a1["response"]["choices"][0]["message"]["content"] == "Paris."
    a2 = by_conv_and_prompt(rows, "And of Spain?")
    assert len(a2["request"]["messages"]) == 3 and a2["response"]["choices"][0]["message"]["content"] == "Madrid."
    fail = by_conv_and_prompt(rows, "x")
    assert (fail["status"], fail["error"]) == (429, "litellm.RateLimitError: slow down")
    assert run_import([f], "litellm", url)["already_present"]["interactions"] == 3


# ---- OpenTelemetry GenAI semantic conventions: OTLP JSON ---------------------------------------------------
def attr(k, v):
    if isinstance(v, bool):
        return {"key": k, "value": {"boolValue": v}}
    if isinstance(v, int):
        return {"key": k, "value": {"intValue": str(v)}}
    if isinstance(v, list):
        return {"key": k, "value": {"arrayValue": {"values": [{"stringValue": x} for x in v]}}}
    return {"key": k, "value": {"stringValue": v}}


def span(sid, attrs, events=(), status=None, name="chat gpt-4o"):
    return {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": sid, "name": name, "kind": 3,
            "startTimeUnixNano": "1741000000000000000", "endTimeUnixNano": "1741000000250000000",
            "attributes": [attr(k, v) for k, v in attrs.items()], "events": list(events), "status": status or {}}


def test_otel_genai_spans_both_message_forms(tmp_path):
    url = f"sqlite:///{tmp_path / 'fw.sqlite'}"
    chat = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o"}
    new = span("a1", {**chat, "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 11,
                      "gen_ai.usage.output_tokens": 2, "gen_ai.conversation.id": "oc-1", "gen_ai.request.temperature": "0.5",
                      "gen_ai.input.messages": orjson.dumps([{"role": "user", "parts": [{"type": "text", "content": "Ping?"}]}]).decode(),
                      "gen_ai.output.messages": orjson.dumps([{"role": "assistant", "finish_reason": "stop",
                                                               "parts": [{"type": "text", "content": "Pong."}]}]).decode()})
    old = span("a2", {**chat, "gen_ai.usage.input_tokens": 30, "gen_ai.usage.output_tokens": 6, "user.id": "frank"}, events=[
        {"timeUnixNano": "1741000000000000001", "name": "gen_ai.system.message", "attributes": [attr("content", "Be brief.")]},
        {"timeUnixNano": "1741000000000000002", "name": "gen_ai.user.message", "attributes": [attr("content", "Hi there")]},
        {"timeUnixNano": "1741000000000000003", "name": "gen_ai.assistant.message", "attributes": [attr("content", "Hello!")]},
        {"timeUnixNano": "1741000000000000004", "name": "gen_ai.user.message", "attributes": [attr("content", "Name a color")]},
        {"timeUnixNano": "1741000000000000005", "name": "gen_ai.choice", "attributes": [
            attr("index", 0), attr("finish_reason", "stop"), attr("message", '{"role":"assistant","content":"Blue."}')]}])
    failed = span("a3", {**chat, "error.type": "RateLimitError",
                         "gen_ai.input.messages": '[{"role":"user","parts":[{"type":"text","content":"Fail me"}]}]'},
                  status={"code": 2, "message": "429 Too Many Requests"})
    http = span("a4", {"http.request.method": "POST", "url.full": "https://api.openai.com/v1/chat/completions"}, name="POST")
    empty = span("a5", dict(chat))
    tool = span("a6", {**chat, "gen_ai.input.messages": '[{"role":"user","parts":[{"type":"text","content":"Weather in Oslo?"}]}]',
                       "gen_ai.output.messages": orjson.dumps([{"role": "assistant", "finish_reason": "tool_call", "parts": [
                           {"type": "tool_call", "id": "c1", "name": "get_weather", "arguments": {"city": "Oslo"}}]}]).decode()})
    doc = {"resourceSpans": [{"resource": {"attributes": [attr("service.name", "chatbot")]},
                              "scopeSpans": [{"scope": {"name": "opentelemetry.instrumentation.openai_v2"},
                                              "spans": [new, old, failed, http, empty, tool]}]}]}
    f = jl(tmp_path / "traces.jsonl", [doc, {"resourceSpans": []}], bad_line="}{")
    r = run_import([f], "otel", url)
    assert r["stored"]["interactions"] == 4 and r["in"] == 7
    assert r["reasons"] == {"not_a_chat_span": 1, "no_messages": 1, "unparseable_json": 1}
    rows, _ = rows_of(url)
    a1 = by_conv_and_prompt(rows, "Ping?")
    assert (a1["model"], a1["prompt_tokens"], a1["completion_tokens"], a1["conversation_id"]) == ("gpt-4o-2024-08-06", 11, 2, "oc-1")
    assert a1["response"]["choices"][0] == {"index": 0, "message": {"role": "assistant", "content": "Pong."}, "finish_reason": "stop"}
    assert a1["latency_ms"] == 250.0 and a1["created_at"] == 1741000000.0 and a1["request"]["params"] == {"temperature": "0.5"}
    a2 = by_conv_and_prompt(rows, "Name a color")
    assert [m["role"] for m in a2["request"]["messages"]] == ["system", "user", "assistant", "user"]
    assert a2["response"]["choices"][0]["message"]["content"] == "Blue." and a2["user_hash"]
    assert a2["conversation_id"] == "5b8efff798038103d269b633813fc60c"
    a3 = by_conv_and_prompt(rows, "Fail me")
    assert (a3["status"], a3["error"]) == (500, "429 Too Many Requests")
    a6 = by_conv_and_prompt(rows, "Weather in Oslo?")
    assert orjson.loads(a6["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}


# ---- plain OpenAI request/response logs; consent ------------------------------------------------------------
def openai_log(d):
    return jl(d / "openai.jsonl", [
        {"request": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi"}], "temperature": 0, "user": "gina"},
         "response": {"id": "chatcmpl-x1", "object": "chat.completion", "created": 1741100000, "model": "gpt-4o-mini-2024-07-18",
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}},
         "feedback": {"thumbs": "up"}},
        {"messages": [{"role": "user", "content": "Say bye"}],
         "response": {"id": "chatcmpl-x2", "created": 1741100100, "choices": [{"index": 0, "finish_reason": "stop",
                                                                               "message": {"role": "assistant", "content": "Bye!"}}]}},
        {"request": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Crash"}]}, "status": 503,
         "error": "upstream overloaded", "created_at": "2025-03-04T10:00:00Z"},
        {"request": {"model": "gpt-4o-mini"}, "response": {"id": "chatcmpl-x4", "choices": []}},
    ], bad_line='{"request": ')


def test_openai_log_and_consent(tmp_path):
    url = f"sqlite:///{tmp_path / 'fw.sqlite'}"
    f = openai_log(tmp_path)
    r = run_import([f], "openai-log", url)
    assert r["stored"] == {"interactions": 3, "feedback": 1} and r["reasons"] == {"no_messages": 1, "unparseable_json": 1}
    rows, fb = rows_of(url)
    x1 = by_conv_and_prompt(rows, "Say hi")
    assert (x1["model"], x1["prompt_tokens"], x1["created_at"]) == ("gpt-4o-mini-2024-07-18", 8, 1741100000.0)
    assert x1["request"]["params"] == {"model": "gpt-4o-mini", "temperature": 0} and x1["user_hash"]
    assert [(e["interaction_id"], e["kind"], e["value"]) for e in fb] == [(x1["id"], "thumbs", "up")]
    crash = by_conv_and_prompt(rows, "Crash")
    assert (crash["status"], crash["error"]) == (503, "upstream overloaded")

    # without consent: the proxy's rule (metadata only, no text, not even the error's)
    url2 = f"sqlite:///{tmp_path / 'nc.sqlite'}"
    r2 = run_import([f], "openai-log", url2, "--consent", "none", "--rejects", tmp_path / "nc.rejects.jsonl")
    assert r2["stored"]["interactions"] == 3 and (tmp_path / "nc.rejects.jsonl").exists()
    rows2, _ = rows_of(url2)
    assert set(rows2) == set(rows)  # the same ids: derived from the source's
    for row in rows2.values():
        assert row["consent"] is False and row["request"] is None and row["response"] is None
        assert "overloaded" not in (row["error"] or "")
    blob = orjson.dumps(list(rows2.values())).decode()
    assert "Say hi" not in blob and "Hi!" not in blob and "gina" not in blob

    bad = run_cli("flywheel", "import", str(f), "--from", "helicone", "--store", url)
    assert bad.returncode == 1 and "error" in bad.stderr and "Traceback" not in bad.stderr
    nothing = jl(tmp_path / "none.jsonl", [{"foo": 1}])
    run_import([nothing], "openai-log", url, code=4)


def test_import_into_each_store(store_url, tmp_path):  # noqa: F811 - SQLite, and PostgreSQL when there is one
    files = langfuse_files(tmp_path)
    r = run_import(files, "langfuse", store_url)
    assert r["stored"] == {"interactions": 5, "feedback": 4}
    assert run_import(files, "langfuse", store_url)["already_present"] == {"interactions": 5, "feedback": 4}


def test_score_mapping_and_score_map():
    assert score_events({"name": "user-feedback", "value": 0, "dataType": "BOOLEAN"}, {}) == ([("thumbs", "down")], None)
    assert score_events({"name": "thumbs", "value": 1, "dataType": "NUMERIC"}, {}) == ([("thumbs", "up")], None)
    assert score_events({"name": "quality-stars", "value": 4.0, "dataType": "NUMERIC"}, {}) == ([("rating", 4)], None)
    assert score_events({"name": "rating", "value": 7, "dataType": "NUMERIC"}, {}) == ([], "rating_outside_1_5")
    assert score_events({"name": "hallucination", "value": 0.2, "dataType": "NUMERIC"}, {}) == ([], "unmapped_score")
    assert score_events({"name": "hallucination", "value": 0.2, "comment": "made up a date"}, {}) == (
        [("comment", "made up a date")], None)
    assert score_events({"name": "csat", "value": 5}, {"csat": "rating"}) == ([("rating", 5)], None)
    assert score_events({"name": "fix", "value": 0, "comment": "The answer is 42."}, {"fix": "correction"}) == (
        [("correction", "The answer is 42.")], None)


def test_consent_from_a_field(tmp_path):
    f = jl(tmp_path / "c.jsonl", [
        {"messages": [{"role": "user", "content": "yes please"}], "response": "ok", "metadata": {"share": True}},
        {"messages": [{"role": "user", "content": "no thanks"}], "response": "ok", "metadata": {"share": "false"}},
        {"messages": [{"role": "user", "content": "unsaid"}], "response": "ok"}])
    rows, _, rejects = import_openai_log([f], ImportConfig(salt="s", consent="field:share"))
    assert [r["consent"] for r in rows] == [True, False, False] and not rejects
    assert rows[0]["request"]["messages"][0]["content"] == "yes please" and rows[1]["request"] is None is rows[2]["response"]
