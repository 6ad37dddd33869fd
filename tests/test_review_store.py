"""The review store, rubrics and queues, and the CLI: create, list, report, export; on SQLite and
PostgreSQL (the store tests) and through the real `ptdata` entry point."""
from __future__ import annotations

import json

import orjson
import pytest
import sqlalchemy as sa

from ptdata.errors import InputError
from ptdata.review.present import AnswerIn, Invalid, to_stored
from ptdata.review.queue import create_queue
from ptdata.review.rubric import default_rubric, load_rubric
from ptdata.review.store import ReviewStore

from .conftest import load_jsonl, run_cli, write_jsonl
from .hostile import one_error_line
from .review_helpers import ASPECTS, KIND, pair_records, sft_records
from .test_flywheel_service import postgres_url, store_url  # noqa: F401 - the SQLite/PostgreSQL fixture


def full_answer(pair: bool, base: int = 3, **kw) -> AnswerIn:
    keys = [f"{s}.{a}" for a in ASPECTS for s in ("left", "right")] if pair else list(ASPECTS)
    return AnswerIn(ratings={k: base for k in keys}, decision=kw.pop("decision", "accept"),
                    choice=kw.pop("choice", "left") if pair else None, **kw)


def test_rubric_default_yaml_and_errors(tmp_path):
    r = default_rubric()
    assert r.aspects == list(ASPECTS) and r.version == default_rubric().version and len(r.version) == 16
    p = tmp_path / "r.yaml"
    p.write_text("name: short\nquestions:\n  - {id: helpfulness, type: rating}\n  - {id: ok, type: decision}\n"
                 "  - {id: tags, type: labels, options: [a, b]}\n")
    short = load_rubric(p)
    assert short.aspects == ["helpfulness"] and short.version != r.version
    assert short.questions[0].required and not short.questions[2].required
    for text, needle in (("questions: [{id: x, type: labels}]", "lists its options"),
                         ("questions: [{id: x, type: rating}, {id: x, type: note}]", "repeat"),
                         ("questions: [{id: X!, type: rating}]", "questions.0.id"),
                         ("questions: [{id: x, type: stars}]", "questions.0.type"),
                         ("questions: [", "not YAML"), ("questions: []", "questions")):
        p.write_text(text)
        with pytest.raises(InputError, match=needle.replace(".", r"\.") if "." in needle else needle):
            load_rubric(p)
    with pytest.raises(InputError, match="No such file"):
        load_rubric(tmp_path / "missing.yaml")


def test_assignment_is_balanced_and_pairs_are_counterbalanced(store_url, tmp_path):  # noqa: F811
    s = ReviewStore(store_url)
    for n in ("a", "b", "c"):
        s.add_reviewer(n)
    data = write_jsonl(tmp_path / "p.jsonl", pair_records(30))
    made = create_queue(s, "q", default_rubric(), 2, None, data=data)
    assert made["items"] == 30 and made["reviewers"] == {"a": 20, "b": 20, "c": 20}
    qid = s.queue("q")["id"]
    with s.engine.connect() as c:
        rows = c.execute(sa.text("select item_seq, reviewer_id, swap from review_assignments where queue_id = :q"),
                         {"q": qid}).all()
    by_item: dict = {}
    for seq, rid, swap in rows:
        by_item.setdefault(seq, []).append((rid, bool(swap)))
    assert all(len(v) == 2 for v in by_item.values())
    # every record is shown once as it is and once swapped; each pair of reviewers shares 10 records
    assert all(v[0][1] != v[1][1] for v in by_item.values())
    shared = {}
    for v in by_item.values():
        k = tuple(sorted(r for r, _ in v))
        shared[k] = shared.get(k, 0) + 1
    assert sorted(shared.values()) == [10, 10, 10]
    # about half the records start swapped (a random start per record)
    assert 5 <= sum(1 for v in by_item.values() if v[0][1]) <= 25
    with pytest.raises(InputError, match="exists"):
        create_queue(s, "q", default_rubric(), 2, None, data=data)
    with pytest.raises(InputError, match="--overlap 4"):
        create_queue(s, "q2", default_rubric(), 4, None, data=data)
    with pytest.raises(InputError, match="no reviewer 'zed'"):
        create_queue(s, "q3", default_rubric(), 1, ["a", "zed"], data=data)
    s.close()


def test_submit_revise_retract_and_progress(store_url, tmp_path):  # noqa: F811
    s = ReviewStore(store_url)
    s.add_reviewer("a")
    rid = s.reviewers()[0]["id"]
    create_queue(s, "q", default_rubric(), 1, ["a"], data=write_jsonl(tmp_path / "s.jsonl", sft_records(5)))
    qid = s.queue("q")["id"]
    assert s.next_open(qid, rid) == 0
    a = s.assignment(qid, rid, 0)
    stored = to_stored(full_answer(False, correction="A fixed answer."), default_rubric(), a)
    assert stored["correction"] == {"of": "answer", "text": "A fixed answer."}
    assert s.submit(qid, rid, 0, stored, "v") is True
    assert s.submit(qid, rid, 0, {**stored, "note": "second thoughts"}, "v") is False  # a revision, counted once
    assert s.member(qid, rid)["done"] == 1 and s.next_open(qid, rid) == 1 and s.next_open(qid, rid, after=3) == 4
    (ans,) = s.answers_of(qid)
    assert ans["revisions"] == 1 and ans["answer"]["note"] == "second thoughts"
    assert s.retract(qid, rid, 0)["note"] == "second thoughts"
    assert s.member(qid, rid)["done"] == 0 and s.next_open(qid, rid) == 0 and s.answers_of(qid) == []
    assert s.retract(qid, rid, 0) is None
    s.close()


def test_answers_are_checked_against_the_rubric_and_stored_in_record_terms(tmp_path):
    s = ReviewStore(str(tmp_path / "r.sqlite"))
    s.add_reviewer("a")
    rid = s.reviewers()[0]["id"]
    create_queue(s, "p", default_rubric(), 1, ["a"], data=write_jsonl(tmp_path / "p.jsonl", pair_records(2)))
    qid = s.queue("p")["id"]
    a = s.assignment(qid, rid, 0)
    for swap in (False, True):
        item = {**a, "swap": swap}
        st = to_stored(full_answer(True, choice="left", correction="Better, kinder words."), default_rubric(), item)
        side = "rejected" if swap else "chosen"
        assert st["choice"] == side and st["swapped"] is swap and st["correction"]["of"] == side
        assert set(st["ratings"]) == {f"{x}.{asp}" for x in ("chosen", "rejected") for asp in ASPECTS}
        assert "left" not in orjson.dumps(st).decode()
    bad = [(dict(ratings={"helpfulness": 3}), "no rating question"),
           (dict(ratings={f"left.{x}": 3 for x in ASPECTS}), "right side"),
           (dict(ratings={f"{s}.{x}": 3 for x in ASPECTS for s in ("left", "right")}), "accept or reject"),
           (dict(ratings={f"{s}.{x}": 3 for x in ASPECTS for s in ("left", "right")}, decision="accept"), "choose"),
           (dict(ratings={f"{s}.{x}": 3 for x in ASPECTS for s in ("left", "right")}, decision="accept", choice="tie",
                 correction="x"), "choose a side first"),
           (dict(ratings={f"{s}.{x}": 3 for x in ASPECTS for s in ("left", "right")}, decision="accept", choice="left",
                 labels={"labels": ["nope"]}), "not an option")]
    for body, needle in bad:
        with pytest.raises(Invalid, match=needle):
            to_stored(AnswerIn(**body), default_rubric(), a)
    for body in ({"ratings": {"helpfulness": 6}}, {"ratings": {"helpfulness": "3"}}, {"extra": 1}, {"note": "a\x00b"},
                 {"ratings": {"<b>": 1}}):
        with pytest.raises(Exception):
            AnswerIn.model_validate(body)


def test_next_record_is_an_index_seek(tmp_path):
    s = ReviewStore(str(tmp_path / "r.sqlite"))
    s.add_reviewer("a")
    create_queue(s, "q", default_rubric(), 1, ["a"], data=write_jsonl(tmp_path / "s.jsonl", sft_records(3)))
    with s.engine.connect() as c:
        plan = " ".join(str(r[-1]) for r in c.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT pos FROM review_assignments WHERE queue_id = 1 AND reviewer_id = 1 AND done = 0 "
            "AND pos > -1 ORDER BY pos LIMIT 1"))
    assert "ix_review_assign_open" in plan and "SCAN" not in plan.replace("SCAN USING", ""), plan


def _cli(*args):
    r = run_cli("review", *args)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_cli_create_report_export(tmp_path):
    st = str(tmp_path / "review.sqlite")
    toks = {}
    for n in ("ann", "ben"):
        r = _cli("add-reviewer", n, "--store", st, "--json")
        assert r.returncode == 0, r.stderr
        toks[n] = json.loads(r.stdout)["token"]
    assert toks["ann"].startswith("rv_") and toks["ann"] not in (tmp_path / "review.sqlite").read_bytes().decode("latin-1")
    r = _cli("add-reviewer", "ann", "--store", st)
    assert r.returncode == 1 and one_error_line(r.stderr, "exists")
    # nothing exported before anyone reviewed: exit 4
    data = write_jsonl(tmp_path / "mixed.jsonl", sft_records(6) + [{"messages": "not a list"}])
    r = _cli("create", "mix", "--data", data, "--overlap", "2", "--store", st, "--json")
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert made["items"] == 6 and made["rejected"] == 1 and made["reviewers"] == {"ann": 6, "ben": 6}
    assert _cli("export", "mix", "--store", st, "--out", tmp_path / "out").returncode == 4
    for args, needle in ((["create", "x", "--store", st], "--data FILE or --flywheel-version"),
                         (["create", "x", "--data", data, "--overlap", "3", "--store", st], "--overlap 3"),
                         (["create", "x", "--data", data, "--reviewers", "ann,nobody", "--store", st], "no reviewer 'nobody'"),
                         (["create", "bad/name", "--data", data, "--store", st], "queue 'bad/name'"),
                         (["report", "nope", "--store", st], "no queue 'nope'"),
                         (["export", "nope", "--store", st], "no queue 'nope'")):
        r = _cli(*args)
        assert r.returncode == 1 and one_error_line(r.stderr, needle)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_records(4))
    assert _cli("create", "pp", "--data", pairs, "--overlap", "2", "--store", st).returncode == 0

    # answers as the app stores them (the browser tests drive the real page)
    s = ReviewStore(st)
    ids = {p["name"]: p["id"] for p in s.reviewers()}
    rub = default_rubric()
    q, qp = s.queue("mix")["id"], s.queue("pp")["id"]
    ann_h, ben_h = [1, 2, 3, 4, 5, 3], [1, 2, 3, 4, 4, 2]
    for who, hs in (("ann", ann_h), ("ben", ben_h)):
        for pos in range(6):
            a = s.assignment(q, ids[who], pos)
            ans = AnswerIn(ratings={"helpfulness": hs[pos], "truthfulness": 3, "harmlessness": 5, "instruction_following": 4},
                           decision="reject" if pos == 5 else "accept",
                           note="wrong sum" if pos == 5 else None,
                           correction="Fixed: 0 + 0 = 0." if (pos == 0 and who == "ann") else None)
            s.submit(q, ids[who], pos, to_stored(ans, rub, a), rub.version)
        for pos in range(4):
            a = s.assignment(qp, ids[who], pos)
            left_is_rejected = a["swap"]
            # both reviewers prefer the record's rejected side on pair 0, its chosen side elsewhere
            want = "rejected" if pos == 0 else "chosen"
            choice = "left" if (want == "rejected") == left_is_rejected else "right"
            s.submit(qp, ids[who], pos, to_stored(full_answer(True, choice=choice), rub, a), rub.version)
    s.close()

    r = _cli("report", "mix", "--store", st, "--json", "-o", tmp_path / "rep.html")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    from ptdata.review.agreement import cohen_kappa, krippendorff_alpha

    h = rep["aspects"]["helpfulness"]
    assert h["human"]["kappa"] == round(cohen_kappa(ann_h, ben_h), 4)
    assert h["human"]["alpha"] == round(krippendorff_alpha([[x, y] for x, y in zip(ann_h, ben_h)], "ordinal"), 4)
    assert h["judge"]["pairs"] == 12  # the records' own scores: the judge paired with each reviewer
    assert rep["decisions"] == {"accept": 10, "reject": 2} and rep["decision"]["percent_agreement"] == 1.0
    html_text = (tmp_path / "rep.html").read_text()
    assert "Krippendorff" in html_text and "<script" not in html_text.split("<pre>")[0]

    r = _cli("export", "mix", "--store", st, "--out", tmp_path / "out", "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["version"] == "mix-1" and m["counts"]["accepted"] == 5 and m["counts"]["human_rejected"] == 1
    vdir = tmp_path / "out" / "mix-1"
    sft = load_jsonl(vdir / "sft.jsonl")
    orig = [x for x in sft if x["meta"].get("mined_from") != "human_correction"]
    fixes = [x for x in sft if x["meta"].get("mined_from") == "human_correction"]
    assert len(orig) == 5 and len(fixes) == 1 and fixes[0]["messages"][-1]["content"] == "Fixed: 0 + 0 = 0."
    assert orig[4]["scores"]["human.helpfulness"] == 4.5 and orig[0]["scores"]["helpfulness"] == 1  # the judge's stay
    rv = orig[0]["meta"]["review"]
    assert len(rv["reviewers"]) == 2 and all(len(x) == 16 for x in rv["reviewers"]) and rv["rubric_version"] == rub.version
    assert "ann" not in (vdir / "sft.jsonl").read_text() and len(rv["answered_at"]) == 2
    (cvo,) = load_jsonl(vdir / "pairs.jsonl")
    assert cvo["chosen"][0]["content"] == "Fixed: 0 + 0 = 0." and cvo["rejected"][0]["content"] == "0 + 0 = 0."
    (rej,) = load_jsonl(vdir / "rejects.jsonl")
    assert rej["reason"] == "human_rejected" and rej["notes"] == ["wrong sum", "wrong sum"]
    r = _cli("export", "mix", "--store", st, "--out", tmp_path / "out", "--version", "mix-1")
    assert r.returncode == 1 and one_error_line(r.stderr, "immutable")

    r = _cli("export", "pp", "--store", st, "--out", tmp_path / "out", "--json")
    assert r.returncode == 0, r.stderr
    pp = load_jsonl(tmp_path / "out" / "pp-1" / "pairs.jsonl")
    src = {x["messages"][0]["content"]: x for x in pair_records(4)}
    flipped = [p for p in pp if p["meta"]["review"]["choice"] == "flipped"]
    assert len(flipped) == 1 and flipped[0]["chosen"][0]["content"].startswith("Everyone gets nervous")
    f = flipped[0]
    assert f["scores"]["chosen.helpfulness"] == 2 and f["scores"]["rejected.helpfulness"] == 4  # the judge's flipped too
    assert f["id"] != src[f["messages"][0]["content"]]["id"]
    kept = [p for p in pp if p["meta"]["review"]["choice"] == "kept"]
    assert len(kept) == 3 and all(p["chosen"][0]["content"].startswith(KIND) for p in kept)
    rep = json.loads(_cli("report", "pp", "--store", st, "--json").stdout)
    assert rep["choice"]["percent_agreement"] == 1.0 and rep["position_bias"]["choices"] == 8
    # the reviewers picked by content, so the left share is what the swaps made it
    r = _cli("list", "--store", st, "--json")
    lst = json.loads(r.stdout)
    assert [q["name"] for q in lst["queues"]] == ["mix", "pp"] and lst["queues"][0]["answers"] == 12


def test_the_review_demo_script_runs(tmp_path):
    """examples/review_demo.sh, which the README lists: a queue, the app, one answer through the
    API, report and export."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from .conftest import ROOT

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    env = {**os.environ, "PORT": str(port), "PTDATA": str(Path(sys.executable).parent / "ptdata")}
    out = tmp_path / "review"
    r = subprocess.run(["bash", str(ROOT / "examples" / "review_demo.sh"), str(out)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert json.loads((out / "answer.json").read_text())["stored"] is True
    assert json.loads((out / "next.json").read_text())["pos"] == 0
    sft = load_jsonl(out / "data" / "demo-1" / "sft.jsonl")
    assert len(sft) == 2 and {x["meta"].get("mined_from") for x in sft} == {None, "human_correction"}
    assert (out / "agreement.html").exists() and (out / "lead.token").read_text().startswith("rv_")
