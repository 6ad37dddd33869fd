"""LLM client throughput: ptdata vs distilabel against a loopback server with a fixed 100 ms latency.

The bound for N requests at concurrency C and latency L is N * L / C seconds (5,000 x 0.1 / 64
= 7.81 s); each client's efficiency is bound / wall. Server and clients run as separate
processes on the same machine, in one run, alternating, best of R.

Setup (once): python3 -m venv bench/_venvs/distilabel && bench/_venvs/distilabel/bin/pip install distilabel==1.5.3 openai
Run:          .venv/bin/python bench/llm_throughput.py --results bench/RESULTS.md
"""
from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import urllib.request

import orjson

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ROOT / "bench" / "engines"
DISTILABEL = ROOT / "bench" / "_venvs" / "distilabel" / "bin" / "python"
sys.path.insert(0, str(ROOT / "bench"))
from convert import update_results  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served(base: str) -> int:
    with urllib.request.urlopen(base + "/stats", timeout=5) as r:
        return orjson.loads(r.read())["served"]


def run(cmd: list[str], base: str) -> dict:
    before = served(base)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        return {"error": (p.stderr or p.stdout).strip().splitlines()[-1][:200]}
    d = orjson.loads(p.stdout.strip().splitlines()[-1])
    d["served"] = served(base) - before
    return d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--delay", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--results", type=Path)
    a = ap.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    srv = subprocess.Popen([sys.executable, str(ENGINES / "slow_server.py"), str(port), str(a.delay)])
    try:
        for _ in range(100):
            try:
                served(base)
                break
            except OSError:
                time.sleep(0.1)
        engines = {"ptdata": [sys.executable, str(ENGINES / "llm_ptdata.py"), base, str(a.requests), str(a.concurrency)]}
        if DISTILABEL.exists():
            engines["distilabel (batches of C, as a Task calls it)"] = [str(DISTILABEL), str(ENGINES / "llm_distilabel.py"),
                                                                     base, str(a.requests), str(a.concurrency), "batches"]
            engines["distilabel (all N in one call, unbounded)"] = [str(DISTILABEL), str(ENGINES / "llm_distilabel.py"),
                                                                  base, str(a.requests), str(a.concurrency), "all"]
        best: dict[str, dict] = {}
        for r in range(a.repeats):
            for name, cmd in engines.items():
                d = run(cmd, base)
                print(name, d, flush=True)
                if "error" in d or name not in best or d["wall"] < best[name]["wall"]:
                    best.setdefault(name, d)
                    if "error" not in d and ("error" in best[name] or d["wall"] < best[name]["wall"]):
                        best[name] = d
    finally:
        srv.terminate()
        srv.wait()
    bound = a.requests * a.delay / a.concurrency
    rows = []
    pt = best["ptdata"].get("wall")
    for name, d in best.items():
        if "error" in d:
            rows.append(f"| {name} | – | – | – | – | error: {d['error']} |")
            continue
        rows.append(f"| {name} | {d['wall']:.2f} | {a.requests / d['wall']:,.0f} | {bound / d['wall']:.1%} | "
                    f"{d['wall'] / pt:.2f}x | ok {d['ok']:,}, served {d['served']:,} |")
    text = (f"### LLM client throughput: {a.requests:,} requests, concurrency {a.concurrency}, server latency "
            f"{a.delay * 1000:.0f} ms\n\n"
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; command: "
            f"`.venv/bin/python bench/llm_throughput.py --results bench/RESULTS.md`; best of {a.repeats}, alternating. "
            f"Server: `bench/engines/slow_server.py`, a minimal asyncio HTTP/1.1 keep-alive server (uvloop) in its own process on the same machine; "
            f"bound = N x latency / concurrency = {bound:.2f} s (with whole rounds, ceil(N/C) x latency = "
            f"{-(-a.requests // a.concurrency) * a.delay:.2f} s is the least any client can take).\n\n"
            "| client | wall s | requests/s | share of bound | wall vs ptdata | notes |\n|---|---:|---:|---:|---:|---|\n"
            + "\n".join(rows) + "\n\nTarget: ptdata >= 95% of the bound.\n")
    print(text)
    if a.results:
        update_results(a.results, "llm", text)


if __name__ == "__main__":
    main()
