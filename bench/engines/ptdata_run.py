"""ptdata on recipe (a) or (b), through the Python API (same code path as `ptdata run`).
An optional fifth argument sets how the rejects list copies of a kept record: compact (default,
by reference) or full."""
import sys

from ptdata.ops.dedup import ExactDedup, NearDedup
from ptdata.ops.filters import LengthFilter
from ptdata.pipeline import Input, Output, Recipe, run


def main() -> None:
    recipe_name, src, out, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rejects = sys.argv[5] if len(sys.argv) > 5 else "compact"
    ops = ([LengthFilter(field="all", min_chars=10, max_chars=10000), ExactDedup(keep="first")] if recipe_name == "a"
           else [NearDedup(threshold=0.8, keep="first")])
    res = run(Recipe(inputs=[Input(src, format="alpaca")], ops=ops, output=Output(dir=out, report=False, rejects=rejects), name=recipe_name), workers=workers)
    print(f"kept={res.kept} rejected={res.rejected}")


if __name__ == "__main__":  # pools with spawn/forkserver re-import this module
    main()
