"""The review app over HTTP (a real server on loopback, httpx as the client), on SQLite and
PostgreSQL: authentication (401), roles and queue membership (403), the login form and CSRF on
every cookie-authenticated POST, body limits (413) and validation (422), escaping and the
Content-Security-Policy, blind answers (no reviewer sees another's answer or which side of a
pair is the record's chosen one)."""
from __future__ import annotations

import re

import httpx
import orjson
import pytest

from ptdata.llm.serve import LoopbackServer
from ptdata.review.app import make_app
from ptdata.review.queue import create_queue
from ptdata.review.rubric import default_rubric
from ptdata.review.store import ReviewStore

from .conftest import ROOT, write_jsonl
from .review_helpers import ASPECTS, KIND, XSS, pair_records, sft_records
from .test_flywheel_service import postgres_url, store_url  # noqa: F401 - the SQLite/PostgreSQL fixture

fastapi = pytest.importorskip("fastapi")


@pytest.fixture
def served(store_url, tmp_path):  # noqa: F811
    s = ReviewStore(store_url)
    tok = {n: s.add_reviewer(n, "admin" if n == "root" else "reviewer") for n in ("ann", "ben", "root")}
    create_queue(s, "sft", default_rubric(), 2, ["ann", "ben"], data=write_jsonl(tmp_path / "s.jsonl", sft_records(6)))
    create_queue(s, "pairs", default_rubric(), 1, ["ann"], data=write_jsonl(tmp_path / "p.jsonl", pair_records(4)))
    asgi, _ = make_app(s, max_body_bytes=64 * 1024)
    with LoopbackServer(asgi) as srv:
        yield f"http://127.0.0.1:{srv.port}", tok, s
    s.close()


def bearer(t: str) -> dict:
    return {"Authorization": f"Bearer {t}"}


def full(pair: bool) -> dict:
    keys = [f"{s}.{a}" for a in ASPECTS for s in ("left", "right")] if pair else list(ASPECTS)
    return {"ratings": {k: 4 for k in keys}, "decision": "accept", **({"choice": "right"} if pair else {})}


def test_auth_roles_and_queue_membership(served):
    base, tok, _ = served
    with httpx.Client(base_url=base) as c:
        assert c.get("/api/q/sft/next").status_code == 401
        assert c.get("/api/q/sft/next", headers=bearer("rv_not-a-token")).status_code == 401
        r = c.get("/q/sft")
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert c.get("/admin").status_code == 303
        ben = bearer(tok["ben"])
        assert c.get("/api/q/sft/next", headers=ben).status_code == 200
        # ben is not in `pairs`: the same 403 as for a queue that does not exist (no name is leaked)
        for q in ("pairs", "nope"):
            r = c.get(f"/api/q/{q}/next", headers=ben)
            assert r.status_code == 403 and r.json()["error"]["type"] == "forbidden"
            assert c.get(f"/api/q/{q}/a/0", headers=ben).status_code == 403
            assert c.post(f"/api/q/{q}/a/0", headers=ben, json=full(True)).status_code == 403
            assert c.get(f"/q/{q}", headers=ben).status_code == 403
        for path in ("/admin", "/admin/q/sft", "/api/admin/q/sft/report"):
            assert c.get(path, headers=ben).status_code == 403, path
        root = bearer(tok["root"])
        assert c.get("/admin", headers=root).status_code == 200
        assert c.get("/api/admin/q/sft/report", headers=root).json()["items"] == 6
        assert c.get("/api/admin/q/nope/report", headers=root).status_code == 404
        assert c.get("/api/q/sft/next", headers=root).status_code == 403  # an admin reviews only where assigned
        assert c.get("/api/me", headers=ben).json()["queues"] == [{"name": "sft", "done": 0, "total": 6}]


def login(c: httpx.Client, token: str) -> str:
    """Log in through the form; the session's CSRF token as the review page carries it."""
    r = c.get("/login")
    lc = re.search(r"name='login_csrf' value='([^']+)'", r.text).group(1)
    r = c.post("/login", content=f"token={token}&login_csrf={lc}", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 303, r.text
    page = c.get("/q/sft")
    return re.search(r"data-csrf='([^']+)'", page.text).group(1)


def test_login_session_cookie_and_csrf(served):
    base, tok, s = served
    with httpx.Client(base_url=base) as c:
        r = c.get("/login")
        assert "ptdata_review_login" in r.headers["set-cookie"]
        # the login form itself needs its double-submit token
        r = c.post("/login", content=f"token={tok['ann']}&login_csrf=forged",
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 403
        many = "&".join(f"f{i}=1" for i in range(50))  # more fields than a login form has: an empty form
        assert c.post("/login", content=many, headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 403
        lc = re.search(r"name='login_csrf' value='([^']+)'", c.get("/login").text).group(1)
        r = c.post("/login", content=f"token=wrong&login_csrf={lc}", headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 401 and "Unknown token" in r.text
        csrf = login(c, tok["ann"])
        assert c.get("/api/q/sft/next").status_code == 200
        # a cookie-authenticated POST without the session's CSRF token is refused
        r = c.post("/api/q/sft/a/0", json=full(False))
        assert r.status_code == 403 and r.json()["error"]["type"] == "csrf"
        r = c.post("/api/q/sft/a/0", json=full(False), headers={"X-CSRF-Token": "x" + csrf})
        assert r.status_code == 403
        r = c.post("/api/q/sft/a/0", json=full(False), headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200 and r.json()["next"] == 1
        assert c.post("/logout").status_code == 403  # no token in the form
        r = c.post("/logout", content=f"csrf={csrf}", headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 303
        assert c.get("/api/q/sft/next").status_code == 401
    # the session cookie is HttpOnly and SameSite=Strict; the store keeps only hashes
    with httpx.Client(base_url=base) as c:
        lc = re.search(r"name='login_csrf' value='([^']+)'", c.get("/login").text).group(1)
        r = c.post("/login", content=f"token={tok['ann']}&login_csrf={lc}", headers={"Content-Type": "application/x-www-form-urlencoded"})
        set_cookie = [v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("ptdata_review=")][0]
        assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie.replace("Strict", "strict")
        sid = c.cookies["ptdata_review"]
    with s.engine.connect() as conn:
        dump = " ".join(str(r) for t in ("review_sessions", "review_reviewers") for r in conn.exec_driver_sql(f"select * from {t}"))
    assert sid not in dump and tok["ann"] not in dump


def test_bodies_are_limited_and_validated(served):
    base, tok, _ = served
    h = bearer(tok["ann"])
    with httpx.Client(base_url=base, headers=h) as c:
        assert c.post("/api/q/sft/a/0", content=b"x" * (65 * 1024), headers={"Content-Type": "application/json"}).status_code == 413
        for body, needle in ((b"not json", "not JSON"), (b"[1]", "body"),
                             (orjson.dumps({"ratings": {"helpfulness": 6}}), "ratings"),
                             (orjson.dumps({**full(False), "ratings": {"helpfulness": 4}}), "rate truthfulness"),
                             (orjson.dumps({**full(False), "surprise": 1}), "surprise"),
                             (orjson.dumps({**full(False), "choice": "left"}), "preference pairs"),
                             (orjson.dumps({**full(False), "labels": {"labels": ["<b>x</b>"]}}), "not an option")):
            r = c.post("/api/q/sft/a/0", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 422 and needle in r.json()["error"]["message"], (body, r.text)
        assert c.post("/api/q/sft/a/99", json=full(False)).status_code == 404
        assert c.get("/api/q/sft/a/notanumber").status_code == 422
        assert c.post("/api/q/sft/a/0/retract", json={}).status_code == 409  # nothing to undo yet
        assert c.post("/api/q/sft/a/0", json=full(False)).status_code == 200
        assert c.post("/api/q/sft/a/0/retract", json={}).json()["answer"]["ratings"]["helpfulness"] == 4


def test_pages_escape_and_forbid_inline_script(served, tmp_path):
    base, tok, s = served
    h = bearer(tok["ann"])
    with httpx.Client(base_url=base, headers=h) as c:
        for path in ("/", "/q/sft", "/login"):
            r = c.get(path)
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp and r.headers["x-frame-options"] == "DENY"
            assert "<script>" not in r.text and "onerror" not in r.text
        # record text reaches the page only as JSON data, rendered as text by the page script
        rec = c.get("/api/q/sft/a/3").json()
        assert rec["messages"][1]["content"] == XSS + " (as text)"
        assert c.get("/api/q/sft/a/3").headers["content-type"].startswith("application/json")
        js = c.get("/static/review.js").text
        assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "document.write" not in js and "eval(" not in js
        assert c.get("/static/../app.py").status_code == 404 and c.get("/static/other.js").status_code == 404
    # the admin's pages escape reviewer names and labels from the store
    s.add_reviewer("x-y.z")
    with httpx.Client(base_url=base, headers=bearer(tok["root"])) as c:
        r = c.get("/admin")
        assert r.status_code == 200 and "x-y.z" in r.text
    # every asset is in the package: nothing points at another host
    for f in (ROOT / "src/ptdata/review/static").iterdir():
        assert not re.search(r"https?://", f.read_text()), f


def test_answers_are_blind(served):
    base, tok, s = served
    with httpx.Client(base_url=base) as c:
        ann, ben = bearer(tok["ann"]), bearer(tok["ben"])
        assert c.post("/api/q/sft/a/0", headers=ann, json={**full(False), "note": "ann's private note"}).status_code == 200
        r = c.get("/api/q/sft/a/0", headers=ben).json()
        assert r["answer"] is None and "private" not in orjson.dumps(r).decode()
        assert c.get("/api/q/sft/a/0", headers=ann).json()["answer"]["note"] == "ann's private note"
        # a pair's sides come as left/right only: the page cannot tell which is the record's chosen, nor the judge's scores
        p = c.get("/api/q/pairs/a/0", headers=ann).json()
        text = orjson.dumps(p).decode()
        assert set(p["sides"]) == {"left", "right"} and '"chosen"' not in text and '"rejected"' not in text
        assert "scores" not in p and "helpfulness" not in text
        r = c.post("/api/q/pairs/a/0", headers=ann, json=full(True))
        assert r.status_code == 200
        qid = s.queue("pairs")["id"]
        (a,) = s.answers_of(qid)
        right_is = "chosen" if a["swap"] else "rejected"
        assert a["answer"]["choice"] == right_is and a["answer"]["swapped"] == a["swap"]
        shown = p["sides"]["right"][0]["content"]
        assert shown.startswith(KIND) == (right_is == "chosen")
