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
