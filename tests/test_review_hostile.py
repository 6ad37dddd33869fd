"""`ptdata review` against hostile input: a rubric that is not text, options out of range, an
empty reviewer list, and API positions no store column can hold: one `error:` line or a 422,
never an internal error or a 500."""
from __future__ import annotations

import httpx
import pytest

from ptdata.llm.serve import LoopbackServer
from ptdata.review.app import make_app
from ptdata.review.queue import create_queue
from ptdata.review.rubric import default_rubric
from ptdata.review.store import ReviewStore

from .conftest import run_cli, write_jsonl
from .review_helpers import ASPECTS, sft_records

pytest.importorskip("fastapi")


@pytest.fixture
def store(tmp_path):
    path = str(tmp_path / "r.sqlite")
    s = ReviewStore(path)
    tokens = {n: s.add_reviewer(n) for n in ("ann", "ben")}
    yield path, s, tokens
    s.close()


def test_cli_refuses_hostile_values_in_one_line(store, tmp_path):
    path, _, _ = store
    data = write_jsonl(tmp_path / "d.jsonl", sft_records(2))
    rubric = tmp_path / "r.yaml"
    rubric.write_bytes(b"\xff\xfe questions: []")
    r = run_cli("review", "create", "q", "--data", data, "--rubric", rubric, "--store", path)
    assert r.returncode == 1 and r.stderr.startswith("error: --rubric") and "UTF-8" in r.stderr, r.stderr
    assert "internal error" not in r.stderr
    r = run_cli("review", "create", "q", "--data", data, "--reviewers", " , ,", "--store", path)
    assert r.returncode == 1 and "--reviewers" in r.stderr and "no reviewer names" in r.stderr, r.stderr
    r = run_cli("review", "list", "--store", path, "--json")
    assert r.returncode == 0 and '"queues":[]' in r.stdout.replace(" ", "")  # neither made a queue
    for bad in (("--port", "99999"), ("--port", "-1"), ("--max-body-bytes", "0")):
        r = run_cli("review", "serve", "--store", path, *bad)  # refused before anything listens
        assert r.returncode == 2 and bad[0] in r.stderr, (bad, r.stderr)


def test_positions_out_of_range_are_422_not_500(store, tmp_path):
    _, s, tokens = store
    create_queue(s, "q", default_rubric(), 1, ["ann", "ben"], data=write_jsonl(tmp_path / "d.jsonl", sft_records(4)))
    asgi, _ = make_app(s, max_body_bytes=64 * 1024)
    answer = {"ratings": {a: 4 for a in ASPECTS}, "decision": "accept"}
    with LoopbackServer(asgi) as srv, httpx.Client(base_url=f"http://127.0.0.1:{srv.port}",
                                                   headers={"Authorization": f"Bearer {tokens['ann']}"}) as c:
        huge = 2**70
        for method, url in (("GET", f"/api/q/q/a/{huge}"), ("POST", f"/api/q/q/a/{huge}"),
                            ("POST", f"/api/q/q/a/{huge}/retract"), ("GET", f"/api/q/q/next?after={huge}"),
                            ("GET", f"/api/q/q/a/{2**31}"), ("GET", "/api/q/q/a/-1"), ("GET", "/api/q/q/next?after=-2")):
            r = c.request(method, url, json=answer if method == "POST" else None)
            assert r.status_code == 422 and r.json()["error"]["type"] == "invalid", (method, url, r.text)
        # in range but not in ann's share (2 of 4 records): 404; her own: stored
        assert c.post("/api/q/q/a/3", json=answer).status_code == 404
        assert c.post("/api/q/q/a/1", json=answer).json()["stored"] is True
        assert c.get(f"/api/q/q/next?after={2**31 - 1}").json()["pos"] == 0  # wraps to her first open record
