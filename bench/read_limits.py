"""Reading hostile and large inputs: JSON-array items of 5 / 50 / 200 MB and deep nesting, with
ptdata's structural scanner next to the incremental parser it replaced (ijson, when installed),
and the cost of keying resume on input content (xxh3-128 of every input byte).

    .venv/bin/python bench/read_limits.py [--results bench/RESULTS.md]

Each ptdata figure is one `ptdata convert` process (start-up included), its peak RSS from
getrusage; ijson is timed in this process over the same bytes, building the items as the old
reader did.
"""
from __future__ import annotations

import argparse
import gzip
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "bench"))
from convert import update_results  # noqa: E402

MEASURE = ("import resource, subprocess, sys, time; t = time.perf_counter(); r = subprocess.run(sys.argv[1:]); "
           "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode, file=sys.stderr)")


def ptdata_convert(src: Path, dst: Path, *extra: str) -> tuple[float, float, str]:
    """(seconds, peak RSS MB, summary line) of one `ptdata convert` process."""
    cmd = [sys.executable, "-c", MEASURE, str(ROOT / ".venv" / "bin" / "ptdata"), "convert", str(src), str(dst),
           "--to", "openai", "-q", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    secs, rss, _ = r.stderr.strip().splitlines()[-1].split()
    line = next((l for l in r.stderr.splitlines() if l.startswith("in ")), r.stderr.strip().splitlines()[0])
    return float(secs), int(rss) / 1024, line


def ijson_read(src: Path, limit_s: float = 300) -> float | None:
    """Seconds for ijson to build every item (the old reader), or None when it is not installed."""
    try:
        import ijson
    except ImportError:
        return None
    t = time.perf_counter()
    with open(src, "rb") as f:
        for _ in ijson.items(f, "item", use_float=True):
            if time.perf_counter() - t > limit_s:
                return float("inf")
    return time.perf_counter() - t


def alpaca(n: int) -> list[dict]:
    with gzip.open(SHARED / "alpaca_en_52k.jsonl.gz", "rb") as f:
        return [orjson.loads(line) for _, line in zip(range(n), f)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", type=Path)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ptdata-read-"))
    rows = alpaca(52002)
    lines = ["## Reading limits (`bench/read_limits.py`)", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. "
             "Command: `.venv/bin/python bench/read_limits.py --results bench/RESULTS.md`.", "",
             "One JSON array: 1,000 Alpaca records with one big item among them (its `output` is the big string). "
             "ptdata decodes it with `--max-record-bytes 256MiB --max-turn-chars 256M`, and skips it unread "
             "under the default 16 MiB limit; ijson is the incremental parser the reader used before.", "",
             "| big item | ptdata, decoded | peak RSS | ptdata, over the limit (rejected) | peak RSS | ijson builds every item |",
             "|---|---|---|---|---|---|"]
    for mb in (5, 50, 200):
        src = tmp / f"big{mb}.json"
        big = {"instruction": "Repeat this.", "input": "", "output": "word \"quoted\" " * ((mb << 20) // 15)}
        with open(src, "wb") as f:
            f.write(b"[" + b",".join(orjson.dumps(r) for r in rows[:500]) + b"," + orjson.dumps(big) + b","
                    + b",".join(orjson.dumps(r) for r in rows[500:1000]) + b"]")
        dec = ptdata_convert(src, tmp / "o.jsonl", "--max-record-bytes", str(256 << 20), "--max-turn-chars", str(256 << 20))
        rej = ptdata_convert(src, tmp / "o.jsonl")
        ij = ijson_read(src)
        ij_s = "not installed" if ij is None else ("> 300 s" if ij == float("inf") else f"{ij:.1f} s")
        lines.append(f"| {src.stat().st_size / 1e6:.0f} MB file | {dec[0]:.2f} s | {dec[1]:.0f} MB | {rej[0]:.2f} s | {rej[1]:.0f} MB | {ij_s} |")
        src.unlink()
    lines += ["", "Deep nesting: one item `[[[…]]]` among two ordinary ones (rejected `too_deep` at the default `--max-depth` 100).", "",
              "| depth | file | ptdata | peak RSS | ijson |", "|---|---|---|---|---|"]
    for depth in (20_000, 100_000):
        src = tmp / f"deep{depth}.json"
        src.write_bytes(b"[" + orjson.dumps(rows[0]) + b',{"instruction":"a","input":"","output":"b","x":'
                        + b"[" * depth + b"]" * depth + b"}," + orjson.dumps(rows[1]) + b"]")
        t, rss, line = ptdata_convert(src, tmp / "o.jsonl")
        ij = None
        if depth == 20_000:
            ij = ijson_read(src, 120)
        ij_s = "not run (the old reader was OOM-killed at this depth)" if depth == 100_000 else (
            "not installed" if ij is None else f"{ij:.1f} s")
        lines.append(f"| {depth:,} | {src.stat().st_size / 1e3:.0f} KB | {t:.2f} s | {rss:.0f} MB | {ij_s} |")
    lines += ["", "Ordinary data: Alpaca 52k as a JSON array and as JSONL (same records), `ptdata convert --to openai`.", "",
              "| input | ptdata | peak RSS | ijson (items only) |", "|---|---|---|---|"]
    arr, jl = tmp / "alpaca.json", tmp / "alpaca.jsonl"
    arr.write_bytes(orjson.dumps(rows))
    jl.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    for src in (arr, jl):
        t, rss, line = ptdata_convert(src, tmp / "o.jsonl", "--workers", "1")
        ij = ijson_read(src) if src is arr else None
        lines.append(f"| {src.name} ({src.stat().st_size / 1e6:.0f} MB) | {t:.2f} s | {rss:.0f} MB | "
                     f"{'' if src is jl else ('not installed' if ij is None else f'{ij:.2f} s')} |")
    # resume keyed on content
    from ptdata.pipeline.local import file_fingerprint

    x10 = tmp / "alpaca_x10.jsonl"
    data = jl.read_bytes()
    with open(x10, "wb") as f:
        for _ in range(10):
            f.write(data)
    file_fingerprint(x10)  # page cache warm, as for a rerun
    t = time.perf_counter()
    file_fingerprint(x10)
    secs = time.perf_counter() - t
    lines += ["", f"Resume fingerprint: xxh3-128 of Alpaca x10 ({x10.stat().st_size / 1e6:.0f} MB, page cache warm) takes "
              f"{secs:.3f} s ({x10.stat().st_size / 1e9 / secs:.1f} GB/s), paid once per run.", ""]
    text = "\n".join(lines)
    print(text)
    if args.results:
        update_results(args.results, "read_limits", text)
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()
