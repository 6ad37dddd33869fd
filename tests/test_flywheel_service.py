"""The flywheel proxy and feedback API against a real upstream on loopback, with the official
openai SDK as the client, on SQLite and on PostgreSQL (the same tests on both)."""
from __future__ import annotations

import os
import uuid

import orjson
import pytest
import sqlalchemy as sa

from ptdata.flywheel.server import ServiceConfig, make_app
from ptdata.flywheel.store import Store
from ptdata.llm.serve import Fault, LoopbackServer, make_app as make_upstream

from .llm_helpers import scripted

WRITE, ADMIN = "w-" + uuid.uuid4().hex, "a-" + uuid.uuid4().hex
openai = pytest.importorskip("openai")


def answer(user: str, req) -> list[str]:
    return [f"Answer {k} to «{user}»: ünïcode ✓, quotes \" and \\ slashes" for k in range(req.sampling.n)]


@pytest.fixture(scope="module")
def upstream():
    app = make_upstream(scripted(answer), model_name="upstream-model",
                        faults=[Fault("500", match="please fail", times=99), Fault("hang", match="please hang", times=99, hang_s=5)])
    with LoopbackServer(app) as srv:
        yield srv, app


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fw.sqlite'}"
        return
    base = postgres_url()
    if not base:
        pytest.skip("no PostgreSQL: set PTDATA_TEST_PG_URL, or install postgresql (scripts/start_postgres.sh)")
    name = "fw_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(base.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f"CREATE DATABASE {name}"))
    yield base.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as c:
        c.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def service(upstream, store_url):
    srv, _ = upstream
    cfg = ServiceConfig(upstream=srv.base_url, store_url=store_url, write_keys=[WRITE], admin_keys=[ADMIN],
                        model_version="v1", timeout=1.0, max_body_bytes=64 * 1024, user_salt="salt")
    asgi, app = make_app(cfg)
    with LoopbackServer(asgi) as proxy:
        yield proxy, app.state.store, app
    app.state.store.close()


def postgres_url() -> str | None:
    """PTDATA_TEST_PG_URL, or a throwaway server started by scripts/start_postgres.sh when
    PostgreSQL is installed (.ci/run installs it)."""
    import glob
    import subprocess

    url = os.environ.get("PTDATA_TEST_PG_URL")
    if url or not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return url
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "start_postgres.sh")
    r = subprocess.run(["bash", script], capture_output=True, text=True, timeout=120)
    if r.returncode == 0:
        os.environ["PTDATA_TEST_PG_URL"] = r.stdout.strip()
    return os.environ.get("PTDATA_TEST_PG_URL")


def client(base_url: str, key: str = WRITE):
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=10)


MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Wie spät ist es? 🙂"}]


def test_sdk_calls_match_upstream_and_are_stored_once(upstream, service):
    srv, _ = upstream
    proxy, store, _ = service
    direct, via = client(srv.base_url), client(proxy.base_url)
    d = direct.chat.completions.create(model="m", messages=MSGS, n=2)
    raw = via.chat.completions.with_raw_response.create(model="m", messages=MSGS, n=2, user="alice",
                                                        extra_headers={"X-PTData-Conversation": "conv-1"})
    p = raw.parse()
    assert [c.message.content for c in p.choices] == [c.message.content for c in d.choices]
    iid = raw.headers["x-interaction-id"]
    assert p.model_extra["interaction_id"] == iid and len(iid) == 32
    # streaming: the same text, chunk by chunk, and the id in every chunk
    ds = "".join(c.choices[0].delta.content or "" for c in direct.chat.completions.create(model="m", messages=MSGS, stream=True)
                 if c.choices)
    chunks = list(via.chat.completions.create(model="m", messages=MSGS, stream=True))
    vs = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert vs == ds == answer(MSGS[-1]["content"], type("R", (), {"sampling": type("S", (), {"n": 1})})())[0]
    sid = {c.model_extra["interaction_id"] for c in chunks}
    assert len(sid) == 1
    rows = list(store.interactions())
    assert len(rows) == 2 and {r["id"] for r in rows} == {iid, sid.pop()}
    r = store.interaction(iid)
    assert r["conversation_id"] == "conv-1" and r["model"] == "upstream-model" and r["model_version"] == "v1"
    assert r["user_hash"] != "alice" and len(r["user_hash"]) == 64
    assert r["request"]["messages"] == MSGS and r["request"]["params"]["n"] == 2
    assert [c["message"]["content"] for c in r["response"]["choices"]] == [c.message.content for c in d.choices]
    assert r["status"] == 200 and r["finish_reason"] == "stop" and r["latency_ms"] > 0 and r["completion_tokens"] > 0
    s = [x for x in rows if x["stream"]][0]
    assert s["response"]["choices"][0]["message"]["content"] == ds
    models = via.models.list()
    assert [m.id for m in models.data] == ["upstream-model"]


def test_upstream_errors_pass_through_and_are_logged(upstream, service):
    proxy, store, _ = service
    via = client(proxy.base_url)
    with pytest.raises(openai.InternalServerError) as e:
        via.chat.completions.create(model="m", messages=[{"role": "user", "content": "please fail"}])
    assert e.value.status_code == 500 and "injected server error" in str(e.value)
    with pytest.raises(openai.APIStatusError) as e:
        via.chat.completions.create(model="m", messages=[{"role": "user", "content": "please hang"}])
    assert e.value.status_code == 504
    rows = sorted(store.interactions(), key=lambda r: r["status"])
    assert [r["status"] for r in rows] == [500, 504]
    assert "injected server error" in rows[0]["error"] and "timeout" in rows[1]["error"]


def test_feedback_is_validated_and_idempotent(service):
    import httpx

    proxy, store, app = service
    via = client(proxy.base_url)
    a = via.chat.completions.with_raw_response.create(model="m", messages=MSGS).headers["x-interaction-id"]
    b = via.chat.completions.with_raw_response.create(model="m", messages=MSGS).headers["x-interaction-id"]
    url = proxy.base_url + "/feedback"
    h = {"Authorization": f"Bearer {WRITE}"}
    events = [
        {"interaction_id": a, "event_id": "e1", "kind": "thumbs", "value": "up"},
        {"interaction_id": a, "event_id": "e2", "kind": "rating", "value": 4},
        {"interaction_id": a, "event_id": "e3", "kind": "correction", "value": "It is noon."},
        {"interaction_id": a, "event_id": "e4", "kind": "comment", "value": "ok"},
        {"interaction_id": b, "event_id": "e5", "kind": "regenerate", "value": a},
        {"interaction_id": b, "event_id": "e6", "kind": "choice", "value": {"chosen": b, "rejected": a}},
    ]
    assert [httpx.post(url, json=e, headers=h).status_code for e in events] == [201] * 6
    again = httpx.post(url, json=events[0], headers=h)
    assert again.status_code == 200 and again.json() == {"event_id": "e1", "created": False}
    bad = [{"interaction_id": a, "kind": "thumbs", "value": "sideways"},
           {"interaction_id": a, "kind": "rating", "value": 6},
           {"interaction_id": a, "kind": "rating", "value": True},
           {"interaction_id": a, "kind": "choice", "value": {"chosen": a, "rejected": a}},
           {"interaction_id": a, "kind": "vote", "value": 1},
           {"interaction_id": a, "kind": "comment", "value": "x", "extra": 1}]
    assert [httpx.post(url, json=e, headers=h).status_code for e in bad] == [422] * 6
    assert httpx.post(url, json={"interaction_id": "nope", "kind": "thumbs", "value": "up"}, headers=h).status_code == 404
    fb = store.feedback_for()
    assert [f["event_id"] for f in fb] == ["e1", "e2", "e3", "e4", "e5", "e6"]
    got = httpx.get(proxy.base_url + f"/interactions/{a}", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert [f["kind"] for f in got["feedback"]] == ["thumbs", "rating", "correction", "comment"]


def test_keys_sizes_and_bodies_are_checked_and_counted(service):
    import httpx

    proxy, store, _ = service
    url = proxy.base_url + "/chat/completions"
    body = {"model": "m", "messages": MSGS}
    codes = [
        httpx.post(url, json=body).status_code,  # no key
        httpx.post(url, json=body, headers={"Authorization": "Bearer wrong"}).status_code,
        httpx.get(proxy.base_url + "/interactions/x", headers={"Authorization": f"Bearer {WRITE}"}).status_code,  # write key on admin
        httpx.post(url, content=b'{"messages": [', headers={"Authorization": f"Bearer {WRITE}"}).status_code,
        httpx.post(url, json={"model": "m"}, headers={"Authorization": f"Bearer {WRITE}"}).status_code,
        httpx.post(url, json={"model": "m", "messages": [{"role": "user", "content": "x" * 70_000}]},
                   headers={"Authorization": f"Bearer {WRITE}"}).status_code,
    ]
    assert codes == [401, 401, 403, 422, 422, 413]  # no key, an unknown key: 401; a write key on an admin route: 403
    stats = httpx.get(proxy.base_url.replace("/v1", "") + "/admin/stats", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert stats["responses"] == {"401": 2, "403": 1, "413": 1, "422": 2}
    assert stats["store"]["interactions"] == 0


def test_consent_opt_out(upstream, store_url):
    srv, _ = upstream
    for mode in ("metadata", "drop"):
        cfg = ServiceConfig(upstream=srv.base_url, store_url=store_url, write_keys=[WRITE], admin_keys=[ADMIN],
                            no_consent=mode)
        asgi, app = make_app(cfg)
        with LoopbackServer(asgi) as proxy:
            via = client(proxy.base_url)
            r = via.chat.completions.create(model="m", messages=MSGS, extra_headers={"X-PTData-Consent": "false"})
            assert r.choices[0].message.content.startswith("Answer 0")
        rows = [x for x in app.state.store.interactions() if x["id"] == r.model_extra["interaction_id"]]
        if mode == "metadata":
            assert len(rows) == 1 and rows[0]["request"] is None and rows[0]["response"] is None and not rows[0]["consent"]
        else:
            assert rows == []
        app.state.store.close()


def test_migrations_are_recorded_and_idempotent(store_url):
    s = Store(store_url)
    assert s.schema_version() == 5
    s.migrate()
    assert s.schema_version() == 5
    with s.engine.connect() as c:
        assert c.execute(sa.text("select count(*) from schema_migrations")).scalar() == 5
    s.close()


def test_keys_never_reach_the_store_or_logs(upstream, service, capfd):
    proxy, store, _ = service
    client(proxy.base_url).chat.completions.create(model="m", messages=MSGS)
    dump = orjson.dumps(list(store.interactions()), default=str)
    assert WRITE.encode() not in dump and ADMIN.encode() not in dump
    out, errs = capfd.readouterr()
    assert WRITE not in out + errs


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_server_feedback_cli_and_kill9_under_load(upstream, tmp_path):
    """`ptdata flywheel serve` as a real process: feedback through the Python client and the CLI,
    then a kill -9 under load: every interaction whose answer reached a client is in the store."""
    import signal
    import subprocess
    import sys
    import threading
    import time

    import httpx

    from ptdata.flywheel import FlywheelClient

    from .conftest import run_cli

    srv, _ = upstream
    port = _free_port()
    db = tmp_path / "fw.sqlite"
    env = {**os.environ, "PTDATA_FLYWHEEL_WRITE_KEYS": WRITE, "PTDATA_FLYWHEEL_ADMIN_KEYS": ADMIN}
    proc = subprocess.Popen([sys.executable, "-c", "from ptdata.cli import main; main()", "flywheel", "serve",
                             "--upstream", srv.base_url, "--store", str(db), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(200):
            try:
                httpx.get(base + "/models", headers={"Authorization": f"Bearer {WRITE}"})
                break
            except httpx.TransportError:
                time.sleep(0.05)
        iid = client(base).chat.completions.with_raw_response.create(model="m", messages=MSGS).headers["x-interaction-id"]
        fc = FlywheelClient(base, WRITE)
        assert fc.thumbs(iid, True, event_id="t1") == {"event_id": "t1", "created": True}
        assert fc.thumbs(iid, True, event_id="t1") == {"event_id": "t1", "created": False}
        r = run_cli("flywheel", "feedback", iid, "--url", base, "--rating", "5", "--event-id", "r1",
                    env_extra={"PTDATA_FLYWHEEL_KEY": WRITE})
        assert r.returncode == 0 and "recorded: r1" in r.stdout, r.stderr
        assert FlywheelClient(base, ADMIN).interaction(iid)["feedback"][1]["value"] == 5

        got: list[str] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(timeout=5) as c:
                while not stop.is_set():
                    try:
                        resp = c.post(base + "/chat/completions", json={"model": "m", "messages": MSGS},
                                      headers={"Authorization": f"Bearer {WRITE}"})
                    except httpx.TransportError:
                        return
                    if resp.status_code == 200:
                        got.append(resp.headers["x-interaction-id"])

        threads = [threading.Thread(target=load) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stop.set()
        for t in threads:
            t.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(got) > 10
    stored = {r["id"] for r in Store(str(db)).interactions()}
    assert set(got) <= stored
    assert WRITE not in proc.stderr.read().decode() + proc.stdout.read().decode()


PII_RX = __import__("re").compile(r"[\w.]+@example\.com|415-555-01\d\d")


def test_mining_a_simulated_log(store_url, tmp_path):
    """Alpaca answers as responses, HH-RLHF chosen/rejected as up/down answers, planted PII and
    rows replayed in a second version: exact SFT and pair counts, no PII, no cross-version duplicate."""
    import gzip
    import itertools

    from ptdata.flywheel.mine import content_key, list_versions, mine
    from ptdata.flywheel.report import write_report
    from ptdata.flywheel.simulate import simulate
    from ptdata.ops.pii import TYPES, redact
    from ptdata.reader import read_records

    from .conftest import shared

    alpaca, seen = [], set()
    with gzip.open(shared("alpaca_en_52k.jsonl.gz"), "rb") as f:
        for line in f:
            row = orjson.loads(line)
            k = (row["instruction"], row["input"])
            if k in seen or not row["output"].strip():
                continue
            seen.add(k)
            i = len(alpaca)
            if i % 13 == 0:
                row["output"] += f" You can reach me at jane.doe{i}@example.com or 415-555-01{i:02d}."
            alpaca.append(row)
            if len(alpaca) == 100:
                break
    src = tmp_path / "alpaca100.jsonl"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in alpaca))
    hh = tmp_path / "hh30.jsonl"
    with gzip.open(shared("hh_rlhf_harmless_test.jsonl.gz"), "rb") as f:
        hh.write_bytes(b"".join(itertools.islice(f, 30)))

    simulate(src, store_url, "model-v1", limit=80)
    simulate(hh, store_url, "model-v1")
    store = Store(store_url)
    m1 = mine(store, "v1", tmp_path / "data")
    simulate(src, store_url, "model-v2", start=60, limit=40)  # rows 60-79 again, then 80-99
    m2 = mine(store, "v2", tmp_path / "data")

    # the held-out split (10% of the prompts by default, by a salted hash of the store's own random
    # salt) takes some rows out of training: find which, by their prompts, from the eval files
    row_of = {orjson.dumps(r.messages[:-1]): ("alpaca", i) for i, (r, _) in enumerate(read_records(src))}
    row_of.update({orjson.dumps(r.messages): ("hh", j) for j, (r, _) in enumerate(read_records(hh))})
    held: dict[str, set[int]] = {"alpaca": set(), "hh": set()}
    for v in ("v1", "v2"):
        for e in map(orjson.loads, (tmp_path / "data" / v / "eval.jsonl").read_bytes().splitlines()):
            src_name, i = row_of[orjson.dumps(store.interaction(e["meta"]["interaction_ids"][0])["request"]["messages"])]
            held[src_name].add(i)
    ha, hh_held = held["alpaca"], held["hh"]
    nonzero = lambda d: {k: v for k, v in d.items() if v}  # noqa: E731

    def expect(rows: range) -> tuple[int, int]:
        rows = [i for i in rows if i not in ha]
        sft = sum(1 for i in rows if i % 10 < 7) + sum(1 for i in rows if i % 10 == 8)
        return sft, sum(1 for i in rows if i % 10 == 8)

    a1, p1 = expect(range(80))
    h = 30 - len(hh_held)  # each HH prompt (asked twice, up and down) is held out whole or not at all
    assert (m1["counts"]["sft"], m1["counts"]["pairs"]) == (a1 + h, p1 + h)
    # the choice events repeat the up/down pairs
    assert m1["counts"]["dropped_records"] == nonzero({"duplicate": sum(1 for j in range(0, 30, 3) if j not in hh_held)})
    assert m1["counts"]["unused_interactions"] == nonzero({
        "no_usable_feedback": sum(1 for i in range(80) if i % 10 == 7 and i not in ha),
        "no_feedback": sum(1 for i in range(80) if i % 10 == 9 and i not in ha)})
    assert m1["counts"]["held_out_interactions"] == sum(1 for i in ha if i < 80) + 2 * len(hh_held) == m1["counts"]["eval"]
    a2, p2 = expect(range(80, 100))
    assert (m2["counts"]["sft"], m2["counts"]["pairs"]) == (a2, p2) and m2["parent"] == "v1"
    ov_sft, ov_pairs = expect(range(60, 80))  # rows 60-79 held out in v1 are held out again in v2: the same prompts
    assert m2["counts"]["dropped_records"] == nonzero({"in_earlier_version": ov_sft + ov_pairs})
    assert m2["counts"]["interactions"] == 40 == m2["counts"]["held_out_interactions"] + sum(
        1 for i in range(60, 100) if i not in ha)

    out = {}
    for v in ("v1", "v2"):
        recs = [r for name in ("sft.jsonl", "pairs.jsonl") for r, _ in read_records(tmp_path / "data" / v / name)]
        out[v] = recs
        for r in recs + [r for r, _ in read_records(tmp_path / "data" / v / "eval.jsonl")]:
            assert r.meta["interaction_ids"] and r.meta["version"] == v
            text = orjson.dumps(r.to_dict()).decode()
            assert not PII_RX.search(text)
            answers = [{"content": r.meta["answer"]}] if r.kind == "prompt" else []
            for msg in r.messages + (r.chosen or []) + (r.rejected or []) + answers:
                assert redact(msg["content"], set(TYPES), "[{type}]")[1] == {}, msg["content"]
    assert sum(1 for r in out["v1"] if "[EMAIL]" in orjson.dumps(r.to_dict()).decode()) > 0
    keys1, keys2 = {content_key(r) for r in out["v1"]}, {content_key(r) for r in out["v2"]}
    assert not keys1 & keys2
    assert {r.meta["mined_from"] for r in out["v1"]} == {"positive_feedback", "correction", "correction_vs_original",
                                                         "up_vs_down"}
    assert [v["name"] for v in list_versions(store)] == ["v1", "v2"]
    with pytest.raises(Exception, match="immutable"):
        mine(store, "v1", tmp_path / "data")
    s = write_report(store, tmp_path / "report.html")
    assert s["model_versions"]["model-v1"]["interactions"] == 80 + 60
    assert s["model_versions"]["model-v2"]["interactions"] == 40
    assert s["model_versions"]["model-v1"]["correction_rate"] == round(8 / 140, 4)
    assert [(d["name"], d["sft"], d["pairs"]) for d in s["dataset_versions"]] == [("v1", a1 + h, p1 + h), ("v2", a2, p2)]
    assert (tmp_path / "report.html").read_text().count("<svg") == 6
    store.close()


def test_mining_rules_on_events():
    """Regenerate and choice events, rating thresholds, negative events and consent."""
    from ptdata.flywheel.mine import build_records

    def row(i, q, a, consent=True, status=200):
        return {"id": i, "consent": consent, "status": status, "model": "m", "model_version": "v",
                "request": {"messages": [{"role": "user", "content": q}]},
                "response": {"choices": [{"message": {"role": "assistant", "content": a}}]}}

    rows = [row("a", "q1", "first"), row("b", "q1", "second"), row("c", "q2", "x"), row("d", "q2", "y"),
            row("e", "q3", "fine"), row("f", "q4", "meh"), row("g", "q5", "secret", consent=False),
            row("h", "q6", "boom", status=500), row("i", "q7", "bad")]
    ev = lambda n, iid, kind, value: {"event_id": n, "interaction_id": iid, "kind": kind, "value": value}  # noqa: E731
    events = [ev(1, "a", "regenerate", "b"), ev(2, "c", "choice", {"chosen": "c", "rejected": "d"}),
              ev(3, "e", "rating", 4), ev(4, "f", "rating", 3), ev(5, "g", "thumbs", "up"),
              ev(6, "i", "regenerate", "zz"), ev(7, "i", "thumbs", "up")]
    recs, rejects = build_records(rows, events, min_rating=4)
    got = sorted((r.meta["mined_from"], tuple(r.meta["interaction_ids"])) for r in recs)
    assert got == [("choice", ("c", "d")), ("positive_feedback", ("c",)), ("positive_feedback", ("e",)),
                   ("regenerate", ("b", "a"))]
    assert sorted((x["interaction_id"], x["reason"]) for x in rejects) == [
        ("f", "no_usable_feedback"), ("g", "no_consent"), ("h", "upstream_error"), ("i", "no_usable_feedback")]


def test_store_errors_are_one_line(tmp_path):
    from .conftest import run_cli

    r = run_cli("flywheel", "versions", "--store", "postgresql://user:pw-not-shown@127.0.0.1:1/db")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: cannot open the store")
    assert "pw-not-shown" not in r.stderr
    r = run_cli("flywheel", "mine", "--version", "v1", "--store", str(tmp_path / "no" / "such" / "dir.sqlite"))
    assert r.returncode == 1 and r.stderr.startswith("error: cannot open the store")
