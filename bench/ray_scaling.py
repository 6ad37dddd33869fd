"""Ray executor scaling: recipe (a) of bench/curation.py (length filter + exact dedup) on Alpaca
xN with the local executor and the Ray executor, 1 and 2 workers, in one run.

The Ray runs use a local Ray instance started by the benchmark (ray.init with 2 CPUs; its
start-up is excluded, as a cluster is started once and reused).
Run: .venv/bin/python bench/ray_scaling.py --copies 10 --results bench/RESULTS.md
"""
from __future__ import annotations

import argparse
import gzip
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "_work"
sys.path.insert(0, str(ROOT / "bench"))
from convert import update_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--results", type=Path)
    a = ap.parse_args()
    import ray

    from ptdata.ops.dedup import ExactDedup
    from ptdata.ops.filters import LengthFilter
    from ptdata.pipeline import Input, Output, Recipe, run
    from ptdata.pipeline.ray_exec import run_ray

    src = WORK / f"ray_x{a.copies}.jsonl"
    if not src.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        src.write_bytes(gzip.open(ROOT.parent / "shared" / "data" / "alpaca_en_52k.jsonl.gz", "rb").read() * a.copies)
    n = sum(1 for _ in open(src, "rb"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = []
    for executor in ("local", "ray"):
        for workers in (1, 2):
            out = WORK / f"ray_out_{executor}_{workers}"
            shutil.rmtree(out, ignore_errors=True)
            recipe = Recipe(inputs=[Input(str(src), format="alpaca")],
                            ops=[LengthFilter(field="all", min_chars=10, max_chars=10000), ExactDedup(keep="first")],
                            output=Output(dir=str(out), report=False), name="a")
            t = time.perf_counter()
            # the segment plan locally too: the Ray executor has no identical-line plan
            res = run(recipe, workers=workers) if executor == "local" else run_ray(recipe, workers=workers)
            wall = time.perf_counter() - t
            rows.append((executor, workers, wall, res.kept, res.rejected))
            print(rows[-1], flush=True)
    base = {w: wall for e, w, wall, _, _ in rows if e == "local"}
    table = "\n".join(f"| {e} | {w} | {wall:.1f} | {n / wall:,.0f} | {base[w] / wall:.2f} | {k:,} | {r:,} |"
                      for e, w, wall, k, r in rows)
    text = (f"### ray scaling: recipe (a) on Alpaca x{a.copies} ({n:,} records)\n\n"
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; command: "
            f"`.venv/bin/python bench/ray_scaling.py --copies {a.copies} --results bench/RESULTS.md`; Ray 2.60 local "
            "instance with 2 CPUs (start-up excluded).\n\n"
            "| executor | workers | wall s | records/s | speed vs local, same workers | kept | rejected |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n" + table + "\n")
    print(text)
    if a.results:
        update_results(a.results, "ray", text)


if __name__ == "__main__":
    main()
