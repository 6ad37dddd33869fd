"""Review app load: the time to serve a reviewer's next record and to submit an answer, on a
100,000-record queue (overlap 2 over 2 reviewers: 200,000 assignments), on loopback.

A queue is made with `ptdata review create` from a generated JSONL file, then `ptdata review
serve` (a real process, SQLite WAL store) is called by a keep-alive HTTP client the way the
review page calls it: GET /api/q/NAME/next, then POST the answer, one after the other (a
reviewer works serially). Measured at the start of the queue and again with half of the
reviewer's records already answered (the next open record is found by an index seek, not a
scan, so the depth does not matter).

Run: .venv/bin/python bench/review_load.py --results bench/RESULTS.md
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from convert import update_results  # noqa: E402

PTDATA = [sys.executable, "-c", "from ptdata.cli import main; main()"]
ASPECTS = ("helpfulness", "truthfulness", "harmlessness", "instruction_following")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=1000, method="inclusive")[int(q * 1000) - 1] if len(xs) > 1 else xs[0]


def run(cmd: list[str]) -> dict:
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}


def measure(c: httpx.Client, queue: str, n: int) -> tuple[list[float], list[float]]:
    nxt, sub = [], []
    body = {"ratings": {a: 4 for a in ASPECTS}, "decision": "accept", "note": "fine"}
    for _ in range(n):
        t = time.perf_counter()
        r = c.get(f"/api/q/{queue}/next")
        rec = r.json()
        nxt.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200 and "pos" in rec, r.text
        t = time.perf_counter()
        r = c.post(f"/api/q/{queue}/a/{rec['pos']}", content=orjson.dumps(body), headers={"Content-Type": "application/json"})
        sub.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, r.text
    return nxt, sub


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--answers", type=int, default=2000, help="answers per measurement")
    ap.add_argument("--results", type=Path)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="review-bench-"))
    store = str(tmp / "review.sqlite")
    data = tmp / "queue.jsonl"
    with open(data, "wb") as f:
        for i in range(a.records):
            f.write(orjson.dumps({"messages": [{"role": "user", "content": f"Question {i}: how do I sort a list in Python?"},
                                               {"role": "assistant", "content": f"Use sorted(xs) or xs.sort() ({i})."}]}) + b"\n")
    tok = run(PTDATA + ["review", "add-reviewer", "ann", "--store", store, "--json"])["token"]
    run(PTDATA + ["review", "add-reviewer", "ben", "--store", store, "--json"])
    t = time.perf_counter()
    made = run(PTDATA + ["review", "create", "big", "--data", str(data), "--overlap", "2", "--store", store, "--json"])
    create_s = time.perf_counter() - t
    assert made["items"] == a.records
    port = free_port()
    srv = subprocess.Popen(PTDATA + ["review", "serve", "--store", store, "--port", str(port)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    rows = []
    try:
        c = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {tok}"}, timeout=30)
        for _ in range(300):
            try:
                c.get("/api/me")
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        measure(c, "big", 50)  # warm-up
        n1, s1 = measure(c, "big", a.answers)
        # half of ann's records answered (written straight into the store, as if done by hand)
        half = a.records // 2
        con = sqlite3.connect(store)
        con.execute("UPDATE review_assignments SET done = 1 WHERE reviewer_id = 1 AND pos < ?", (half,))
        con.execute("UPDATE review_members SET done = ? WHERE reviewer_id = 1", (half,))
        con.commit()
        con.close()
        n2, s2 = measure(c, "big", a.answers)
        rows = [("start of the queue", n1, s1), (f"{half:,} of ann's records already answered", n2, s2)]
        c.close()
    finally:
        srv.terminate()
        srv.wait(10)
    mach = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [f"### review app: next record and submit on a {a.records:,}-record queue (overlap 2, 2 reviewers)", "",
             f"Machine: {mach}; command: `.venv/bin/python bench/review_load.py --results bench/RESULTS.md`. The server is "
             f"`ptdata review serve` (one process, SQLite WAL store, {2 * a.records:,} assignments); the client is one reviewer "
             f"on loopback with a keep-alive connection, next then submit, {a.answers:,} answers per row (after 50 warm-up). "
             f"`ptdata review create` made the queue in {create_s:.1f} s.", "",
             "| state | next p50 ms | next p99 ms | submit p50 ms | submit p99 ms |", "|---|---:|---:|---:|---:|"]
    for label, nx, sb in rows:
        lines.append(f"| {label} | {pct(nx, 0.5):.2f} | {pct(nx, 0.99):.2f} | {pct(sb, 0.5):.2f} | {pct(sb, 0.99):.2f} |")
    lines += ["", "The next open record is one seek on `ix_review_assign_open` (queue, reviewer, done, position) and progress "
                  "is a counter per (queue, reviewer) updated in the submitting transaction, so neither depends on the "
                  "queue's size or on how far the reviewer is. A submit is one `BEGIN IMMEDIATE` transaction committed "
                  "before the answer is acknowledged.", ""]
    text = "\n".join(lines)
    print(text)
    if a.results:
        update_results(a.results, "review", text)


if __name__ == "__main__":
    main()
