"""One Ray run of recipe (a) or (b) of bench/curation.py, or (c) quality scores and select by
score (top 10,000), for bench/ray_scaling.py: prints the
wall time (Ray start-up excluded) and the driver process's own peak RSS during the run (the
actors are processes of Ray's raylet, not of this one) as JSON. The peak is reset after
ray.init (Linux: writing 5 to /proc/self/clear_refs), whose own start-up peak would hide it."""
import json
import sys
import time
from pathlib import Path


def _kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def main() -> None:
    recipe_name, src, out, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    import ray

    from ptdata.ops.dedup import ExactDedup, NearDedup
    from ptdata.ops.filters import LengthFilter
    from ptdata.ops.quality import QualityScores
    from ptdata.ops.select import Select
    from ptdata.pipeline import Input, Output, Recipe
    from ptdata.pipeline.ray_exec import run_ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) from here on
    before = _kb("VmRSS")
    ops = {"a": [LengthFilter(field="all", min_chars=10, max_chars=10000), ExactDedup(keep="first")],
           "b": [NearDedup(threshold=0.8, keep="first")],
           "c": [QualityScores(), Select(score="quality", top_n=10_000)]}[recipe_name]
    t = time.perf_counter()
    res = run_ray(Recipe(inputs=[Input(src, format="alpaca")], ops=ops, output=Output(dir=out, report=False), name=recipe_name),
                  workers=workers, quiet=True)
    wall = time.perf_counter() - t
    peak = _kb("VmHWM")
    report = res.stats["ops"][-1].get("report", {})
    print(json.dumps({"wall": wall, "kept": res.kept, "rejected": res.rejected, "driver_rss_mb": peak / 1024,
                      "driver_rss_at_start_mb": before / 1024, "too_similar": report.get("too_similar")}))


if __name__ == "__main__":
    main()
