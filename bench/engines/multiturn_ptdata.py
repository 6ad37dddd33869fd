"""ptdata's multi-turn construction, run as its CLI command (`ptdata multiturn ...`) in this
process, cache off, one worker process.
Usage: python multiturn_ptdata.py BASE_URL TOPICS OUT METHOD CHECKS CONCURRENCY TURNS TEMPLATE
  METHOD: magpie | simulate; CHECKS: off (no embeddings, no judges: 2 requests a turn) or
  judges (coherence and consistency judges on, embeddings off); TEMPLATE: --magpie-template.
Timed: `loop`, the construction itself (Builder.run: every round of user turns, answers and
checks), and `command`, the CLI command from its start to its return (reading the topics, the
tokenizer for magpie's prefix, writing kept/rejects/stats).
-> prints JSON {loop, loop_cpu, command, kept, rejected, stopped, requests}"""
import shutil
import sys
import time
from pathlib import Path

import orjson

from ptdata.cli import main
from ptdata.generate import multiturn as mt

base, topics, out, method, checks, conc, turns, template = sys.argv[1:9]
shutil.rmtree(out, ignore_errors=True)
args = ["ptdata", "multiturn", topics, "--topics", "-o", out, "--method", method, "--turns", turns,
        "--base-url", base, "--model", "bench", "--llm", f"concurrency={conc}", "--llm", "cache_dir=null",
        "--workers", "1", "-q", "--no-embeddings"]
if method == "magpie":
    args += ["--magpie-template", template]
if checks == "off":
    args += ["--no-coherence-judge", "--no-consistency-judge"]

loop: list[float] = []
cpu: list[float] = []
_run = mt.Builder.run


def timed_run(self, batch):
    t, c = time.perf_counter(), time.process_time()
    try:
        return _run(self, batch)
    finally:
        loop.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)


mt.Builder.run = timed_run
sys.argv = args
t = time.perf_counter()
try:
    code = main()
except SystemExit as e:
    code = e.code
command = time.perf_counter() - t
if code not in (0, None):
    sys.exit(f"ptdata multiturn exited {code}")
o = Path(out)
stopped: dict[str, int] = {}
kept = 0
for line in open(o / "kept.jsonl", "rb"):
    kept += 1
    s = orjson.loads(line)["meta"]["synthesis"]["stopped"]
    stopped[s] = stopped.get(s, 0) + 1
rejected = sum(1 for _ in open(o / "rejects.jsonl", "rb")) if (o / "rejects.jsonl").exists() else 0
stats = orjson.loads((o / "stats.json").read_bytes())
counters = next(op for op in stats["ops"] if op["op"] == "multiturn").get("counters", {})
print(orjson.dumps({"loop": sum(loop), "loop_cpu": sum(cpu), "command": command, "kept": kept, "rejected": rejected, "stopped": stopped,
                    "requests": counters.get("requests"), "http_calls": counters.get("http_calls")}).decode())
