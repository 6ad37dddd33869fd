"""One Ray run of recipe (a) or (b) of bench/curation.py, for bench/ray_scaling.py: prints the
wall time (Ray start-up excluded) and the driver process's own peak RSS (the actors are
processes of Ray's raylet, not of this one) as JSON."""
import json
import resource
import sys
import time


def main() -> None:
    recipe_name, src, out, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    import ray

    from ptdata.ops.dedup import ExactDedup, NearDedup
    from ptdata.ops.filters import LengthFilter
    from ptdata.pipeline import Input, Output, Recipe
    from ptdata.pipeline.ray_exec import run_ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ops = ([LengthFilter(field="all", min_chars=10, max_chars=10000), ExactDedup(keep="first")] if recipe_name == "a"
           else [NearDedup(threshold=0.8, keep="first")])
    t = time.perf_counter()
    res = run_ray(Recipe(inputs=[Input(src, format="alpaca")], ops=ops, output=Output(dir=out, report=False), name=recipe_name),
                  workers=workers, quiet=True)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"wall": wall, "kept": res.kept, "rejected": res.rejected, "driver_rss_mb": peak / 1024,
                      "driver_rss_at_start_mb": before / 1024}))


if __name__ == "__main__":
    main()
