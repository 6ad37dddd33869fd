"""The flywheel's loop over time (issue 22): the held-out evaluation split, evaluating candidate
models with a gate, deploy records, the per-week report, diff and dataset cards.

End to end on one machine: traffic is simulated against a loopback "v1" model through the real
proxy into a SQLite store, mined with a held-out split, then a loopback "v2" that answers the
held-out prompts better and a "v3" that answers worse are evaluated by `ptdata flywheel eval`
against a scripted loopback judge; every expected count is computed here from the script."""
from __future__ import annotations

import math
import os
import re
import shutil
import threading
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from ptdata.flywheel.store import Store, interactions as interactions_t, feedback as feedback_t, settings
from ptdata.llm.serve import LoopbackServer, make_app as make_upstream

from .conftest import ROOT, load_jsonl, run_cli, write_jsonl
from .llm_helpers import scripted
from .test_flywheel_service import postgres_url, store_url  # noqa: F401 - the SQLite/PostgreSQL fixture

pytest.importorskip("fastapi")

GATE_EXIT = 5  # README, Exit codes: `flywheel eval --gate` below the gate


# ---- the scripted world -------------------------------------------------------------------------------
def question(i: int) -> str:
    return f"Question {i}: what is {i} plus {i}?"


def v1_answer(i: int) -> str:
    return f"The answer is {2 * i}."


def correction(i: int) -> str:  # what `simulate` sends as the correction of row i (i % 10 == 8)
    return v1_answer(i).rstrip() + "\n\n(Edited by the user for accuracy.)"


def v2_answer(i: int) -> str:
    return correction(i) if i % 10 == 8 else f"Better: {v1_answer(i)} Because {i} + {i} = {2 * i}."


def v3_answer(i: int) -> str:
    return f"Worse: maybe {i}, I am not sure."


def number(text: str) -> int:
    return int(re.search(r"Question (\d+):", text).group(1))


def score(answer: str, reference: str | None) -> int:
    """The judge's rule: the reference answer is best, then a 'Better:' answer, a plain one, a 'Worse:' one."""
    if reference is not None and answer == reference:
        return 3
    return 2 if answer.startswith("Better:") else 0 if answer.startswith("Worse:") else 1


def position_biased(i: int) -> bool:
    """On these prompts the judge always says "A": the two orders disagree, so the verdict is a tie."""
    return i % 4 == 0


class Judge:
    """A scripted pairwise judge on loopback; it logs what it saw in each call."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, user: str, req) -> str:
        grab = lambda rx: (m.group(1) if (m := re.search(rx, user, re.S)) else None)  # noqa: E731
        a = grab(r"### Answer A\n(.*?)\n### End of answer A")
        b = grab(r"### Answer B\n(.*?)\n### End of answer B")
        ref = grab(r"### Reference answer[^\n]*\n(.*?)\n### End of reference answer")
        i = number(user)
        sa_, sb = score(a, ref), score(b, ref)
        with self.lock:
            self.calls.append({"i": i, "A": a, "B": b, "ref": ref,
                               "notes": re.findall(r"\(a person ([^)]*)\)", user)})
        winner = "A" if position_biased(i) else "A" if sa_ > sb else "B" if sb > sa_ else "tie"
        out = {"winner": winner, "rationale": "by the script"}
        if '"aspects"' in user:
            out["aspects"] = {"helpfulness": {"A": sa_ + 1, "B": sb + 1}}
        return orjson.dumps(out).decode()


def by_number(fn):
    return scripted(lambda user, req: fn(number(user)))


def wilson(x: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = x / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def fix_salt(url: str, salt: str = "salt-for-a-reproducible-test") -> None:
    s = Store(url)
    with s.engine.begin() as c:
        c.execute(settings.insert().values(key="user_salt", value=salt))
    s.close()


def ok(r) -> dict:
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    return orjson.loads(r.stdout) if r.stdout.strip().startswith("{") else {}


# ---- 1: end to end: simulate, mine with a held-out split, evaluate v2 (passes) and v3 (stopped) ----------
def test_simulate_mine_and_gate_candidates_end_to_end(tmp_path):
    from ptdata.flywheel.report import loop_stats
    from ptdata.flywheel.simulate import simulate
    from ptdata.records import Record

    url = f"sqlite:///{tmp_path / 'fw.sqlite'}"
    fix_salt(url)
    n_rows = 120
    recs = [Record("sft", [{"role": "user", "content": question(i)}, {"role": "assistant", "content": v1_answer(i)}])
            for i in range(n_rows)]
    sim = simulate(recs, url, "v1")
    assert sim["calls"] == n_rows
    data = tmp_path / "data"
    m = ok(run_cli("flywheel", "mine", "--version", "d1", "--store", url, "--out", data, "--eval-share", "0.25", "--json"))
    c = m["counts"]
    evals = load_jsonl(data / "d1" / "eval.jsonl")
    held = sorted(number(e["messages"][-1]["content"]) for e in evals)
    assert c["eval"] == len(evals) == c["held_out_interactions"] >= 15 and m["files"]["eval"] and m["files"]["card"]
    # the held-out prompts carry the stored answer, the model version and the people's feedback
    for e in evals:
        i = number(e["messages"][-1]["content"])
        assert e["kind"] == "prompt" and e["meta"]["answer"] == v1_answer(i) and e["meta"]["model_version"] == "v1"
        assert e["meta"]["correction"] == (correction(i) if i % 10 == 8 else None)
        assert e["meta"]["rating"] == {6: 5, 7: 2}.get(i % 10)
        assert e["meta"]["thumbs"] == ("up" if i % 10 < 6 else None)
    trained = {number(r["messages"][0]["content"]) for f in ("sft", "pairs") for r in load_jsonl(data / "d1" / f"{f}.jsonl")}
    assert not trained & set(held)
    # counts the mining rules give the rows that were not held out (test_flywheel_service's rule)
    train_rows = [i for i in range(n_rows) if i not in set(held)]
    assert c["sft"] == sum(1 for i in train_rows if i % 10 < 7 or i % 10 == 8)
    assert c["pairs"] == sum(1 for i in train_rows if i % 10 == 8)

    judge = Judge()
    with LoopbackServer(make_upstream(by_number(v1_answer), model_name="v1-model")) as v1, \
            LoopbackServer(make_upstream(by_number(v2_answer), model_name="v2-model")) as v2, \
            LoopbackServer(make_upstream(by_number(v3_answer), model_name="v3-model")) as v3, \
            LoopbackServer(make_upstream(scripted(judge), model_name="judge")) as j:
        judge_opts = ("--judge-url", j.base_url, "--judge-model", "judge")
        # v2 against the stored answers, with an aspect; the result goes into the store
        r = run_cli("flywheel", "eval", data / "d1", "--candidate", v2.base_url, "--candidate-model", "v2-model",
                    "--candidate-version", "model-v2", "--from-store", *judge_opts, "--aspect", "helpfulness",
                    "--gate", "0.55", "--store", url, "--json")
        s2 = ok(r)
        assert "Question" not in r.stderr  # counts in the log, never prompt text
        calls2, judge.calls = judge.calls, []
        # v3 against the live v1 model; human output: the worst regressions on stdout
        r3 = run_cli("flywheel", "eval", data / "d1", "--candidate", v3.base_url, "--candidate-model", "v3-model",
                     "--candidate-version", "model-v3", "--current", v1.base_url, "--current-model", "v1-model",
                     "--current-version", "v1", *judge_opts, "--gate", "0.55", "--store", url)
        calls3 = judge.calls
    assert r3.returncode == GATE_EXIT and "Traceback" not in r3.stderr, r3.stderr
    assert "Question" not in r3.stderr and "gate 0.55: FAIL" in r3.stderr

    # what the script implies, computed here
    exp2 = Counter("tie" if position_biased(i) else "win" for i in held)  # v2 scores 2 or 3 against the stored 1
    exp3 = Counter("tie" if position_biased(i) else "loss" for i in held)  # v3 scores 0 against v1's 1
    n = len(held)
    assert (s2["wins"], s2["ties"], s2["losses"], s2["n"]) == (exp2["win"], exp2["tie"], 0, n)
    rate2 = (exp2["win"] + exp2["tie"] / 2) / n
    assert s2["win_rate"] == round(rate2, 4) and s2["passed"] is True and s2["ci_method"] == "wilson"
    lo, hi = wilson(exp2["win"] + exp2["tie"] / 2, n)
    assert (s2["ci_low"], s2["ci_high"]) == (round(lo, 4), round(hi, 4))
    assert s2["inconsistent"] == exp2["tie"]  # every tie here is the two orders disagreeing
    delta = sum((3 if i % 10 == 8 else 2) - 1 for i in held) / n
    assert s2["aspects"] == {"helpfulness": {"delta": round(delta, 4), "judged": 2 * n}}
    assert s2["worst_regressions"] == [] and s2["with_reference"] == sum(1 for i in held if i % 10 == 8)
    # the judge saw both orders of every prompt, the correction as the reference, the rating beside the stored answer
    for calls, cand in ((calls2, v2_answer), (calls3, v3_answer)):
        assert len(calls) == 2 * n
        seen = defaultdict(set)
        for call in calls:
            seen[call["i"]].add("A" if call["A"] == cand(call["i"]) else "B" if call["B"] == cand(call["i"]) else "?")
            assert call["ref"] == (correction(call["i"]) if call["i"] % 10 == 8 else None)
        assert dict(seen) == {i: {"A", "B"} for i in held}
    for call in calls2:
        stored = "B" if call["A"] == v2_answer(call["i"]) else "A"
        rating = {6: 5, 7: 2}.get(call["i"] % 10)
        want = [f"rated answer {stored} {rating} of 5"] if rating else []
        want += [f"gave answer {stored} a thumbs up"] if call["i"] % 10 < 6 else []
        assert call["notes"] == ["; a person ".join(want)] if want else call["notes"] == [], call
    assert all(call["notes"] == [] for call in calls3)  # a live current model: no human verdict describes its answer

    # v3: stopped by the gate, with the exact counts; stored with its model version
    store = Store(url)
    from ptdata.flywheel.evaluate import load_store_eval

    assert sorted(it.interaction_id for it in load_store_eval(store)) == sorted(e["meta"]["interaction_ids"][0] for e in evals)
    rows = {e["candidate_version"]: e for e in store.evaluations()}
    e3 = rows["model-v3"]
    assert (e3["wins"], e3["ties"], e3["losses"], e3["n"]) == (0, exp3["tie"], exp3["loss"], n)
    assert e3["win_rate"] == round(exp3["tie"] / 2 / n, 4) and e3["passed"] is False and e3["gate"] == 0.55
    assert e3["current_version"] == "v1" and e3["eval_set"] == "d1" and e3["judge_model"] == "judge"
    worst = e3["result"]["worst_regressions"]
    assert len(worst) == min(5, exp3["loss"])
    for w in worst:
        i = number(w["prompt"][-1]["content"])
        assert not position_biased(i) and w["candidate"] == v3_answer(i) and w["current"] == v1_answer(i)
    assert f"[candidate] {v3_answer(number(worst[0]['prompt'][-1]['content']))}" in r3.stdout
    assert f"{exp3['tie']} ties" in r3.stderr and f"{exp3['loss']} losses" in r3.stderr
    e2 = rows["model-v2"]
    assert (e2["wins"], e2["ties"], e2["losses"], e2["passed"], e2["current_version"]) == (exp2["win"], exp2["tie"], 0, True, "v1")

    # deploy records, the card of the dataset model-v2 was trained on, the loop in the report
    ok(run_cli("flywheel", "deploy", "--store", url, "--model-version", "model-v2", "--trained-on", "d1"))
    again = run_cli("flywheel", "deploy", "--store", url, "--model-version", "model-v2", "--trained-on", "d1")
    assert again.returncode == 0 and "already recorded" in again.stderr
    bad = run_cli("flywheel", "deploy", "--store", url, "--model-version", "model-v4", "--trained-on", "nope")
    assert bad.returncode == 1 and bad.stderr.startswith("error: --trained-on 'nope'")
    ok(run_cli("flywheel", "card", "--version", "d1", "--store", url, "--out", data))
    card = (data / "d1" / "CARD.md").read_text()
    rate_cell = f"{round(rate2, 4):.3f} \\[{round(lo, 4):.3f}, {round(hi, 4):.3f}\\]"
    row = f"| model-v2 | v1 | d1 | {n} | {exp2['win']} | {exp2['tie']} | 0 | {rate_cell} | 0.55: pass |"
    assert row in card, card
    assert "model-v3" not in card  # not trained on d1 (no deploy record)
    st = loop_stats(store)
    step = st["consecutive"][0]
    assert (step["from"], step["to"], step["trained_on"]) == ("v1", "model-v2", "d1")
    assert (step["evaluation"]["wins"], step["evaluation"]["ties"]) == (exp2["win"], exp2["tie"])
    assert "result" not in step["evaluation"]  # the report never carries the stored prompts and answers
    store.close()


# ---- 2: the held-out split: reproducible, stratified, disjoint from training in every version ----------
def _interaction(iid: str, t: float, msgs: list[dict], answer: str, conv: str | None, mv: str = "m1") -> dict:
    return {"id": iid, "created_at": t, "conversation_id": conv, "user_hash": None, "consent": True, "model": "m",
            "model_version": mv, "request": {"messages": msgs, "params": {}},
            "response": {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}]},
            "finish_reason": "stop", "status": 200, "stream": False}


class Traffic:
    """Interactions with a known true conversation each: some with a conversation id (several
    turns), some without (a conversation is its first question; later turns repeat it)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.label: dict[str, str] = {}  # interaction id -> true conversation
        self.history: dict[str, list[dict]] = {}  # conversation -> messages so far
        self.window: list[list[str]] = []
        self.n = 0

    def batch(self, t0: float, turns: list[tuple[str, bool]], late: list[tuple[str, str, object]] = ()) -> list[str]:
        """turns: (conversation, has an id); late: (interaction id, kind, value) feedback."""
        rows, events, ids = [], [], []
        for k, (conv, with_id) in enumerate(turns):
            self.n += 1
            iid = f"i{self.n:05d}"
            hist = self.history.setdefault(conv, [])
            msgs = hist + [{"role": "user", "content": f"In {conv}, my question number {len(hist) // 2 + 1}: tell me a fact."}]
            answer = f"A fact for {conv}, turn {len(hist) // 2 + 1}."
            self.history[conv] = msgs + [{"role": "assistant", "content": answer}]
            t = t0 + k * 0.001
            rows.append(_interaction(iid, t, msgs, answer, conv if with_id else None))
            kind, value = ("correction", f"A better fact for {conv}.") if self.n % 7 == 0 else ("thumbs", "up")
            events.append({"event_id": "e" + iid, "interaction_id": iid, "created_at": t, "kind": kind, "value": value})
            self.label[iid] = conv
            ids.append(iid)
        for k, (iid, kind, value) in enumerate(late):
            events.append({"event_id": f"late-{iid}", "interaction_id": iid, "created_at": t0 + 0.5, "kind": kind, "value": value})
        s = Store(self.url)
        with s.engine.begin() as c:
            c.execute(interactions_t.insert(), rows)
            c.execute(feedback_t.insert(), events)
        s.close()
        self.window.append(ids)
        return ids


def _ids(path: Path) -> set[str]:
    """The interactions a version file names: records in meta, rejects at the top."""
    out = set()
    for r in load_jsonl(path):
        ids = r.get("interaction_ids") or ([r["interaction_id"]] if "interaction_id" in r else r["meta"]["interaction_ids"])
        out.update(ids)
    return out


def test_held_out_split_is_reproducible_stratified_and_never_trained_on(tmp_path):
    from ptdata.flywheel.mine import MineConfig, mine

    db = tmp_path / "fw.sqlite"
    url = f"sqlite:///{db}"
    s0 = Store(url)
    s0.salt()  # made when the proxy first opened the store
    s0.close()
    T = 1_800_000_000.0
    tr = Traffic(url)
    with_id = [(f"conv-{k}", True) for k in range(200) for _ in range(1 + k % 3)]  # 1-3 turns each
    solo = [(f"solo-{k}", False) for k in range(300) for _ in range(1 + (k % 4 == 0))]  # some with a second turn
    tr.batch(T, with_id + solo)
    # reproducible: the same store copied (its salt with it) mines the same split
    shutil.copy(db, tmp_path / "copy.sqlite")
    copy_url = f"sqlite:///{tmp_path / 'copy.sqlite'}"
    out, out2 = tmp_path / "data", tmp_path / "data2"
    store = Store(url)
    m1 = mine(store, "v1", out, until=T + 100, cfg=MineConfig(eval_share=0.1))
    other = Store(copy_url)
    mine(other, "v1", out2, until=T + 100, cfg=MineConfig(eval_share=0.1))
    other.close()
    for f in ("eval.jsonl", "sft.jsonl", "pairs.jsonl", "rejects.jsonl"):
        assert (out / "v1" / f).read_bytes() == (out2 / "v1" / f).read_bytes(), f
    ev1 = _ids(out / "v1" / "eval.jsonl")
    convs1 = {tr.label[i] for i in tr.window[0]}
    held1 = {tr.label[i] for i in ev1}
    assert 0.05 <= len(held1) / len(convs1) <= 0.15, len(held1)  # 500 conversations, target 0.1
    assert m1["counts"]["held_out_conversations"] == len(held1) and m1["counts"]["eval"] == len(ev1)

    # a second window: new turns of old conversations (held out or not), old questions asked again,
    # new conversations, a late correction on a held-out and on a trained interaction
    trained_iid = next(i for i in tr.window[0] if tr.label[i] not in held1)
    held_iid = next(iter(sorted(ev1)))
    again = [(c, c.startswith("conv-")) for c in sorted(convs1)[::3]]
    asked_again = [(f"solo-{k}", False) for k in range(0, 300, 5)]
    for conv, _ in asked_again:
        tr.history[conv] = []  # the same first question, in a new chat without a conversation id
    new = [(f"conv-new-{k}", True) for k in range(100)] + [(f"solo-new-{k}", False) for k in range(100)]
    tr.batch(T + 200, again + asked_again + new,
             late=[(trained_iid, "correction", "A late fix."), (held_iid, "correction", "A late fix of a held-out answer.")])
    m2 = mine(store, "v2", out, until=T + 300, cfg=MineConfig(eval_share=0.1))
    # a third window mined with no new held-out share: what was held out stays held out
    third = [(c, c.startswith("conv-")) for c in sorted(held1)] + [(f"solo-third-{k}", False) for k in range(50)]
    tr.batch(T + 400, third)
    m3 = mine(store, "v3", out, until=T + 500, cfg=MineConfig(eval_share=0.0))

    side: dict[str, set[str]] = defaultdict(set)
    trained_ids, eval_ids = set(), set()
    for v, m, window in (("v1", m1, tr.window[0]), ("v2", m2, tr.window[1]), ("v3", m3, tr.window[2])):
        ev = _ids(out / v / "eval.jsonl")
        tr_ids = _ids(out / v / "sft.jsonl") | _ids(out / v / "pairs.jsonl")
        rej = _ids(out / v / "rejects.jsonl")
        read = set(window) | ({trained_iid, held_iid} if v == "v2" else set())
        assert (tr_ids | rej | ev) == read and not (tr_ids | rej) & ev, v  # in = kept + rejected + held out
        assert m["counts"]["interactions"] == len(read) and m["counts"]["held_out_interactions"] == len(ev)
        for i in ev:
            side[tr.label[i]].add("eval")
        for i in tr_ids:
            side[tr.label[i]].add("train")
        trained_ids |= tr_ids
        eval_ids |= ev
    assert not trained_ids & eval_ids
    assert all(len(s) == 1 for s in side.values()), {c: s for c, s in side.items() if len(s) > 1}  # no conversation split
    held_all = {c for c, s in side.items() if s == {"eval"}}
    assert held1 <= held_all
    # v3 (share 0): exactly the new turns of conversations held out before
    assert {tr.label[i] for i in _ids(out / "v3" / "eval.jsonl")} == held1 and m3["counts"]["eval"] == len(tr.window[2]) - 50
    v2_eval = {r["meta"]["interaction_ids"][0]: r for r in load_jsonl(out / "v2" / "eval.jsonl")}
    assert v2_eval[held_iid]["meta"]["late_feedback"] is True
    assert v2_eval[held_iid]["meta"]["correction"] == "A late fix of a held-out answer."
    assert any(r["messages"][-1]["content"] == "A late fix." for r in load_jsonl(out / "v2" / "sft.jsonl"))
    # the store keeps each conversation's side under a salted hash, never its text
    with store.engine.connect() as c:
        keys = c.execute(sa.text("select key, side, version from conversation_split")).all()
    assert all(re.fullmatch(r"[0-9a-f]{64}", k) for k, _, _ in keys)
    assert len([k for k, side, _ in keys if side == "eval"]) == len(held_all)
    assert len(keys) == len(side) and {v for _, _, v in keys} == {"v1", "v2", "v3"}
    # a larger share later holds out no conversation that was trained on: sides are kept
    tr.batch(T + 600, [(c, c.startswith("conv-")) for c in sorted(side) if side[c] == {"train"}][:200])
    m4 = mine(store, "v4", out, until=T + 700, cfg=MineConfig(eval_share=0.9))
    assert m4["written"] and m4["counts"]["eval"] == 0

    # the card of v1, against the files
    card = (out / "v1" / "CARD.md").read_text()
    sft, pairs, rejects = (load_jsonl(out / "v1" / f"{f}.jsonl") for f in ("sft", "pairs", "rejects"))
    for name, rows in (("sft.jsonl", sft), ("pairs.jsonl", pairs), ("eval.jsonl", ev1), ("rejects.jsonl", rejects)):
        assert f"| {name} | {len(rows):,} |" in card, name
    for src, k in Counter(r["meta"]["mined_from"] for r in sft + pairs).items():
        assert f"| {src.replace('_', chr(92) + '_')} | {k:,} |" in card, src
    for why, k in Counter(r["reason"] for r in rejects).items():
        assert f"| {why.replace('_', chr(92) + '_')} | {k:,} |" in card, why
    assert "Action: **redact**" in card and f"{len(ev1):,} held-out prompt(s)" in card and "target share 10%" in card
    assert "No model version is recorded as trained on this version yet" in card
    store.close()


# ---- 3: diff, against sets computed here ------------------------------------------------------------------
def _sft(q: str, a: str) -> dict:
    from ptdata.records import Record

    return Record("sft", [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                  meta={"interaction_ids": [q]}).to_dict()


def _pair(q: str, c: str, r: str) -> dict:
    from ptdata.records import Record

    return Record("preference", [{"role": "user", "content": q}], [{"role": "assistant", "content": c}],
                  [{"role": "assistant", "content": r}]).to_dict()


def test_diff_of_two_versions(tmp_path):
    a, b = tmp_path / "v1", tmp_path / "v2"
    a.mkdir(), b.mkdir()
    sft_a = {f"question {k}": f"answer {k}" for k in range(10)}
    sft_b = {f"question {k}": (f"answer {k}" if k < 7 else f"a new answer {k}") for k in range(4, 15)}
    pairs_a = {f"pair {k}": (f"good {k}", f"bad {k}") for k in range(6)}
    pairs_b = {f"pair {k}": (f"good {k}", f"bad {k}" if k != 3 else "worse 3") for k in range(2, 9)}
    write_jsonl(a / "sft.jsonl", [_sft(q, x) for q, x in sft_a.items()])
    write_jsonl(b / "sft.jsonl", [_sft(q, x) for q, x in sft_b.items()] + [_sft("Question 4!", "answer 4")])  # same key, same content
    write_jsonl(a / "pairs.jsonl", [_pair(q, *cr) for q, cr in pairs_a.items()])
    write_jsonl(b / "pairs.jsonl", [_pair(q, *cr) for q, cr in pairs_b.items()])
    r = run_cli("flywheel", "diff", a, b, "--json")
    d = ok(r)["files"]
    for name, x, y in (("sft", sft_a, sft_b), ("pairs", pairs_a, pairs_b)):
        added, removed = sorted(set(y) - set(x)), sorted(set(x) - set(y))
        changed = sorted(k for k in set(x) & set(y) if x[k] != y[k])
        f = d[name]
        assert (f["added"], f["removed"], f["changed"], f["unchanged"]) == \
            (len(added), len(removed), len(changed), len(set(x) & set(y)) - len(changed)), name
        assert f["records_a"] == len(x) and f["records_b"] == len(y) + (name == "sft")
    from ptdata.flywheel.diff import record_key
    from ptdata.records import Record

    key = lambda q: record_key(Record("sft", [{"role": "user", "content": q}, {"role": "assistant", "content": "x"}]))  # noqa: E731
    assert d["sft"]["keys"]["changed"] == sorted(key(f"question {k}") for k in (7, 8, 9))
    assert d["sft"]["keys"]["added"] == sorted(key(f"question {k}") for k in range(10, 15))
    assert "eval" not in d
    lines = run_cli("flywheel", "diff", a, b).stdout.splitlines()
    assert lines[1].split()[:5] == ["sft", "5", "4", "3", "3"] and lines[2].split()[:5] == ["pairs", "3", "2", "1", "3"]
    bad = run_cli("flywheel", "diff", a, tmp_path / "nope")
    assert bad.returncode == 1 and "not a version folder" in bad.stderr


# ---- 4: the report over time, in headless Chromium -----------------------------------------------------------
XSS = "m-2<script>alert(1)</script>"


def test_report_per_week_in_a_browser(tmp_path):
    from ptdata.flywheel.evaluate import record
    from ptdata.flywheel.mine import MineConfig, mine
    from ptdata.flywheel.report import iso_week, write_report

    from .review_helpers import chrome, need_browser

    need_browser()
    url = f"sqlite:///{tmp_path / 'fw.sqlite'}"
    store = Store(url)
    # three ISO weeks: m-1 serves weeks 1-2, the <script> label serves week 3
    T = 1_798_761_600.0  # 2027-01-01 00:00 UTC, a Friday
    plan = {("m-1", 0): 30, ("m-1", 7): 24, (XSS, 14): 20}
    rows, events, expect = [], [], {}
    n = 0
    for (mv, day), count in plan.items():
        acc = {"with_fb": 0, "up": 0, "down": 0, "ratings": [], "corr": 0}
        for k in range(count):
            n += 1
            t = T + day * 86400 + k * 60
            iid = f"r{n:04d}"
            rows.append(_interaction(iid, t, [{"role": "user", "content": f"week question {n}?"}], f"week answer {n}.", None, mv))
            kinds = []
            if k % 3 == 0:
                kinds.append(("thumbs", "up"))
            if k % 5 == 1:
                kinds.append(("thumbs", "down"))
            if k % 4 == 2:
                kinds.append(("rating", 1 + k % 5))
            if k % 6 == 5:
                kinds.append(("correction", f"fixed answer {n}."))
            for j, (kind, value) in enumerate(kinds):
                events.append({"event_id": f"{iid}-{j}", "interaction_id": iid, "created_at": t, "kind": kind, "value": value})
            acc["with_fb"] += bool(kinds)
            acc["up"] += ("thumbs", "up") in kinds
            acc["down"] += ("thumbs", "down") in kinds
            acc["ratings"] += [v for kd, v in kinds if kd == "rating"]
            acc["corr"] += any(kd == "correction" for kd, _ in kinds)
        expect[(mv, iso_week(T + day * 86400))] = (count, acc)
    with store.engine.begin() as c:
        c.execute(interactions_t.insert(), rows)
        c.execute(feedback_t.insert(), events)
    m = mine(store, "d1", tmp_path / "data", until=T + 30 * 86400, cfg=MineConfig(eval_share=0.0))
    mined_by: Counter = Counter()
    week_of = {r["id"]: (r["model_version"], iso_week(r["created_at"])) for r in rows}
    for f in ("sft", "pairs"):
        for r in load_jsonl(tmp_path / "data" / "d1" / f"{f}.jsonl"):
            mined_by[week_of[r["meta"]["interaction_ids"][0]]] += 1
    assert sum(mined_by.values()) == m["counts"]["sft"] + m["counts"]["pairs"] > 0
    store.deploy(XSS, "d1")
    summary = {"n": 40, "wins": 25, "ties": 6, "losses": 9, "win_rate": round(28 / 40, 4), "ci_low": 0.5446, "ci_high": 0.8191,
               "gate": 0.55, "passed": True}
    record(store, summary, "d1", XSS, "m-1", "judge-<b>model</b>")
    out = tmp_path / "report.html"
    s = write_report(store, out)
    store.close()

    fmt = lambda v: "-" if v is None else str(v)  # noqa: E731
    want = []
    for (mv, wk), (count, acc) in expect.items():
        thumbs = acc["up"] + acc["down"]
        want.append([mv, wk, f"{count:,}", fmt(round(acc["with_fb"] / count, 4)),
                     fmt(round(acc["up"] / thumbs, 4) if thumbs else None),
                     fmt(round(sum(acc["ratings"]) / len(acc["ratings"]), 4) if acc["ratings"] else None),
                     fmt(round(acc["corr"] / count, 4)), f"{mined_by[(mv, wk)]:,}"])
    assert len({w[1] for w in want}) == 3
    html_text = out.read_text()
    assert "<script>" not in html_text and "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    assert "<b>model" not in html_text
    with chrome(1280, 1700) as d:
        from selenium.webdriver.common.by import By

        d.get(out.as_uri())
        got = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in d.find_elements(By.CSS_SELECTOR, "#weekly tr")][1:]
        assert got == want
        models = {tr.find_elements(By.TAG_NAME, "td")[0].text: [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                  for tr in d.find_elements(By.CSS_SELECTOR, "#models tr")[1:]}
        assert models[XSS][-1] == "d1" and models["m-1"][-1] == "-"  # the label shows as text; trained on d1
        step = [td.text for td in d.find_elements(By.CSS_SELECTOR, "#consecutive tr")[1].find_elements(By.TAG_NAME, "td")]
        assert step == ["m-1", XSS, "d1", "d1", "40", "25 / 6 / 9", "0.700 [0.545, 0.819]", "pass (gate 0.55)"]
        assert d.find_elements(By.CSS_SELECTOR, "script") == [] and d.execute_script("return document.title") == "ptdata flywheel report"
        assert "judge-<b>model</b>" in d.find_element(By.ID, "evaluations").text
        where = ROOT / "docs" / "flywheel" if os.environ.get("PTDATA_SCREENSHOTS") == "1" else tmp_path
        where.mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(where / "report.png"))
        assert (where / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert s["weekly"][0]["model_version"] == "m-1" and orjson.loads(orjson.dumps(s))["consecutive"][0]["to"] == XSS


# ---- 5: the new tables on SQLite and PostgreSQL -------------------------------------------------------------
def test_migration_5_and_the_loop_tables_on_both_stores(store_url):  # noqa: F811
    from ptdata.flywheel.evaluate import record
    from ptdata.flywheel.mine import MineConfig, mine
    from ptdata.flywheel.report import loop_stats

    import tempfile

    store = Store(store_url)
    assert store.schema_version() == 5
    with store.engine.connect() as c:
        assert c.execute(sa.text("select count(*) from schema_migrations")).scalar() == 5
        for t in ("conversation_split", "evaluations", "deployments"):
            assert c.execute(sa.text(f"select count(*) from {t}")).scalar() == 0
    rows = [_interaction(f"p{k:03d}", 1_800_000_000 + k, [{"role": "user", "content": f"pg question {k}?"}],
                         f"pg answer {k}.", f"c{k // 2}") for k in range(80)]
    with store.engine.begin() as c:
        c.execute(interactions_t.insert(), rows)
        c.execute(feedback_t.insert(), [{"event_id": f"e{r['id']}", "interaction_id": r["id"], "created_at": r["created_at"],
                                         "kind": "thumbs", "value": "up"} for r in rows])
    with tempfile.TemporaryDirectory() as tmp:
        m = mine(store, "d1", Path(tmp), until=1_800_000_100, cfg=MineConfig(eval_share=0.3))
        ev = load_jsonl(Path(tmp) / "d1" / "eval.jsonl")
    assert m["counts"]["eval"] == len(ev) > 0 and m["counts"]["sft"] == 80 - len(ev)
    convs = Counter(r["meta"]["conversation"] for r in ev)
    assert set(convs.values()) == {2}  # both turns of a conversation held out together
    assert len(store.held_out_keys()) == len(convs)
    assert store.deploy("m-2", "d1") == "created" and store.deploy("m-2", "d1") == "same"
    with pytest.raises(Exception, match="no such dataset version"):
        store.deploy("m-3", "d2")
    more = [_interaction(f"q{k:03d}", 1_800_000_200 + k, [{"role": "user", "content": f"more {k}?"}], f"more {k}.", None)
            for k in range(10)]
    with store.engine.begin() as c:
        c.execute(interactions_t.insert(), more)
        c.execute(feedback_t.insert(), [{"event_id": f"e{r['id']}", "interaction_id": r["id"], "created_at": r["created_at"],
                                         "kind": "thumbs", "value": "up"} for r in more])
    with tempfile.TemporaryDirectory() as tmp:
        assert mine(store, "d2", Path(tmp), until=1_800_000_300, cfg=MineConfig(eval_share=0.0))["written"]
    with pytest.raises(Exception, match="recorded as trained on 'd1'"):
        store.deploy("m-2", "d2")
    record(store, {"n": 3, "wins": 2, "ties": 1, "losses": 0, "win_rate": 0.8333, "ci_low": 0.3, "ci_high": 0.97,
                   "gate": None, "passed": None, "note": "\u0000 kept"}, "d1", "m-2", "m1", "j")
    st = loop_stats(store)
    assert st["consecutive"][0]["evaluation"]["wins"] == 2 and st["model_versions"]["m1"]["records_mined"] == 80 - len(ev) + 10
    assert store.migrate() == 5 and store.schema_version() == 5
    store.close()


# ---- 6: failures: a candidate that errors loses, a judge that cannot be parsed leaves the prompt out ----------
def test_eval_counts_candidate_errors_as_losses_and_leaves_unjudged_prompts_out():
    from typer.testing import CliRunner

    from ptdata.cli import app
    from ptdata.errors import InputError
    from ptdata.flywheel.evaluate import EvalItem, evaluate
    from ptdata.llm import make_llm
    from ptdata.llm.serve import Fault

    items = [EvalItem(f"i{k}", [{"role": "user", "content": question(k)}], v1_answer(k)) for k in range(1, 9)]
    # the candidate fails on question 3; the judge's answers about question 5 are never JSON
    cand_app = make_upstream(by_number(v2_answer), model_name="c", faults=[Fault("500", match="Question 3:", times=99)])
    judge_app = make_upstream(scripted(Judge()), model_name="j", faults=[Fault("bad_answer", match="Question 5:", times=99)])
    with LoopbackServer(cand_app) as c, LoopbackServer(judge_app) as j:
        cfg = lambda url, m: make_llm({"model": m, "base_url": url, "cache_dir": None, "max_retries": 0, "temperature": 0})  # noqa: E731
        s = evaluate(items, cfg(c.base_url, "c"), cfg(j.base_url, "j"), retries=1, gate=0.55)
    # 1..8 without 3 (error: a loss) and 5 (unjudged): 4 and 8 position-biased ties, the rest wins
    assert (s["wins"], s["ties"], s["losses"], s["n"]) == (4, 2, 1, 7)
    assert (s["candidate_errors"], s["unjudged"], s["judge_failures"]) == (1, 1, {"judge_malformed": 1})
    assert s["win_rate"] == round(5 / 7, 4) and s["passed"] is True
    assert [w["interaction_id"] for w in s["worst_regressions"]] == ["i3"] and s["worst_regressions"][0]["candidate"] is None
    # the command line refuses what it cannot run, in one error line each
    runner = CliRunner()
    for args, needle in ((["--candidate", "http://x/v1", "--candidate-model", "m", "--judge-url", "http://x/v1", "--judge-model", "j"],
                          "--from-store (one of them)"),
                         (["--candidate", "x", "--candidate-model", "m", "--from-store", "--judge-url", "http://x/v1",
                           "--judge-model", "j"], "OpenAI-compatible base URL"),
                         (["--candidate", "http://x/v1", "--candidate-model", "m", "--from-store"], "--judge-url/--judge-model"),
                         (["--candidate", "http://x/v1", "--candidate-model", "m", "--from-store", "--judge-url", "http://x/v1",
                           "--judge-model", "j", "--gate", "1.5"], "--gate 1.5")):
        r = runner.invoke(app, ["flywheel", "eval", "no-such-store.sqlite", *args])
        assert isinstance(r.exception, InputError) and needle in str(r.exception), (args, r.exception)
