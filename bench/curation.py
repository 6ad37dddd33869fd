"""Side-by-side curation benchmark: ptdata vs datatrove vs data-juicer (each in its own venv),
plus a plain-Python floor, on Alpaca x N, in one run.

Recipes: (a) read, length filter (10..10,000 chars), exact dedup, write;
         (b) read, MinHash near-dedup at Jaccard 0.8 (5-word shingles, 128 hashes), write.
Every engine runs as a subprocess with 2 workers; wall time and the peak RSS of its whole
process tree (sampled every 50 ms) are recorded. The engines that take seconds (the floor and
ptdata's) run --repeat times, interleaved, and their median is reported: on this VM one run
can be 10% off the next. datatrove and data-juicer run once.

Setup (once): python3 -m venv bench/_venvs/datatrove && bench/_venvs/datatrove/bin/pip install "datatrove[io,processing,cli]" spacy
              python3 -m venv bench/_venvs/datajuicer && bench/_venvs/datajuicer/bin/pip install torch==2.13.0 && \\
              bench/_venvs/datajuicer/bin/pip install py-data-juicer aiohttp
Run:          .venv/bin/python bench/curation.py --copies 10 --results bench/RESULTS.md
"""
from __future__ import annotations

import argparse
import gzip
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "_work"
VENVS = ROOT / "bench" / "_venvs"
ENGINES = ROOT / "bench" / "engines"
SHARED = ROOT.parent / "shared" / "data" / "alpaca_en_52k.jsonl.gz"
sys.path.insert(0, str(ROOT / "bench"))
from convert import update_results  # noqa: E402


def prepare(copies: int) -> dict[str, Path]:
    base = WORK / f"cur_x{copies}"
    alpaca = base / "alpaca.jsonl"
    if not alpaca.exists():
        base.mkdir(parents=True, exist_ok=True)
        data = gzip.open(SHARED, "rb").read()
        alpaca.write_bytes(data * copies)
        lines = data.splitlines(keepends=True) * copies
        parts = base / "parts"
        parts.mkdir(exist_ok=True)
        step = -(-len(lines) // 10)
        for i in range(10):
            (parts / f"part{i:02d}.jsonl").write_bytes(b"".join(lines[i * step:(i + 1) * step]))
        with open(base / "text.jsonl", "wb") as f:
            for line in lines:
                r = orjson.loads(line)
                f.write(orjson.dumps({"text": f"{r['instruction']}\n{r['input']}\n{r['output']}"}) + b"\n")
    return {"alpaca": alpaca, "parts": base / "parts", "text": base / "text.jsonl", "n": sum(1 for _ in open(alpaca, "rb"))}


def measure(cmd: list[str], timeout: int, log: Path) -> dict:
    """Run one engine; its output goes to a log file (a pipe nobody reads would block a chatty engine)."""
    t = time.perf_counter()
    logf = open(log, "w")
    p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    peak = 0
    proc = psutil.Process(p.pid)
    status = "ok"
    while p.poll() is None:
        try:
            rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        if time.perf_counter() - t > timeout:
            for c in proc.children(recursive=True):
                c.kill()
            p.kill()
            status = "timeout"
            break
        time.sleep(0.05)
    p.wait()
    wall = time.perf_counter() - t
    logf.close()
    out = log.read_text(errors="replace")
    if p.returncode not in (0, None) and status == "ok":
        status = f"failed (exit {p.returncode}): {out.strip().splitlines()[-1][:160] if out.strip() else ''}"
    m = re.search(r"kept=(\d+)", out)
    return {"wall": wall, "rss_mb": peak / 2**20, "kept": int(m.group(1)) if m else None, "status": status}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--engines", default="floor,ptdata,ptdata-full-rejects,datatrove,datajuicer")
    ap.add_argument("--recipes", default="a,b")
    ap.add_argument("--results", type=Path)
    ap.add_argument("--repeat", type=int, default=5, help="runs of the floor and ptdata engines (median reported)")
    args = ap.parse_args()
    engines = args.engines.split(",")
    data = prepare(args.copies)
    small = prepare(1)
    py = {"ptdata": sys.executable, "datatrove": str(VENVS / "datatrove" / "bin" / "python"),
          "datajuicer": str(VENVS / "datajuicer" / "bin" / "python")}
    rows = []
    for recipe in args.recipes.split(","):
        fast = [e for e in engines if e.startswith("ptdata") or (e == "floor" and recipe == "a")]
        runs: dict[str, list[dict]] = {}
        order = [e for _ in range(args.repeat) for e in fast] + [e for e in engines if e in ("datatrove", "datajuicer")]
        for eng in order:
            work = WORK / f"run_{eng}_{recipe}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            if eng == "floor":
                cmd = [sys.executable, str(ENGINES / "floor.py"), str(data["alpaca"]), str(work / "out.jsonl")]
            elif eng.startswith("ptdata"):
                cmd = [py["ptdata"], str(ENGINES / "ptdata_run.py"), recipe, str(data["alpaca"]), str(work), str(args.workers),
                       "full" if eng == "ptdata-full-rejects" else "compact"]
            elif eng == "datatrove":
                cmd = [py["datatrove"], str(ENGINES / "datatrove_run.py"), recipe, str(data["parts"]), str(work), str(args.workers)]
            else:
                cmd = [py["datajuicer"], str(ENGINES / "datajuicer_run.py"), recipe, str(data["text"]), str(work), str(args.workers)]
            if eng in ("datatrove", "datajuicer") and not Path(py[eng]).exists():
                runs[eng] = [{"recipe": recipe, "engine": eng, "status": "not installed"}]
                continue
            os.sync()  # the previous engine's output is on disk: nobody pays for another's dirty pages
            r = measure(cmd, args.timeout, WORK / f"log_{eng}_{recipe}.txt")
            r.update(recipe=recipe, engine=eng)
            print(r, flush=True)
            runs.setdefault(eng, []).append(r)
            shutil.rmtree(work, ignore_errors=True)
        rows += [median_run(runs[e]) for e in engines if e in runs]
    # ptdata memory at x1, to show it is flat in the record count
    flat = {}
    if "ptdata" in engines:
        for recipe in args.recipes.split(","):
            work = WORK / f"run_ptdata_{recipe}_x1"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            flat[recipe] = measure([py["ptdata"], str(ENGINES / "ptdata_run.py"), recipe, str(small["alpaca"]), str(work), str(args.workers)],
                                   args.timeout, WORK / f"log_ptdata_{recipe}_x1.txt")
            shutil.rmtree(work, ignore_errors=True)
    text = report(rows, flat, data["n"], args)
    print(text)
    if args.results:
        update_results(args.results, "curation", text)


def median_run(rs: list[dict]) -> dict:
    """One engine's runs as one row: the median wall time (with the range), the highest peak RSS."""
    ok = [r for r in rs if r.get("status") == "ok"]
    if not ok:
        return rs[0]
    walls = sorted(r["wall"] for r in ok)
    mid = sorted(ok, key=lambda r: r["wall"])[(len(ok) - 1) // 2]
    return {**mid, "rss_mb": max(r["rss_mb"] for r in ok), "runs": len(ok), "range": (walls[0], walls[-1])}


def report(rows: list[dict], flat: dict, n: int, args) -> str:
    lines = [f"### curation: ptdata vs datatrove vs data-juicer, Alpaca x{args.copies} ({n:,} records)", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}; "
             f"{args.workers} workers each; command: `.venv/bin/python bench/curation.py --copies {args.copies} --results bench/RESULTS.md`. "
             "datatrove 0.10.1 and data-juicer 1.6.1 each in its own venv. Peak RSS is the whole process tree. "
             f"The floor and ptdata rows are the median of {args.repeat} interleaved runs (range in brackets); datatrove "
             "and data-juicer ran once.", ""]
    for recipe, title in (("a", "(a) read, length filter, exact dedup, write"), ("b", "(b) read, MinHash near-dedup at Jaccard 0.8, write")):
        rs = [r for r in rows if r["recipe"] == recipe]
        if not rs:
            continue
        pt = next((r for r in rs if r["engine"] == "ptdata" and r.get("status") == "ok"), None)
        lines += [f"**{title}**", "", "| engine | wall s | records/s | peak RSS MB | kept | ptdata speed-up | status |", "|---|---:|---:|---:|---:|---:|---|"]
        for r in rs:
            if "wall" not in r:
                lines.append(f"| {r['engine']} | | | | | | {r['status']} |")
                continue
            speed = f"{r['wall'] / pt['wall']:.2f}x" if pt and r["engine"] != "ptdata" else ""
            wall = f"{r['wall']:.2f}" + (f" [{r['range'][0]:.2f}-{r['range'][1]:.2f}]" if r.get("runs", 1) > 1 else "")
            lines.append(f"| {r['engine']} | {wall} | {n / r['wall']:,.0f} | {r['rss_mb']:,.0f} | "
                         f"{r['kept'] if r['kept'] is not None else ''} | {speed} | {r['status']} |")
        floor = next((r for r in rs if r["engine"] == "floor" and r.get("status") == "ok"), None)
        if pt and floor:
            lines.append(f"\nptdata / floor: {pt['wall'] / floor['wall']:.2f}x (target: within 1.5x).")
        if recipe in flat:
            f = flat[recipe]
            lines.append(f"\nptdata at x1 ({n // args.copies:,} records): {f['wall']:.1f} s, peak RSS {f['rss_mb']:,.0f} MB "
                         f"(x{args.copies}: {pt['rss_mb']:,.0f} MB)." if pt else "")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
