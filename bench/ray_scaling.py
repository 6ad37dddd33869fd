"""Ray executor scaling: recipe (a) of bench/curation.py (length filter + exact dedup) on Alpaca
xN with the local executor and the Ray executor, 1 and 2 workers, in one run; then, with
--driver, the Ray driver's own peak RSS against input size (1/4, 1/2, 1 and 2x the distinct
workload of bench/curation.py) for recipe (a), whose exact dedup is decided in partitions by the
actors, recipe (b), whose near dedup is decided in stages by the actors (a final job on an actor holds
the edges), and (c), quality scores and select by score (top 10,000) in two phases (the driver holds
the candidates). --driver-only measures just that, for the recipes given, into its own section.

The Ray runs use a local Ray instance started by the benchmark (ray.init with 2 CPUs; its
start-up is excluded, as a cluster is started once and reused).
Run: .venv/bin/python bench/ray_scaling.py --copies 10 --driver --results bench/RESULTS.md
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
    ap.add_argument("--driver", action="store_true", help="also the driver's peak RSS against input size")
    ap.add_argument("--driver-only", default="", help="recipes (e.g. c): only their driver table, in section ray-driver-<recipes>")
    a = ap.parse_args()
    if a.driver_only:
        text = driver_table(a.driver_only)
        print(text)
        if a.results:
            update_results(a.results, f"ray-driver-{a.driver_only}", text.replace(
                "#### Ray driver memory", f"### Ray driver memory (`bench/ray_scaling.py --driver-only {a.driver_only}`, "
                f"{platform.machine()}, {os.cpu_count()} cores)", 1))
        return
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
            f"`.venv/bin/python bench/ray_scaling.py --copies {a.copies}{' --driver' if a.driver else ''} --results bench/RESULTS.md`; Ray 2.60 local "
            "instance with 2 CPUs (start-up excluded).\n\n"
            "| executor | workers | wall s | records/s | speed vs local, same workers | kept | rejected |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n" + table + "\n")
    ray.shutdown()
    if a.driver:
        text += "\n" + driver_table()
    print(text)
    if a.results:
        update_results(a.results, "ray", text)


def driver_table(recipes: str = "abc") -> str:
    """Each size and recipe in a fresh process (its own Ray instance): the driver's peak RSS."""
    import json
    import subprocess

    sys.path.insert(0, str(ROOT / "bench"))
    from curation import materialize, prepare, workload_lines

    full = prepare("distinct")
    n_full = full["n"]
    src = {label: materialize(WORK / f"cur_distinct_{label.replace('/', 'of')}", lambda n=n: workload_lines("distinct")[:n],
                              peers=False)["alpaca"] for label, n in (("1/4", n_full // 4), ("1/2", n_full // 2))}
    src["1"] = full["alpaca"]
    double = WORK / "ray_distinct_x2.jsonl"
    if not double.exists():
        double.write_bytes(src["1"].read_bytes() * 2)
    src["2"] = double
    rows = []
    for recipe in recipes:
        for label in ("1/4", "1/2", "1", "2"):
            out = WORK / "ray_driver_out"
            shutil.rmtree(out, ignore_errors=True)
            p = subprocess.run([sys.executable, str(ROOT / "bench" / "engines" / "ray_driver.py"), recipe, str(src[label]), str(out), "2"],
                               capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
            shutil.rmtree(out, ignore_errors=True)
            if p.returncode:
                rows.append(f"| ({recipe}) | {label} | | | | failed: {p.stderr.strip().splitlines()[-1][:200] if p.stderr.strip() else p.returncode} | |")
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            n = sum(1 for _ in open(src[label], "rb"))
            skipped = f"{r['too_similar']:,}" if r.get("too_similar") is not None else ""
            rows.append(f"| ({recipe}) | {label} | {n:,} | {r['wall']:.1f} | {r['driver_rss_mb']:,.0f} | {r['driver_rss_at_start_mb']:,.0f} | {skipped} |")
            print(rows[-1], flush=True)
    return ("#### Ray driver memory against input size (distinct workload)\n\n"
            "Each run in a fresh process with its own Ray instance (2 CPUs), 2 workers; the driver's peak RSS is its own "
            "(VmHWM, reset after ray.init), the actors' is not in it. (a): exact dedup decided in partitions by the actors; (b): near dedup "
            "decided in stages by the actors, a final job on an actor holding the edges (O(duplicates)), the driver only counts and the report; (c): quality scores, then select by score "
            "(top 10,000) in two phases, the driver holding the candidates the diversity greedy examines: the selected and the "
            "too similar ones it skips (both in the report). The sizes are prefixes of the distinct workload, which holds its ten "
            "variants of Alpaca one after the other, and 2 is the whole file twice: 1/4 holds 2.5 variants of each record, 1 ten and "
            "2 twenty, so the number of near copies the greedy skips grows with the size here.\n\n"
            "| recipe | size | records | wall s | driver peak RSS MB | driver RSS at the start MB | select: too similar |\n"
            "|---|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
