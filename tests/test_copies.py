"""Identical input lines decoded once (pipeline/copies.py): the same files as the segment-by-segment
plan, byte for byte, on inputs with copies of good and bad lines across files; resumable after kill -9."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from ptdata.ops.decontam import Decontaminate
from ptdata.ops.dedup import ExactDedup, NearDedup
from ptdata.ops.filters import LengthFilter, RefusalFilter
from ptdata.ops.language import LanguageId
from ptdata.ops.pii import Pii
from ptdata.ops.quality import QualityScores
from ptdata.pipeline import Input, Output, Recipe, run
from ptdata.pipeline.rejects import write_full_rejects

from .conftest import shared


def _alpaca(n: int) -> list[bytes]:
    return gzip.open(shared("alpaca_en_52k.jsonl.gz")).read().splitlines()[:n]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """Two alpaca files (one gzipped) and a native file, with copies within and across files of
    good lines, validation rejects, broken JSON and GSM8K questions; blank lines; planted PII."""
    d = tmp_path_factory.mktemp("copies")
    rows = _alpaca(2400)
    gsm = [orjson.loads(x) for x in gzip.open(shared("gsm8k_test.jsonl.gz")).read().splitlines()[:30]]
    planted = [orjson.dumps({"instruction": g["question"], "input": "", "output": "Let me think."}) for g in gsm]
    bad = [b'{"instruction": "Say hi", "input": "", "output": ""}', b'{"instruction": "broken', b'{"instruction": 3, "output": "x"}',
           orjson.dumps({"instruction": "Mail me", "input": "", "output": "Write to jane.doe@example.com or call +1 415 555 0100."})]
    a = rows[:1500] + rows[:600] + bad * 3 + planted + [b"", b"   "] + rows[100:400] + planted[:10]
    b = rows[1500:] + rows[200:500] + bad + rows[1500:1700]
    (d / "in").mkdir()
    (d / "in" / "a.jsonl").write_bytes(b"\n".join(a) + b"\n")
    with gzip.open(d / "in" / "b.jsonl.gz", "wb") as f:
        f.write(b"\n".join(b))
    native = []
    for i, line in enumerate(rows[:200]):
        r = orjson.loads(line)
        rec = {"kind": "sft", "messages": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"] or "ok"}],
               "meta": {"source": f"crawl-{i % 7}"} if i % 2 else {}}
        native.append(orjson.dumps(rec))
    (d / "native.jsonl").write_bytes(b"\n".join(native + native[:120] + native[50:80]) + b"\n")
    bench = d / "bench.jsonl"
    bench.write_bytes(b"\n".join(orjson.dumps({"question": g["question"], "answer": g["answer"]}) for g in gsm) + b"\n")
    return {"dir": d, "bench": bench, "lines": len(a) + len(b) + len(native) + 150}


def _ops(name: str, bench: Path) -> list:
    return {
        "filters+exact": [LengthFilter(min_chars=20), ExactDedup(keep="first")],
        "pii+near": [Pii(action="redact"), NearDedup(threshold=0.8)],
        "filters only": [LanguageId(), LengthFilter(min_chars=20), RefusalFilter(), Pii(action="reject")],
        "decontam+scores+best": [Decontaminate(benchmarks=[str(bench)]), QualityScores(), ExactDedup(keep="best", field="prompt")],
    }[name]


def _outputs(res) -> tuple[bytes, bytes, dict]:
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k != "seconds"}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return res.kept_path.read_bytes(), res.rejects_path.read_bytes(), strip(orjson.loads(res.stats_path.read_bytes()))


@pytest.mark.parametrize("recipe", ["filters+exact", "pii+near", "filters only", "decontam+scores+best"])
def test_copies_plan_writes_the_same_files(inputs, tmp_path, recipe):
    d = inputs["dir"]
    outs = {}
    for mode in ("never", "always"):
        r = Recipe(inputs=[Input(str(d / "in" / "*")), Input(str(d / "native.jsonl"))], ops=_ops(recipe, inputs["bench"]),
                   output=Output(dir=str(tmp_path / mode)), shard_bytes=150_000, batch_size=300)
        outs[mode] = run(r, workers=2, copies=mode)
        assert (tmp_path / mode / ".work" / "lines" / "table.bin").exists() == (mode == "always")
    never, always = _outputs(outs["never"]), _outputs(outs["always"])
    assert always[0] == never[0]
    assert always[1] == never[1]
    assert always[2] == never[2]
    # copies of a kept record are listed by reference; restored, the rows are what `full` writes
    r = Recipe(inputs=[Input(str(d / "in" / "*")), Input(str(d / "native.jsonl"))], ops=_ops(recipe, inputs["bench"]),
               output=Output(dir=str(tmp_path / "full"), rejects="full"), shard_bytes=150_000, batch_size=300)
    full = _outputs(run(r, workers=2, copies="always"))
    assert full[0] == always[0]
    write_full_rejects(tmp_path / "always", tmp_path / "restored.jsonl")
    assert (tmp_path / "restored.jsonl").read_bytes() == full[1]
    n_refs = always[1].count(b'"copy_of":')
    assert (n_refs > 500) == (recipe != "filters only") and b'"copy_of":' not in full[1]
    st = outs["always"].stats
    assert st["records_in"] == st["kept"] + st["rejected"] == inputs["lines"] - 2  # the two blank lines are not records
    rejects = [orjson.loads(x) for x in always[1].splitlines()]
    assert len(rejects) == st["rejected"]
    # copies keep their own place: no two rejects share a file and line (rows with their own
    # meta.source, "crawl-N", keep it, copies or not)
    places = [(r["source"], r.get("line")) for r in rejects if "crawl-" not in r["source"]]
    kept = [orjson.loads(x) for x in always[0].splitlines()]
    assert len(kept) == st["kept"]
    if recipe != "filters only":
        assert len(set(places)) == len(places)
    if recipe == "decontam+scores+best":
        assert sum(1 for r in rejects if r["reason"] == "contaminated") == 30 + 10  # every planted line, copies too
        assert len(st["contamination"]) == 30


def test_auto_takes_the_plan_only_with_enough_copies(tmp_path):
    rows = _alpaca(3000)
    uniq, dup = tmp_path / "uniq.jsonl", tmp_path / "dup.jsonl"
    uniq.write_bytes(b"\n".join(rows) + b"\n")
    dup.write_bytes(b"\n".join(rows + rows[:500]) + b"\n")
    res = {}
    for src, used in ((uniq, False), (dup, True)):
        out = tmp_path / src.stem
        res[used] = run(Recipe(inputs=[Input(str(src))], ops=[ExactDedup()], output=Output(dir=str(out), report=False),
                               shard_bytes=200_000), workers=2)
        assert (out / ".work" / "lines" / "table.bin").exists() == used
    ids = {u: [orjson.loads(x)["id"] for x in r.kept_path.read_bytes().splitlines()] for u, r in res.items()}
    assert ids[True] == ids[False] and len(ids[True]) > 2900
    assert res[True].rejected == res[False].rejected + 500


def test_a_line_repeated_across_inputs_is_read_by_each_input(tmp_path):
    """The same line in two inputs read with different formats is not a copy: here input A keeps
    it twice, and input B (GSM8K-style qa fields) rejects it."""
    line = b'{"instruction": "Name a color.", "input": "", "output": "Blue."}'
    (tmp_path / "a.jsonl").write_bytes(line + b"\n" + line + b"\n")
    (tmp_path / "b.jsonl").write_bytes(line + b"\n")
    res = run(Recipe(inputs=[Input(str(tmp_path / "a.jsonl")), Input(str(tmp_path / "b.jsonl"), format="qa")],
                     ops=[LengthFilter(min_chars=1)], output=Output(dir=str(tmp_path / "out"), report=False), base_dir=tmp_path),
                  workers=1, copies="always")
    kept = [orjson.loads(x) for x in res.kept_path.read_bytes().splitlines()]
    assert [k["meta"]["source"] for k in kept] == ["a.jsonl:1", "a.jsonl:2"]  # relative to the recipe's directory
    [rej] = [orjson.loads(x) for x in res.rejects_path.read_bytes().splitlines()]
    assert (Path(rej["source"]).name, rej["line"], rej["reason"]) == ("b.jsonl", 1, "missing_field")


RECIPE = """
name: copies-resume
inputs: [{{path: {inp}}}]
shard_bytes: 300000
batch_size: 500
ops:
  - length_filter: {{min_chars: 20}}
  - pii: {{action: redact}}
  - exact_dedup: {{}}
output: {{dir: {out}}}
"""


def _cli(recipe: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from ptdata.cli import main; main()", "run", str(recipe), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _outcomes(work: Path) -> int:
    return len(list((work / "seg0").glob("*.outcome")))


def _shards_written(work: Path) -> int:
    p = work / "stats.stream.jsonl"
    return p.read_bytes().count(b"\n") if p.exists() else 0


def _after_hashing(work: Path) -> int:
    return 1 if (work / "lines" / "jobs.bin").exists() else 0


@pytest.mark.parametrize("kill_at", [(_after_hashing, 1), (_outcomes, 2), (_shards_written, 4)])
def test_copies_plan_resumes_after_kill(tmp_path, kill_at):
    rows = _alpaca(9000)
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(b"\n".join(rows * 3 + rows[:3000]) + b"\n")
    for name in ("ref", "res"):
        (tmp_path / f"{name}.yaml").write_text(RECIPE.format(inp=inp, out=tmp_path / name))
    p = _cli(tmp_path / "ref.yaml")
    assert p.wait(timeout=600) == 0, p.stderr.read().decode()
    done, n = kill_at
    p = _cli(tmp_path / "res.yaml")
    work = tmp_path / "res" / ".work"
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if work.exists() and done(work) >= n:
            break
        time.sleep(0.005)
    assert p.poll() is None, "the run finished before it could be interrupted"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert not (tmp_path / "res" / "kept.jsonl").exists()
    p = _cli(tmp_path / "res.yaml")
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err.decode()
    for f in ("kept.jsonl", "rejects.jsonl"):
        assert (tmp_path / "res" / f).read_bytes() == (tmp_path / "ref" / f).read_bytes(), f
    ref = json.loads((tmp_path / "ref" / "stats.json").read_text())
    res = json.loads((tmp_path / "res" / "stats.json").read_text())
    assert [(o["op"], o["in"], o["kept"], o["dropped"]) for o in res["ops"]] == [(o["op"], o["in"], o["kept"], o["dropped"]) for o in ref["ops"]]
    assert res["records_in"] == 30000 and res["kept"] + res["rejected"] == 30000


@pytest.mark.parametrize("op", ["exact", "near"])
def test_reference_rows_and_full_rows_mixed_in_a_shard(tmp_path, monkeypatch, op):
    """Later copies of kept records (reference rows, built as byte matrices) and other drops of
    the same op (full rows, from templates) interleaved within shards: the same file as the
    segment plan, and the full rows restored from the references."""
    from ptdata.pipeline import copies as plan

    rows = _alpaca(700)
    lines = []
    for i, line in enumerate(rows):
        lines.append(line)
        r = orjson.loads(line)
        if i % 2 and len(r["output"].split()) > 12:  # the same text once normalized (exact), or one word changed (near)
            words = r["output"].split()
            words[len(words) // 2] = "banana" if op == "near" else words[len(words) // 2]
            lines.append(orjson.dumps({**r, "output": " ".join(words).upper() + " !"}))
        if i % 3 == 0:
            lines.append(rows[i // 2])  # a copy of an earlier line
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(b"\n".join(lines) + b"\n")
    seen = []
    real = plan._drop_rows

    def spy(ctx, g_op, maps, sp, pos, col, drops, own):
        seen.append((bool(drops.refs.any()), bool((~drops.refs).any())))
        return real(ctx, g_op, maps, sp, pos, col, drops, own)
    monkeypatch.setattr(plan, "_drop_rows", spy)
    dedup = ExactDedup(keep="first") if op == "exact" else NearDedup(threshold=0.5, keep="first")
    out = {}
    for mode in ("never", "always", "full"):
        r = Recipe(inputs=[Input(str(inp))], ops=[dedup], shard_bytes=40_000, batch_size=100,
                   output=Output(dir=str(tmp_path / mode), report=False, rejects="full" if mode == "full" else "compact"))
        out[mode] = _outputs(run(r, workers=1, copies="always" if mode == "full" else mode))
    assert (True, True) in seen  # a shard with both kinds
    assert out["always"] == out["never"]
    write_full_rejects(tmp_path / "always", tmp_path / "restored.jsonl")
    assert (tmp_path / "restored.jsonl").read_bytes() == out["full"][1]
    rej = [orjson.loads(x) for x in out["always"][1].splitlines()]
    assert sum("copy_of" in x for x in rej) >= len(lines) - len(set(lines)) > 200  # every copy of a kept line, at least
    assert sum("record" in x for x in rej) > 50


def test_full_rejects_when_every_duplicate_is_a_copy(tmp_path):
    """Every dropped line is a later copy of a kept one (the decision on distinct records drops
    none): with rejects written in full, each row has its record, as the segment plan writes it."""
    rows = _alpaca(400)
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(b"\n".join(rows + rows[::2] + rows[::3]) + b"\n")
    out = {}
    for mode in ("never", "always"):
        r = Recipe(inputs=[Input(str(inp))], ops=[ExactDedup(keep="first")], shard_bytes=50_000,
                   output=Output(dir=str(tmp_path / mode), report=False, rejects="full"))
        out[mode] = _outputs(run(r, workers=2, copies=mode))
    assert out["always"] == out["never"]
    rej = [orjson.loads(x) for x in out["always"][1].splitlines()]
    assert len(rej) >= 200 + 134 and all("record" in x and "copy_of" not in x for x in rej)
