"""The selection report on Alpaca 52k: every method beside the random and longest baselines, in one run.

Runs `ptdata select-report` as a user would (quality scores computed on the way, USE v3
embeddings of the prompts, a cold embedding cache), keeping 1,000 records per method, and writes
the methods' figures, the overlaps, each score's Spearman correlation with response length and the
wall time per phase into bench/RESULTS.md.

    .venv/bin/python bench/selection.py --results bench/RESULTS.md
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from convert import update_results  # noqa: E402

ALPACA = ROOT.parent / "shared" / "data" / "alpaca_en_52k.jsonl.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--methods", default="score,kcenter,facility,random,longest")
    ap.add_argument("--results", type=Path)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ptdata-select-"))
    try:
        t = time.perf_counter()
        r = subprocess.run([str(ROOT / ".venv/bin/ptdata"), "select-report", str(ALPACA), "-o", str(work / "rep"),
                            "--n", str(a.n), "--methods", a.methods, "--score", "quality", "--score", "quality.accuracy",
                            "--score", "quality.complexity", "--score", "quality.density", "--score", "quality.ifollow",
                            "--cache-dir", str(work / "cache"), "--json", "-q"], capture_output=True, text=True)
        wall = time.perf_counter() - t
        if r.returncode:
            sys.exit(r.stderr)
        rep = json.loads((work / "rep" / "select_report.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    names = list(rep["methods"])
    scores = list(rep["scores"])
    lines = ["### selection: methods and baselines on Alpaca 52k", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; command: "
             f"`.venv/bin/python bench/selection.py --results bench/RESULTS.md` ({time.strftime('%Y-%m-%d')}). "
             f"`ptdata select-report` on {rep['pool']:,} Alpaca records ({rep['rejected_on_read']} rejected on read), "
             f"{rep['k']:,} kept per method, quality scores computed on the way, USE v3 embeddings of the prompts "
             f"(cold cache). Wall time {wall:.0f} s; per phase (s): "
             + ", ".join(f"{k} {v}" for k, v in rep["seconds"].items()) + ".", "",
             "| method | mean response length | median | " + " | ".join(f"mean {s}" for s in scores) + " |",
             "|---|---:|---:|" + "---:|" * len(scores)]
    for m in names:
        r_ = rep["methods"][m]
        lines.append(f"| {m} | {r_['mean_length']} | {r_['median_length']} | "
                     + " | ".join(str(r_["mean_scores"].get(s)) for s in scores) + " |")
    lines += ["", f"Pool mean response length: {rep['pool_mean_length']} characters.", "",
              "Overlap of the kept sets (Jaccard):", "", "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for m in names:
        lines.append(f"| {m} | " + " | ".join("1" if o == m else str(rep["methods"][m]["overlap"][o]) for o in names) + " |")
    lines += ["", "| score | records with it | Spearman with response length |", "|---|---:|---:|"]
    for s, v in rep["scores"].items():
        lines.append(f"| {s} | {v['present']:,} | {v['spearman_with_length']} |")
    text = "\n".join(lines)
    print(text)
    if a.results:
        update_results(a.results, "selection", text)


if __name__ == "__main__":
    main()
