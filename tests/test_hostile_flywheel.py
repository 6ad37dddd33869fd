"""Hostile use of the flywheel service and of mining (issue 14, items 12-21): the real proxy on
loopback in front of a real upstream, the real `ptdata flywheel ...` commands, on SQLite and on
PostgreSQL. The promise under test: every interaction a client was told about (an
`X-Interaction-Id`) is in the store, and nothing a client sends makes that fail after the
upstream has spent tokens."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
import sqlalchemy as sa

from ptdata.flywheel.server import ServiceConfig, make_app
from ptdata.flywheel.store import Store
from ptdata.llm.serve import LoopbackServer

from .conftest import load_jsonl, shared, write_jsonl
from .hostile import EXIT_ALL_REJECTED, EXIT_ERROR, EXIT_OK, digest, one_error_line, run_capped
from .test_flywheel_service import postgres_url, store_url  # noqa: F401 - the SQLite/PostgreSQL fixture

openai = pytest.importorskip("openai")
fastapi = pytest.importorskip("fastapi")
Request = fastapi.Request  # at module level: the upstream's handlers' annotations are resolved here
WRITE, ADMIN = "w-" + uuid.uuid4().hex, "a-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {WRITE}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
ENV = {"PTDATA_FLYWHEEL_WRITE_KEYS": WRITE, "PTDATA_FLYWHEEL_ADMIN_KEYS": ADMIN, "PTDATA_FLYWHEEL_KEY": WRITE}

TOOL_CALLS = [{"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
              {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}}]


# ---- a real upstream on loopback that misbehaves on request --------------------------------------------------
def _sse(d: dict) -> bytes:
    return b"data: " + orjson.dumps(d) + b"\n\n"


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    return _sse({"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def _completion(message: dict, finish: str) -> dict:
    return {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "up-model",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}


async def _tool_stream():
    """Two tool calls in fragments, as OpenAI streams them: id/type/name once, arguments in pieces."""
    yield _chunk({"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]})
    yield _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]})
    yield _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]})
    yield _chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_", "arguments": '{"tz"'}}]})
    yield _chunk({"tool_calls": [{"index": 1, "function": {"name": "time", "arguments": ': "CET"}'}}]})
    yield _chunk({}, "tool_calls")
    yield b"data: [DONE]\n\n"


async def _slow_stream(words: int = 200):
    yield _chunk({"role": "assistant", "content": ""})
    for i in range(words):
        yield _chunk({"content": f"w{i} "})
        await asyncio.sleep(0.03)
    yield _chunk({}, "stop")
    yield b"data: [DONE]\n\n"


async def _text_stream(text: str):
    yield _chunk({"role": "assistant", "content": ""})
    for w in text.split(" "):
        yield _chunk({"content": w + " "})
    yield _chunk({}, "stop")
    yield b"data: [DONE]\n\n"


def hostile_upstream():
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI()
    app.state.calls = 0

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "up-model", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        app.state.calls += 1
        body = orjson.loads(await request.body())
        last = body["messages"][-1].get("content") or ""
        stream = body.get("stream") is True
        sse = "text/event-stream"
        if last.startswith("echo-error"):  # an error that repeats the prompt
            return JSONResponse({"error": {"message": f"cannot answer {last!r}"}}, status_code=400)
        if last.startswith("rate-limit"):
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429,
                                headers={"Retry-After": "7", "x-ratelimit-remaining-requests": "0"})
        if last.startswith("tools"):
            if stream:
                return StreamingResponse(_tool_stream(), media_type=sse, headers={"x-request-id": "req-tools"})
            return JSONResponse(_completion({"role": "assistant", "content": None, "tool_calls": TOOL_CALLS}, "tool_calls"))
        if last.startswith("slow"):
            return StreamingResponse(_slow_stream(), media_type=sse)
        if last.startswith("odd-upstream"):  # values no column was made for
            return JSONResponse({"model": "M" * 500, "choices": [{"message": {"role": "assistant", "content": "a\u0000b"},
                                                                 "finish_reason": {"why": "x" * 100}}],
                                 "usage": {"prompt_tokens": 10**12, "completion_tokens": "many"}})
        text = f"echo: {last}"
        if stream:
            return StreamingResponse(_text_stream(text), media_type=sse, headers={"x-request-id": "req-stream"})
        return JSONResponse(_completion({"role": "assistant", "content": text}, "stop"), headers={"x-request-id": "req-1"})

    return app


@pytest.fixture(scope="module")
def upstream():
    app = hostile_upstream()
    with LoopbackServer(app) as srv:
        yield srv, app


@contextlib.contextmanager
def proxy(upstream_url: str, url: str, **kw):
    cfg = ServiceConfig(upstream=upstream_url, store_url=url, write_keys=[WRITE], admin_keys=[ADMIN],
                        model_version="v1", timeout=10, **kw)
    asgi, app = make_app(cfg)
    with LoopbackServer(asgi) as srv:
        yield srv.base_url, app.state.store
    app.state.store.close()


@pytest.fixture
def service(upstream, store_url):  # noqa: F811
    srv, app = upstream
    with proxy(srv.base_url, store_url, body_timeout=1.0) as (base, store):
        yield base, store, app


def chat(base: str, content, headers: dict | None = None, **body) -> httpx.Response:
    msgs = content if isinstance(content, list) else [{"role": "user", "content": content}]
    return httpx.post(base + "/chat/completions", json={"model": "m", "messages": msgs, **body},
                      headers={**AUTH, **(headers or {})}, timeout=20)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_process(upstream_url: str, store: str, *args: str):
    """`ptdata flywheel serve` as a real process; yields (base URL, process)."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", "from ptdata.cli import main; main()", "flywheel", "serve",
                             "--upstream", upstream_url, "--store", store, "--port", str(port), *args],
                            env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(400):
            try:
                httpx.get(base + "/models", headers=AUTH)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.05)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(15)


def wait_for(fn, seconds: float = 10.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    return fn()


# ---- 12: a stream the client cuts is stored -------------------------------------------------------------
def test_stream_cut_by_client_is_stored_with_partial_answer(service):
    base, store, up = service
    with httpx.Client(timeout=20) as c:
        with c.stream("POST", base + "/chat/completions", headers=AUTH,
                      json={"model": "m", "messages": [{"role": "user", "content": "slow please"}], "stream": True}) as r:
            assert r.status_code == 200
            iid = r.headers["x-interaction-id"]
            got = []
            for line in r.iter_lines():
                if line.startswith("data:"):
                    got.append(orjson.loads(line[5:]))
                if len(got) == 6:
                    break
    seen = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in got)
    row = wait_for(lambda: store.interaction(iid))
    assert row is not None, "the cut stream was not stored"
    assert row["finish_reason"] == "client_disconnected" and row["status"] == 200 and row["stream"]
    stored = row["response"]["choices"][0]["message"]["content"]
    assert stored.startswith(seen) and len(stored.split()) < 200  # what came before the cut, not the whole answer
    fb = httpx.post(base + "/feedback", json={"interaction_id": iid, "kind": "thumbs", "value": "down"}, headers=AUTH)
    assert fb.status_code == 201


# ---- 13: client input is validated before the upstream is called -----------------------------------------
def test_bad_client_input_is_422_before_any_token_is_spent(service):
    base, store, up = service
    calls = up.state.calls
    long = "x" * 201
    cases = [
        chat(base, "hi", {"X-PTData-Conversation": long}),
        chat(base, "hi", {"X-PTData-Model-Version": long}),
        chat(base, "hi", {"X-PTData-User": long}),
        chat(base, "hi", model=long),
        chat(base, "hi", model={"name": "m"}),
        chat(base, "hi", model="m\u0000"),
        chat(base, "hi", metadata={"conversation_id": long}),
        chat(base, "hi", user=["alice"]),
        chat(base, "hi", stream="false"),
        chat(base, "hi", stream=1),
        httpx.post(base + "/chat/completions", headers={**AUTH, "Content-Type": "application/json"}, timeout=20,
                   content=b'{"model": "m", "messages": [{"role": "user", "content": "hi", "x": ' + b"[" * 1000 + b"]" * 1000
                   + b"}]}"),
    ]
    for r in cases:
        assert r.status_code == 422, (r.status_code, r.text)
        assert r.json()["error"]["type"] == "invalid" and "x-interaction-id" not in r.headers
    assert up.state.calls == calls, "the upstream was called for a request the proxy refused"
    assert store.counts()["interactions"] == 0


def test_nul_in_content_is_stored_on_both_databases(service):
    base, store, _ = service
    msgs = [{"role": "system", "content": "a\u0000b"}, {"role": "user", "content": "nul \u0000 inside"}]
    for stream in (False, True):
        r = chat(base, msgs, {"X-PTData-Conversation": "c" * 200}, stream=stream, model="m" * 200)
        assert r.status_code == 200, r.text
        row = store.interaction(r.headers["x-interaction-id"])
        assert row["request"]["messages"] == msgs and row["conversation_id"] == "c" * 200
        assert row["response"]["choices"][0]["message"]["content"].startswith("echo: nul \u0000 inside")


def test_store_failure_is_503_and_the_log_has_no_prompt_text(upstream, store_url, tmp_path):  # noqa: F811
    """An insert the database refuses: the client gets a JSON 503 (a stream: an error event, no
    [DONE]), and the server's log names the failure without the statement's parameters."""
    srv, _ = upstream
    Store(store_url).close()  # migrations applied
    eng = sa.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://") if "://" in store_url else store_url)
    with eng.begin() as c:
        if eng.dialect.name == "sqlite":
            c.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON interactions BEGIN SELECT RAISE(ABORT, 'refused'); END")
        else:
            c.exec_driver_sql("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$ "
                              "LANGUAGE plpgsql")
            c.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON interactions FOR EACH ROW EXECUTE FUNCTION refuse()")
    eng.dispose()
    secret = "SECRET-PROMPT-" + uuid.uuid4().hex
    with serve_process(srv.base_url, store_url) as (base, proc):
        r = chat(base, secret)
        assert r.status_code == 503 and r.json()["error"]["type"] == "store_error"
        s = chat(base, secret, stream=True)
        assert s.status_code == 200 and "store_error" in s.text and "[DONE]" not in s.text
        proc.terminate()
        _, errs = proc.communicate(timeout=15)
    assert "not stored" in errs and secret not in errs and "Traceback" not in errs


# ---- 14: version names are names, not paths -------------------------------------------------------------
def _simulated_store(store_url: str, tmp_path: Path, rows: int = 60, start: int = 0, version: str = "model-v1") -> None:  # noqa: F811
    from ptdata.flywheel.simulate import simulate

    src = tmp_path / "alpaca.jsonl"
    if not src.exists():
        write_jsonl(src, [r for r in load_jsonl(shared("alpaca_en_52k.jsonl.gz"))[:400] if r["output"].strip()])
    simulate(src, store_url, version, limit=rows, start=start)


def test_version_names_cannot_escape_or_overwrite(store_url, tmp_path):  # noqa: F811
    _simulated_store(store_url, tmp_path, rows=30)
    out = tmp_path / "data"
    r = run_capped("flywheel", "mine", "--version", "v1", "--store", store_url, "--out", out)
    assert r.returncode == EXIT_OK, r.stderr
    v1 = digest(*sorted((out / "v1").iterdir()))
    around = lambda: sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("fw.sqlite"))  # noqa: E731
    before = around()
    (out / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    _simulated_store(store_url, tmp_path, rows=10, start=30)
    for bad in ("zz/../v1", "../../x", "", ".", "..", "a/b", "-v", "x" * 65, "elsewhere"):
        r = run_capped("flywheel", "mine", "--version", bad, "--store", store_url, "--out", out)
        assert r.returncode == EXIT_ERROR, (bad, r.stderr)
        one_error_line(r.stderr, "--version" if bad != "elsewhere" else "elsewhere")
    assert digest(*sorted((out / "v1").iterdir())) == v1
    assert around() == before
    assert sorted(p.name for p in out.iterdir()) == ["elsewhere", "v1"]
    r = run_capped("flywheel", "versions", "--store", store_url)
    assert [line.split()[0] for line in r.stdout.splitlines()] == ["v1"]


# ---- 15: concurrent mining takes turns -------------------------------------------------------------------
def _mine_all(names: list[str], store_url: str, out: Path) -> list[subprocess.CompletedProcess]:  # noqa: F811
    procs = [subprocess.Popen([sys.executable, "-c", "from ptdata.cli import main; main()", "flywheel", "mine",
                               "--version", n, "--store", store_url, "--out", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in names]
    return [subprocess.CompletedProcess(p.args, p.wait(120), *p.communicate()) for p in procs]


def test_concurrent_mine_runs_take_turns(store_url, tmp_path):  # noqa: F811
    from ptdata.flywheel.mine import list_versions

    _simulated_store(store_url, tmp_path, rows=120)
    out = tmp_path / "data"
    runs = _mine_all(["a", "b", "c"], store_url, out)
    for r in runs:
        assert "Traceback" not in r.stderr and r.returncode in (EXIT_OK, EXIT_ALL_REJECTED), r.stderr
    assert sorted(r.returncode for r in runs) == [EXIT_OK, EXIT_ALL_REJECTED, EXIT_ALL_REJECTED]
    first = [n for n, r in zip("abc", runs) if r.returncode == EXIT_OK][0]
    _simulated_store(store_url, tmp_path, rows=40, start=120)
    runs = _mine_all(["d", "e"], store_url, out)
    assert sorted(r.returncode for r in runs) == [EXIT_OK, EXIT_ALL_REJECTED], [r.stderr for r in runs]
    second = [n for n, r in zip("de", runs) if r.returncode == EXIT_OK][0]
    store = Store(store_url)
    vs = list_versions(store)
    assert [(v["name"], v["parent"]) for v in vs] == [(first, None), (second, first)]
    assert vs[0]["counts"]["interactions"] == 120 and vs[1]["counts"]["interactions"] == 40
    with store.engine.connect() as c:
        keys = [r[0] for r in c.execute(sa.text("select content_key from version_records"))]
    assert len(keys) == len(set(keys)) > 0
    assert sorted(p.name for p in out.iterdir()) == sorted([first, second])  # no half-written or temporary folder
    store.close()


# ---- 16: streamed tool calls are stored ------------------------------------------------------------------
def test_streamed_tool_calls_are_stored(service):
    base, store, _ = service
    client = openai.OpenAI(base_url=base, api_key=WRITE, max_retries=0, timeout=10)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    msgs = [{"role": "user", "content": "tools: weather and time"}]
    with client.chat.completions.stream(model="m", messages=msgs, tools=tools) as s:
        final = s.get_final_completion()
    sdk_calls = [{"id": t.id, "type": t.type, "function": {"name": t.function.name, "arguments": t.function.arguments}}
                 for t in final.choices[0].message.tool_calls]
    assert sdk_calls == TOOL_CALLS
    iid = final.model_extra["interaction_id"]
    row = store.interaction(iid)
    assert row["finish_reason"] == "tool_calls" and row["stream"]
    assert row["response"]["choices"][0]["message"]["tool_calls"] == TOOL_CALLS
    plain = client.chat.completions.create(model="m", messages=msgs, tools=tools)
    prow = store.interaction(plain.model_extra["interaction_id"])
    assert prow["response"]["choices"][0]["message"]["tool_calls"] == row["response"]["choices"][0]["message"]["tool_calls"]


# ---- 17: stored XSS -------------------------------------------------------------------------------------
XSS = "<script>alert(1)</script>"


def test_every_html_report_escapes_user_values(upstream, store_url, tmp_path):  # noqa: F811
    srv, _ = upstream
    with proxy(srv.base_url, store_url) as (base, store):
        iid = chat(base, XSS, {"X-PTData-Model-Version": XSS, "X-PTData-Conversation": XSS}, model=XSS).headers["x-interaction-id"]
        assert httpx.post(base + "/feedback", json={"interaction_id": iid, "kind": "correction", "value": f"fixed {XSS}"},
                          headers=AUTH).status_code == 201
    # --eval-share 0: the one interaction must be mined, not held out for evaluation
    r = run_capped("flywheel", "mine", "--version", "v1", "--store", store_url, "--out", tmp_path / "data", "--eval-share", "0")
    assert r.returncode == EXIT_OK, r.stderr
    reports = [tmp_path / "flywheel.html"]
    r = run_capped("flywheel", "report", "--store", store_url, "--out", reports[0])
    assert r.returncode == EXIT_OK, r.stderr
    assert "&lt;script&gt;" in reports[0].read_text()
    # the curation report: recipe name, a benchmark item, record text
    data = write_jsonl(tmp_path / "in.jsonl", [{"instruction": f"{XSS} explain the weather in the city today please now",
                                                "input": "", "output": f"It is sunny {XSS} and warm in the city today."}])
    bench = write_jsonl(tmp_path / "bench.jsonl", [{"question": f"{XSS} explain the weather in the city today please now",
                                                    "answer": "x"}])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: '{XSS}'\ninputs: [{{path: '{data}'}}]\nops:\n  - decontaminate: {{benchmarks: ['{bench}']}}\n"
                      f"output: {{dir: '{tmp_path / 'cur'}'}}\n")
    r = run_capped("run", recipe)
    assert r.returncode in (EXIT_OK, EXIT_ALL_REJECTED), r.stderr
    reports.append(tmp_path / "cur" / "report.html")
    # the distillation report
    samples = write_jsonl(tmp_path / "samples.jsonl", [{"prompt": f"{XSS} what is 2+2?", "reference": "4",
                                                        "samples": [{"text": f"{XSS} #### 4"}] * 3}])
    r = run_capped("distill", samples, "-o", tmp_path / "dist", "--offline", "-q")
    assert r.returncode in (EXIT_OK, EXIT_ALL_REJECTED), r.stderr
    reports.append(tmp_path / "dist" / "calibration.html")
    for rep in reports:
        text = rep.read_text()
        assert "<script" not in text.lower(), rep


# ---- 18: privacy ---------------------------------------------------------------------------------------
def test_user_ids_are_salted_hashes_only(upstream, store_url):  # noqa: F811
    srv, _ = upstream
    with proxy(srv.base_url, store_url) as (base, store):
        iid = chat(base, "hi", user="alice@example.com").headers["x-interaction-id"]
        row = store.interaction(iid)
        salt = store.salt()
    assert "user" not in row["request"]["params"] and "alice" not in orjson.dumps(row).decode()
    assert len(salt) == 64 and row["user_hash"] != hashlib.sha256(b"\0alice@example.com").hexdigest()
    assert row["user_hash"] == hashlib.sha256((salt + "\0alice@example.com").encode()).hexdigest()
    with proxy(srv.base_url, store_url) as (base, store):  # a restart keeps the salt: hashes stay comparable
        iid2 = chat(base, "again", user="alice@example.com").headers["x-interaction-id"]
        assert store.interaction(iid2)["user_hash"] == row["user_hash"] and store.salt() == salt


def test_no_consent_keeps_no_echoed_prompt_in_errors(service):
    base, store, _ = service
    secret = "echo-error my secret diagnosis"
    r = chat(base, secret, {"X-PTData-Consent": "false"})
    assert r.status_code == 400 and secret in r.text  # the client still sees the upstream's answer
    row = store.interaction(r.headers["x-interaction-id"])
    assert row["request"] is None and row["response"] is None and "secret" not in (row["error"] or "")
    assert row["status"] == 400
    r = chat(base, secret)  # with consent the error is kept
    assert secret in store.interaction(r.headers["x-interaction-id"])["error"]


def test_mine_pii_reject_writes_no_pii_into_rejects(upstream, store_url, tmp_path):  # noqa: F811
    srv, _ = upstream
    with proxy(srv.base_url, store_url) as (base, _store):
        for i in range(3):
            iid = chat(base, f"mail me at jane.doe{i}@example.com or call 415-555-01{i:02d}").headers["x-interaction-id"]
            assert httpx.post(base + "/feedback", json={"interaction_id": iid, "kind": "thumbs", "value": "up"},
                              headers=AUTH).status_code == 201
    r = run_capped("flywheel", "mine", "--version", "v1", "--store", store_url, "--out", tmp_path / "d", "--pii", "reject",
                   "--eval-share", "0")  # nothing held out for evaluation: every interaction is mined
    assert r.returncode == EXIT_ALL_REJECTED, r.stderr  # every record had PII: nothing new
    # and with other records beside them the version's rejects carry the records redacted
    with proxy(srv.base_url, store_url) as (base, _store):
        iid = chat(base, "a question without personal data").headers["x-interaction-id"]
        httpx.post(base + "/feedback", json={"interaction_id": iid, "kind": "thumbs", "value": "up"}, headers=AUTH)
    r = run_capped("flywheel", "mine", "--version", "v1", "--store", store_url, "--out", tmp_path / "d", "--pii", "reject",
                   "--since", "0", "--eval-share", "0")
    assert r.returncode == EXIT_OK, r.stderr
    text = (tmp_path / "d" / "v1" / "rejects.jsonl").read_text()
    assert "example.com" not in text and "415-555" not in text and text.count("[EMAIL]") >= 3
    assert [x["reason"] for x in map(orjson.loads, text.splitlines()) if x.get("op") == "pii"] == ["pii"] * 3


# ---- 19: feedback bodies and mined records are validated -------------------------------------------------
def test_blank_feedback_is_refused_and_mined_records_are_valid(service, tmp_path):
    base, store, _ = service
    ok = chat(base, "what is 2+2?").headers["x-interaction-id"]
    blank = chat(base, [{"role": "user", "content": "   "}]).headers["x-interaction-id"]
    url = base + "/feedback"
    for value in ("   ", "\n\t ", ""):
        for kind in ("correction", "comment"):
            assert httpx.post(url, json={"interaction_id": ok, "kind": kind, "value": value}, headers=AUTH).status_code == 422
    for iid in (ok, blank):
        assert httpx.post(url, json={"interaction_id": iid, "kind": "thumbs", "value": "up"}, headers=AUTH).status_code == 201
    from ptdata.flywheel.mine import MineConfig, mine

    m = mine(store, "v1", tmp_path / "d", cfg=MineConfig(eval_share=0))  # both mined, none held out for evaluation
    assert m["counts"]["sft"] == 1 and m["counts"]["dropped_records"] == {"empty_turn": 1}
    rejects = load_jsonl(tmp_path / "d" / "v1" / "rejects.jsonl")
    assert [(x["op"], x["reason"], x["interaction_ids"]) for x in rejects if x.get("op") == "validate"] == \
        [("validate", "empty_turn", [blank])]
    r = run_capped("validate", tmp_path / "d" / "v1" / "sft.jsonl", cwd=tmp_path)
    assert r.returncode == EXIT_OK, r.stderr


# ---- 21: the smaller ones ------------------------------------------------------------------------------
def test_mine_refuses_non_finite_times(store_url, tmp_path):  # noqa: F811
    _simulated_store(store_url, tmp_path, rows=10)
    for opt, value in (("--since", "nan"), ("--since", "inf"), ("--until", "nan"), ("--since", "-inf"), ("--until", "NaN")):
        r = run_capped("flywheel", "mine", "--version", "v1", "--store", store_url, "--out", tmp_path / "d", opt, value)
        assert r.returncode == EXIT_ERROR, r.stderr
        one_error_line(r.stderr, opt, "finite")
    assert not (tmp_path / "d").exists()


def test_upstream_headers_utf8_labels_and_stream_flag(service):
    base, store, _ = service
    r = chat(base, "rate-limit me")
    assert r.status_code == 429 and r.headers["retry-after"] == "7" and r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.headers.get("x-interaction-id")
    label = "modèle-β ✓"
    r = httpx.post(base + "/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                   headers=[("Authorization", f"Bearer {WRITE}"), ("X-PTData-Model-Version", label.encode()),
                            ("X-PTData-Conversation", "gespräch-1".encode())], timeout=20)
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-1"
    row = store.interaction(r.headers["x-interaction-id"])
    assert row["model_version"] == label and row["conversation_id"] == "gespräch-1"
    r = httpx.post(base + "/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                   headers=[("Authorization", f"Bearer {WRITE}"), ("X-PTData-Model-Version", b"\xff\xfe")], timeout=20)
    assert r.status_code == 422
    r = chat(base, "hi", stream=False)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: hi"
    assert store.interaction(r.headers["x-interaction-id"])["stream"] is False
    r = chat(base, "hi", stream=True)
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-stream" and r.text.rstrip().endswith("[DONE]")


def test_feedback_replays_conflicts_and_unknown_ids(service):
    base, store, _ = service
    a = chat(base, "one").headers["x-interaction-id"]
    b = chat(base, "two").headers["x-interaction-id"]
    url = base + "/feedback"
    ev = {"interaction_id": a, "event_id": "e1", "kind": "rating", "value": 4}
    assert httpx.post(url, json=ev, headers=AUTH).status_code == 201
    assert httpx.post(url, json=ev, headers=AUTH).json() == {"event_id": "e1", "created": False}
    for other in ({**ev, "value": 1}, {**ev, "interaction_id": b}, {**ev, "kind": "thumbs", "value": "up"}):
        r = httpx.post(url, json=other, headers=AUTH)
        assert r.status_code == 409 and r.json()["error"]["type"] == "conflict"
    assert httpx.post(url, json={"interaction_id": a, "kind": "regenerate", "value": "0" * 32}, headers=AUTH).status_code == 404
    assert httpx.post(url, json={"interaction_id": a, "kind": "regenerate", "value": a}, headers=AUTH).status_code == 422
    assert httpx.post(url, json={"interaction_id": a, "kind": "regenerate", "value": b}, headers=AUTH).status_code == 201
    assert httpx.post(url, json={"interaction_id": "a\u0000", "kind": "thumbs", "value": "up"}, headers=AUTH).status_code == 422
    assert httpx.post(url, json={**ev, "event_id": "e\u0000"}, headers=AUTH).status_code == 422
    assert httpx.get(base + "/interactions/a%00b", headers=ADMIN_AUTH).status_code == 404
    assert [(f["event_id"], f["value"]) for f in store.feedback_for([a])][0] == ("e1", 4)


def _raw_request(port: int, head: bytes, body: bytes = b"", wait: float = 5.0) -> tuple[bytes, float]:
    """Send a request by hand (headers, maybe part of a body) and read the answer."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(head + body)
        data = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := s.recv(65536):
                data += chunk
                if b"\r\n\r\n" in data and b'"error"' in data:
                    break
    return data, time.perf_counter() - t0


def test_slow_and_unauthenticated_bodies_are_cut(service):
    base, store, _ = service
    port = int(base.split(":")[2].split("/")[0])
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n")
    data, took = _raw_request(port, head + b"\r\n", b'{"messages": [')
    assert data.startswith(b"HTTP/1.1 401") and took < 2, (data, took)  # no key: refused before the body is read
    data, took = _raw_request(port, head + f"Authorization: Bearer {WRITE}\r\n\r\n".encode(), b'{"messages": [')
    assert data.startswith(b"HTTP/1.1 408") and took < 4, (data, took)  # a key, but a body that never comes
    assert store.counts()["interactions"] == 0


def test_cli_feedback_bad_url_and_serve_port_in_use(upstream, tmp_path):
    srv, _ = upstream
    for url in ("notaurl", "ftp://x/v1", "http://"):
        r = run_capped("flywheel", "feedback", "abc", "--url", url, "--thumbs", "up", env_extra=ENV)
        assert r.returncode == EXIT_ERROR
        one_error_line(r.stderr, "--url")
    r = run_capped("flywheel", "feedback", "abc", "--url", f"http://127.0.0.1:{_free_port()}/v1", "--thumbs", "up",
                   env_extra=ENV)
    assert r.returncode == EXIT_ERROR
    one_error_line(r.stderr, "feedback not recorded")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        db = tmp_path / "fw.sqlite"
        r = run_capped("flywheel", "serve", "--upstream", srv.base_url, "--store", db, "--port", str(port), env_extra=ENV,
                       timeout=60)
    assert r.returncode == EXIT_ERROR
    one_error_line(r.stderr, f"--port {port}")
    assert not db.exists()  # refused before anything was written


# ---- the acceptance: every acknowledged interaction is stored ---------------------------------------------
def test_every_acknowledged_interaction_is_stored(service):
    base, store, up = service
    acknowledged, refused = [], 0
    nested = b'{"model": "m", "messages": [{"role": "user", "content": "x", "y": ' + b"[" * 900 + b"]" * 900 + b"}]}"
    attempts = [
        lambda: chat(base, "plain"), lambda: chat(base, "plain", stream=True), lambda: chat(base, "tools", stream=True),
        lambda: chat(base, "nul \u0000", stream=True), lambda: chat(base, "echo-error x"), lambda: chat(base, "rate-limit"),
        lambda: chat(base, "odd-upstream"),
        lambda: chat(base, "hi", {"X-PTData-Model-Version": ("é" * 200).encode()}), lambda: chat(base, "hi", model="m" * 200),
        lambda: chat(base, "hi", {"X-PTData-Conversation": "c" * 201}), lambda: chat(base, "hi", model=[1]),
        lambda: chat(base, "hi", stream="true"),
        lambda: httpx.post(base + "/chat/completions", content=nested, headers={**AUTH, "Content-Type": "application/json"}),
    ]
    for attempt in attempts:
        r = attempt()
        if "x-interaction-id" in r.headers:
            acknowledged.append(r.headers["x-interaction-id"])
        else:
            assert r.status_code == 422
            refused += 1
    assert len(acknowledged) == 9 and refused == 4
    assert wait_for(lambda: all(store.interaction(i) for i in acknowledged))
    assert {r["id"] for r in store.interactions()} == set(acknowledged)


def test_a_store_from_before_migration_3_takes_nul_after_upgrade(upstream, store_url):  # noqa: F811
    """A store made by the previous ptdata (jsonb columns on PostgreSQL, no settings table) is
    upgraded in place on open, keeps its rows, and then stores content with NUL."""
    from ptdata.flywheel.store import JSON_COLUMNS

    srv, _ = upstream
    with proxy(srv.base_url, store_url) as (base, store):
        old = chat(base, "from before").headers["x-interaction-id"]
    s = Store(store_url)
    with s.engine.begin() as c:  # back to the schema of migration 2
        c.execute(sa.text("DELETE FROM schema_migrations WHERE version = 3"))
        c.execute(sa.text("DROP TABLE settings"))
        if s.engine.dialect.name == "postgresql":
            for table, cols in JSON_COLUMNS.items():
                for col in cols:
                    c.execute(sa.text(f"ALTER TABLE {table} ALTER COLUMN {col} TYPE jsonb USING {col}::jsonb"))
    s.close()
    with proxy(srv.base_url, store_url) as (base, store):
        assert store.schema_version() == 5
        r = chat(base, "after \u0000 upgrade")
        assert r.status_code == 200
        assert store.interaction(r.headers["x-interaction-id"])["request"]["messages"][0]["content"] == "after \u0000 upgrade"
        assert store.interaction(old)["request"]["messages"][0]["content"] == "from before"
