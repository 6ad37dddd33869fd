"""Flywheel proxy load: the latency the proxy adds over a direct call, and its sustained rate.

An upstream on loopback (`engines/slow_server.py`, answering after a fixed delay) is called
(1) directly and (2) through `ptdata flywheel serve` (a real process, SQLite store), by an
open-loop client sending RATE requests/s for SECONDS; per-request latency percentiles are
compared. Then a closed loop at concurrency C measures the sustained proxied requests/s. Last,
a kill -9 of the proxy under load: every interaction whose answer reached the client must be
in the store.

Run: .venv/bin/python bench/flywheel_load.py --results bench/RESULTS.md
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from convert import update_results  # noqa: E402

BODY = {"model": "m", "messages": [{"role": "user", "content": "How far is the moon? Answer in one sentence."}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_up(url: str, headers: dict) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            try:
                async with s.get(url, headers=headers) as r:
                    await r.read()
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def open_loop(url: str, headers: dict, rate: float, seconds: float) -> list[float]:
    lat: list[float] = []
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=0)) as s:
        async def one() -> None:
            t = time.perf_counter()
            async with s.post(url, json=BODY) as r:
                await r.read()
                if r.status == 200:
                    lat.append((time.perf_counter() - t) * 1000)
        tasks = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return lat


async def closed_loop(url: str, headers: dict, conc: int, seconds: float, ids: list[str] | None = None) -> int:
    done = 0
    stop = time.perf_counter() + seconds
    async with aiohttp.ClientSession(headers=headers) as s:
        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                try:
                    async with s.post(url, json=BODY) as r:
                        await r.read()
                        if r.status == 200:
                            done += 1
                            if ids is not None:
                                ids.append(r.headers["X-Interaction-Id"])
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    return
        await asyncio.gather(*(worker() for _ in range(conc)))
    return done


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1] if len(xs) > 1 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--delay", type=float, default=0.02, help="upstream latency, seconds")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--results", type=Path)
    a = ap.parse_args()
    up_port, px_port = free_port(), free_port()
    up = subprocess.Popen([sys.executable, str(ROOT / "bench" / "engines" / "slow_server.py"), str(up_port), str(a.delay)])
    work = Path(tempfile.mkdtemp(prefix="ptdata-fw-bench-"))
    write, admin = secrets.token_hex(16), secrets.token_hex(16)
    env = {**os.environ, "PTDATA_FLYWHEEL_WRITE_KEYS": write, "PTDATA_FLYWHEEL_ADMIN_KEYS": admin}

    def start_proxy() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", "from ptdata.cli import main; main()", "flywheel", "serve",
                                 "--upstream", f"http://127.0.0.1:{up_port}/v1", "--store", str(work / "fw.sqlite"),
                                 "--port", str(px_port)], env=env)

    px = start_proxy()
    auth = {"Authorization": f"Bearer {write}"}
    direct, proxied = f"http://127.0.0.1:{up_port}/v1/chat/completions", f"http://127.0.0.1:{px_port}/v1/chat/completions"
    try:
        asyncio.run(wait_up(f"http://127.0.0.1:{up_port}/v1/stats", {}))
        asyncio.run(wait_up(f"http://127.0.0.1:{px_port}/v1/models", auth))
        asyncio.run(open_loop(proxied, auth, a.rate, 1.0))  # warm-up
        d = asyncio.run(open_loop(direct, {}, a.rate, a.seconds))
        p = asyncio.run(open_loop(proxied, auth, a.rate, a.seconds))
        sustained = asyncio.run(closed_loop(proxied, auth, a.concurrency, 5.0)) / 5.0
        # kill -9 under load
        ids: list[str] = []

        async def load_and_kill() -> None:
            task = asyncio.create_task(closed_loop(proxied, auth, 8, 3.0, ids))
            await asyncio.sleep(1.5)
            px.send_signal(signal.SIGKILL)
            await task
        asyncio.run(load_and_kill())
        px.wait(10)
        from ptdata.flywheel.store import Store

        stored = {r["id"] for r in Store(str(work / "fw.sqlite")).interactions()}
        lost = len(set(ids) - stored)
    finally:
        for proc in (px, up):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    rows = [("direct to upstream", d), ("through the flywheel proxy", p)]
    lines = [f"| {name} | {len(x):,} | {pct(x, 50):.2f} | {pct(x, 99):.2f} |" for name, x in rows]
    add50, add99 = pct(p, 50) - pct(d, 50), pct(p, 99) - pct(d, 99)
    text = (f"### flywheel proxy: {a.rate:.0f} requests/s for {a.seconds:.0f} s, upstream latency {a.delay * 1000:.0f} ms\n\n"
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; command: "
            "`.venv/bin/python bench/flywheel_load.py --results bench/RESULTS.md`. The proxy is `ptdata flywheel serve` "
            "(one process, SQLite WAL store, every interaction committed before its answer is released); the open-loop "
            "client and the upstream run on the same machine.\n\n"
            "| path | answered | p50 ms | p99 ms |\n|---|---:|---:|---:|\n" + "\n".join(lines) +
            f"\n\nAdded by the proxy: p50 {add50:.2f} ms, p99 {add99:.2f} ms (targets: <= 5 ms, <= 25 ms). "
            f"Sustained through the proxy at concurrency {a.concurrency}: {sustained:,.0f} requests/s. "
            f"kill -9 under load: {len(ids):,} answers reached the client, {lost} of them missing from the store.\n")
    print(text)
    if a.results:
        update_results(a.results, "flywheel", text)


if __name__ == "__main__":
    main()
