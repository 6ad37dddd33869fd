"""Distillation on GSM8K: offline filtering of controlled samples (exact kept set, precision and
coverage), two live rounds against loopback teachers with an interruption and a resume, the
calibration report against an independent computation, and merging rules."""
from __future__ import annotations

import gzip
import itertools
import signal
import sys

import orjson
import pytest

from ptdata.distill import extractor, merge
from ptdata.distill.answers import number
from ptdata.llm.serve import LoopbackServer, make_app
from ptdata.reader import read_records
from ptdata.records import Record

from .conftest import run_cli, shared
from .llm_helpers import scripted

N = 300


@pytest.fixture(scope="module")
def gsm() -> list[dict]:
    with gzip.open(shared("gsm8k_train.jsonl.gz"), "rb") as f:
        return [orjson.loads(x) for x in itertools.islice(f, N)]


def final(ans: str) -> str:
    return ans.rsplit("####", 1)[1].strip().replace(",", "")


def wrong(ans: str, d: int) -> str:
    x = final(ans)
    return ans.rsplit("####", 1)[0] + f"#### {int(float(x)) + d}"


def boxed(ans: str) -> str:
    return ans.rsplit("####", 1)[0] + f"So the answer is $\\boxed{{{final(ans)}}}$."


PATTERNS = {  # i % 6 -> (samples as (kind, d), majority share, majority correct)
    0: ([("ok", 0)] * 5, 1.0, True),
    1: ([("ok", 0), ("boxed", 0), ("ok", 0), ("ok", 0), ("bad", 1)], 0.8, True),
    2: ([("bad", 1), ("ok", 0), ("boxed", 0), ("ok", 0), ("bad", 2)], 0.6, True),
    3: ([("ok", 0), ("bad", 1), ("bad", 1), ("ok", 0), ("bad", 1)], 0.6, False),
    4: ([("bad", 1), ("ok", 0), ("bad", 1), ("ok", 0), ("bad", 2)], 0.4, False),
    5: ([("ok", 0), ("bad", 1), ("bad", 2), ("bad", 3), ("bad", 4)], 0.2, True),
}


def sample_text(ans: str, kind: str, d: int) -> str:
    return ans if kind == "ok" else boxed(ans) if kind == "boxed" else wrong(ans, d)


@pytest.fixture(scope="module")
def samples_file(gsm, tmp_path_factory):
    path = tmp_path_factory.mktemp("distill") / "samples.jsonl"
    rows = []
    for i, r in enumerate(gsm):
        spec, _, _ = PATTERNS[i % 6]
        rows.append({"prompt": r["question"], "reference": final(r["answer"]),
                     "samples": [{"text": sample_text(r["answer"], kind, d), "mean_logprob": -0.2 if kind != "bad" else -1.5}
                                 for kind, d in spec]})
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in rows))
    return path


def test_answer_extraction():
    assert number("Natalia sold 72 clips.\n#### 72") == "72"
    assert number("so $\\boxed{1,000.50}$ dollars") == "1000.5"
    assert number("It costs $18.00 in total") == "18"
    assert number("no digits") is None
    assert extractor("choice")("The answer is (C).") == "C"
    assert extractor("choice")("B") == "B"
    assert extractor("regex:ANSWER=(\\w+)")("x ANSWER=foo y ANSWER=bar") == "bar"
    assert extractor("exact")("  Paris. ") == extractor("exact")("paris")


@pytest.mark.parametrize("threshold", [0.6, 0.8, 0.4])
def test_offline_consistency_exact_kept_set(gsm, samples_file, tmp_path, threshold):
    out = tmp_path / "o"
    r = run_cli("distill", samples_file, "-o", out, "--offline", "--threshold", str(threshold), "-q")
    assert r.returncode == 0, r.stderr
    expect = {g["question"] for i, g in enumerate(gsm) if PATTERNS[i % 6][1] >= threshold}
    labels = [rec for rec, _ in read_records(out / "train.jsonl")]
    assert {x.messages[-2]["content"] for x in labels} == expect
    kept_correct = sum(PATTERNS[i % 6][2] for i in range(N) if PATTERNS[i % 6][1] >= threshold)
    cal = orjson.loads((out / "calibration.json").read_bytes())
    row = next(t for t in cal["calibration"]["table"] if t["threshold"] == threshold)
    assert row["kept"] == len(expect)
    assert row["precision"] == round(kept_correct / len(expect), 6)
    assert row["coverage"] == round(len(expect) / N, 6)
    # the kept label is the best sample of the majority answer, with its provenance
    for x in labels:
        d = x.meta["distill"]
        assert d["answer"] == number(x.messages[-1]["content"])
        assert d["threshold"] == threshold and d["round"] == 1 and d["estimators"]["consistency"] >= threshold
        assert d["prompt_id"] == Record("prompt", x.messages[:-1]).id
    # nothing lost
    rej = [orjson.loads(x) for x in (out / "rejects.jsonl").read_bytes().splitlines()]
    assert len(labels) + len(rej) == N and {x["reason"] for x in rej} <= {"low_confidence"}


def test_offline_estimators_combine(gsm, samples_file, tmp_path):
    """consistency + verifier (all-of) keeps only correct majorities; the log-prob of the chosen
    sample (wrong samples are unlikely) drops pattern 3 too; a weighted mean sits between."""
    r = run_cli("distill", samples_file, "-o", tmp_path / "v", "--offline", "--estimator", "consistency",
                "--estimator", "verifier", "--threshold", "0.6", "-q")
    assert r.returncode == 0, r.stderr
    kept = {x.messages[-2]["content"] for x, _ in read_records(tmp_path / "v" / "train.jsonl")}
    assert kept == {g["question"] for i, g in enumerate(gsm) if i % 6 in (0, 1, 2)}
    r = run_cli("distill", samples_file, "-o", tmp_path / "l", "--offline", "--estimator", "consistency",
                "--estimator", "logprob", "--threshold", "0.6", "-q")
    assert r.returncode == 0, r.stderr
    labels = [x for x, _ in read_records(tmp_path / "l" / "train.jsonl")]
    assert {x.messages[-2]["content"] for x in labels} == kept
    assert all(x.meta["distill"]["estimators"]["logprob_mean"] == -0.2 for x in labels)
    # weighted: 0.5 * share + 0.5 * exp(-0.2) is 0.909, 0.809, 0.709 for patterns 0-2: 0.8 keeps 0 and 1
    r = run_cli("distill", samples_file, "-o", tmp_path / "w", "--offline", "--estimator", "consistency",
                "--estimator", "logprob", "--combine", "weighted", "--threshold", "0.8", "-q")
    assert r.returncode == 0, r.stderr
    kept_w = {x.messages[-2]["content"] for x, _ in read_records(tmp_path / "w" / "train.jsonl")}
    assert kept_w == {g["question"] for i, g in enumerate(gsm) if i % 6 in (0, 1)}


def test_calibration_report_matches_independent_computation(samples_file, tmp_path):
    r = run_cli("distill", samples_file, "-o", tmp_path / "c", "--offline", "-q")
    assert r.returncode == 0, r.stderr
    cal = orjson.loads((tmp_path / "c" / "calibration.json").read_bytes())["calibration"]
    assert cal["with_reference"] == N
    for row in cal["table"]:
        t = row["threshold"]
        kept = [PATTERNS[i % 6] for i in range(N) if PATTERNS[i % 6][1] >= t]
        assert row["kept"] == len(kept)
        assert row["coverage"] == round(len(kept) / N, 6)
        assert row["precision"] == (round(sum(p[2] for p in kept) / len(kept), 6) if kept else None)
    html = (tmp_path / "c" / "calibration.html").read_text()
    assert html.count("<svg") == 2 and "<polyline" in html
    assert "<tr><td>0.6</td><td>200</td><td>150</td><td>0.667</td><td>0.750</td></tr>" in html


def test_calibration_table_printed(tmp_path):
    """`ptdata distill` prints a few rows of the calibration table (the run's threshold among them,
    marked) when prompts have a reference; five prompts of known confidence and correctness."""
    rows = [("What is 7 + 5?", "12", ["12", "12", "12", "12"]),   # 1.0, majority correct
            ("What is 12 + 3?", "15", ["15", "15", "15", "14"]),  # 0.75, correct
            ("What is 9 + 9?", "18", ["81", "81", "81", "18"]),   # 0.75, wrong
            ("What is 6 + 1?", "7", ["7", "7", "8", "9"]),        # 0.5, correct
            ("What is 4 + 4?", "8", ["9", "9", "8", "10"])]       # 0.5, wrong
    src = tmp_path / "s.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"prompt": p, "reference": ref, "samples": s}) + b"\n" for p, ref, s in rows))
    r = run_cli("distill", src, "-o", tmp_path / "o", "--offline", "--threshold", "0.6", "-q")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    i = lines.index("calibration on 5 prompts with a reference answer:")
    assert lines[i + 1:i + 8] == [
        "  threshold    kept  correct  coverage  precision",
        "       0.00       5        3     1.000      0.600",
        "       0.25       5        3     1.000      0.600",
        "       0.50       5        3     1.000      0.600",
        "       0.60       3        2     0.600      0.667  <- --threshold",
        "       0.75       3        2     0.600      0.667",
        "       1.00       1        1     0.200      1.000",
    ]
    assert lines[i + 8].startswith("train: ")
    # the same figures as calibration.json's rows
    table = orjson.loads((tmp_path / "o" / "calibration.json").read_bytes())["calibration"]["table"]
    assert {t["threshold"]: (t["kept"], t["correct"]) for t in table if t["threshold"] in (0.6, 1.0)} == {0.6: (3, 2), 1.0: (1, 1)}
    # without references there is no table
    src.write_bytes(b"".join(orjson.dumps({"prompt": p, "samples": s}) + b"\n" for p, _, s in rows))
    r = run_cli("distill", src, "-o", tmp_path / "n", "--offline", "--threshold", "0.6", "-q")
    assert r.returncode == 0, r.stderr
    assert "calibration on" not in r.stderr and "threshold " not in r.stderr


def test_merge_rules():
    human = Record("sft", [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "human answer"}])
    old = Record("sft", [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "old teacher"}],
                 meta={"label_source": "teacher"})

    def label(q: str, a: str) -> Record:
        return Record("sft", [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                      meta={"label_source": "teacher", "distill": {"prompt_id": Record("prompt", [{"role": "user", "content": q}]).id}})

    new = [label("q1", "teacher answer"), label("q2", "new teacher"), label("q3", "fresh"), label("q3", "fresh")]
    out, counts = merge([human, old], new)
    assert [m.messages[-1]["content"] for m in out] == ["human answer", "new teacher", "fresh"]
    assert counts == {"added": 1, "replaced": 1, "duplicates": 1, "human_kept": 1}
    out, _ = merge([human, old], new[:1], overwrite_human=True)
    assert out[0].messages[-1]["content"] == "teacher answer"


HOOK = """
import os, signal, sys
log = os.path.join(os.environ["PTDATA_OUT"], "..", "hook.log")
first = not os.path.exists(log)
with open(log, "a") as f:
    f.write(os.environ["PTDATA_ROUND"] + " " + str(sum(1 for _ in open(os.environ["PTDATA_TRAIN"]))) + "\\n")
if first:
    os.kill(int(os.environ["PTDATA_PID"]), signal.SIGKILL)  # an interruption in the middle of the run
"""


def test_two_live_rounds_with_interruption_and_resume(gsm, tmp_path):
    answers = {g["question"]: g["answer"] for g in gsm[:60]}
    index = {q: i for i, q in enumerate(answers)}

    def teacher_a(user, req):  # good on every third question, scattered elsewhere
        ans = answers[user]
        if index[user] % 3 == 0:
            return [ans] * req.sampling.n
        return [wrong(ans, k + 1) for k in range(req.sampling.n)]

    def teacher_b(user, req):
        return [answers[user]] * req.sampling.n

    prompts = tmp_path / "gsm60.jsonl"
    prompts.write_bytes(b"".join(orjson.dumps({"question": q, "answer": a}) + b"\n" for q, a in answers.items()))
    human = tmp_path / "train.jsonl"  # the first 5 questions already have human labels
    human.write_bytes(b"".join(orjson.dumps({"messages": [{"role": "user", "content": q},
                                                          {"role": "assistant", "content": "HUMAN: " + a}]}) + b"\n"
                               for q, a in list(answers.items())[:5]))
    hook = tmp_path / "hook.py"
    hook.write_text(HOOK)
    app_a = make_app(scripted(teacher_a), model_name="teacher-a")
    app_b = make_app(scripted(teacher_b), model_name="teacher-b")
    out = tmp_path / "run"
    n1 = sum(1 for i in range(5, 60) if i % 3 == 0)  # confident in round 1 (18)
    with LoopbackServer(app_a) as a, LoopbackServer(app_b) as b:
        args = ["distill", prompts, "-o", out, "--train", human, "--rounds", "2", "--k", "4", "--threshold", "0.75",
                "--model", "teacher-a", "--base-url", a.base_url, "--base-url", b.base_url,
                "--llm", "cache_dir=null", "--after-round", f"{sys.executable} {hook}", "-q"]
        first = run_cli(*args)
        assert first.returncode == -signal.SIGKILL, first.stderr
        calls_a = app_a.state.log.calls
        assert calls_a == 55 and app_b.state.log.calls == 0
        second = run_cli(*args)
        assert second.returncode == 0, second.stderr
        assert app_a.state.log.calls == calls_a  # round 1 was not asked again
        assert app_b.state.log.calls == 55 - n1  # round 2 retries only the low-confidence prompts
    hook_log = (tmp_path / "hook.log").read_text().split()
    assert hook_log == ["1", str(5 + n1), "1", str(5 + n1), "2", "60"]
    train = [r for r, _ in read_records(out / "train.jsonl")]
    assert len(train) == 60
    by_q = {r.messages[-2]["content"]: r for r in train}
    for i, (q, a) in enumerate(answers.items()):
        r = by_q[q]
        if i < 5:
            assert r.messages[-1]["content"] == "HUMAN: " + a and "distill" not in r.meta
            continue
        d = r.meta["distill"]
        assert r.messages[-1]["content"] == a and r.meta["label_source"] == "teacher"
        want_round = 1 if i % 3 == 0 else 2
        assert (d["round"], d["teacher"]) == (want_round, "teacher-a")
        assert d["threshold"] == 0.75 and d["estimators"]["consistency"] == 1.0
        assert d["prompt_id"] == Record("prompt", r.messages[:-1]).id and d["answer"] == final(a)
    growth = orjson.loads((out / "calibration.json").read_bytes())["growth"]
    assert [(g["train_before"], g["added"], g["train_after"]) for g in growth] == [(5, n1, 5 + n1), (5 + n1, 55 - n1, 60)]
    rej = [orjson.loads(x) for x in (out / "rejects.jsonl").read_bytes().splitlines()]
    assert [x["reason"] for x in rej] == ["has_human_label"] * 5
    # a training-set version per round
    assert [sum(1 for _ in open(out / f"round_{k}" / "train.jsonl")) for k in (1, 2)] == [5 + n1, 60]


def test_distill_as_a_recipe_op(gsm, samples_file, tmp_path):
    """The same filter as a recipe op over the offline samples: the same kept set, every other
    prompt rejected with its reason and estimator values."""
    from ptdata.ops.llm import Distill
    from ptdata.pipeline import Input, Output, Recipe, run

    res = run(Recipe(inputs=[Input(str(samples_file))], ops=[Distill(threshold=0.6)], output=Output(dir=str(tmp_path / "r"))),
              workers=2)
    kept = {x.messages[-2]["content"] for x, _ in read_records(res.kept_path)}
    assert kept == {g["question"] for i, g in enumerate(gsm) if PATTERNS[i % 6][1] >= 0.6}
    assert res.stats["records_in"] == N and res.stats["rejected"] == N - len(kept)
    rej = [orjson.loads(x) for x in res.rejects_path.read_bytes().splitlines()]
    assert {x["reason"] for x in rej} == {"low_confidence"}
    assert all(orjson.loads(x["detail"])["consistency"] < 0.6 for x in rej)


def test_judge_estimator(gsm, tmp_path):
    """A judge's quality score of the chosen sample as the only estimator (scripted judge:
    6/6 for the real worked answer, 2/6 for anything else)."""
    real = {g["answer"] for g in gsm[:12]}

    def judge(user, req):
        ans = user.split("### Answer to rate\n", 1)[1].split("\n### End of answer", 1)[0]
        return orjson.dumps({"quality": 6 if ans in real else 2}).decode()

    rows = [{"prompt": g["question"], "samples": [g["answer"] if i % 2 == 0 else wrong(g["answer"], 1)] * 3}
            for i, g in enumerate(gsm[:12])]
    src = tmp_path / "s.jsonl"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    app = make_app(scripted(judge), model_name="judge")
    with LoopbackServer(app) as srv:
        from ptdata.distill import DistillConfig, Distiller

        cfg = DistillConfig(estimators=["judge"], threshold=0.9, judge={"model": "judge", "base_url": srv.base_url,
                                                                        "cache_dir": None})
        s = Distiller(cfg, tmp_path / "o").run([src], offline=True)
    assert s["labeled"] == 6 and app.state.log.calls == 12
    labels = [x for x, _ in read_records(tmp_path / "o" / "train.jsonl")]
    assert {x.messages[-1]["content"] for x in labels} == {g["answer"] for g in gsm[:12:2]}
    assert all(x.meta["distill"]["estimators"]["judge"] == 1.0 for x in labels)
