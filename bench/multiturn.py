"""Multi-turn construction: ptdata `multiturn` vs distilabel's Magpie (n_turns=3) against a loopback
server that answers every request after a fixed 100 ms.

200 topic seeds x 3 user turns, concurrency 64. Each conversation is a chain of k dependent
requests (user turn, answer, [judges], user turn, ...), so R requests at concurrency C and latency
L take at least max(R x L / C, k x L) seconds: the bound; an engine's share of the bound is
bound / its time. Server and engines run as separate processes on the same machine, in one run,
interleaved, best of R (by the construction time).

Engines: ptdata magpie with the model checks off (`--no-embeddings --no-coherence-judge
--no-consistency-judge`: a user turn and an answer per turn, as distilabel's Magpie), ptdata
magpie with the coherence and consistency judges on (embeddings off: they ask no server), ptdata
simulate with the checks off, ptdata magpie with the prefix built from the bundled Qwen2.5
tokenizer (`--magpie-template qwen2.5`) instead of a saved tokenizer directory, and distilabel
1.5.3's Magpie task on ClientvLLM (raw completions with the same saved tokenizer and its "qwen2"
pre-query template) fed 200 rows in batches of 64 (64 in flight, as ptdata), and in one batch of
200 (all 200 in flight at once, its fastest setting, not held to 64).

Setup (once): python3 -m venv bench/_venvs/distilabel && bench/_venvs/distilabel/bin/pip install distilabel==1.5.3 openai requests transformers==5.24.0
              (distilabel 1.5.3 imports `requests` without declaring it; ClientvLLM needs transformers for the chat template)
Run:          .venv/bin/python bench/multiturn.py --results bench/RESULTS.md
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ROOT / "bench" / "engines"
WORK = ROOT / "bench" / "_work" / "multiturn"
DISTILABEL = ROOT / "bench" / "_venvs" / "distilabel" / "bin" / "python"
sys.path.insert(0, str(ROOT / "bench"))
from convert import update_results  # noqa: E402
from llm_throughput import free_port, served  # noqa: E402

SUBJECTS = ("sourdough starters", "Postgres indexes", "marathon training", "tax brackets", "violin bowing",
            "Rust lifetimes", "composting", "Kubernetes probes", "watercolor washes", "mortgage refinancing",
            "bird migration", "SQL window functions", "home espresso", "solar panels", "chess openings",
            "git rebases", "houseplant pests", "Python asyncio", "bike maintenance", "job interviews")


def ram_gib() -> float:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def run(cmd: list[str], base: str) -> dict:
    before = served(base)
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    process = time.perf_counter() - t
    if p.returncode != 0:
        lines = (p.stderr or p.stdout).strip().splitlines() or [f"exit {p.returncode}"]
        return {"error": lines[-1][:300]}
    d = orjson.loads(p.stdout.strip().splitlines()[-1])
    d["process"] = process
    d["served"] = served(base) - before
    return d


def reading(best: dict, summary: dict, a, engines: dict) -> str:
    """What the numbers say, from the numbers."""
    rounds = -(-a.seeds // a.concurrency)
    out = [f"\nround floor s: both engines advance the conversations of a batch together, round by round (all user "
           f"turns, then all answers, then ptdata's judges), and a round ends with its slowest request, so at "
           f"{a.concurrency} in flight {a.seeds} conversations cost {rounds} latencies a round and {2 * a.turns} rounds "
           f"at least {2 * a.turns * rounds * a.delay:.2f} s, "
           f"{max(2 * a.turns * a.seeds * a.delay / a.concurrency, 2 * a.turns * a.delay) / (2 * a.turns * rounds * a.delay):.0%} "
           f"of the bound, however fast the client."]
    pt, sim = best.get("ptdata magpie, checks off", {}), best.get("ptdata simulate, checks off", {})
    if pt.get("time") and sim.get("time") and "error" not in pt and "error" not in sim:
        share, t, floor = summary["ptdata magpie, checks off"]
        tok = (pt["command"] - pt["loop"]) - (sim["command"] - sim["loop"])
        out.append(f"ptdata's magpie loop takes {t:.2f} s, {floor / t:.0%} of its round floor and {share:.0%} of the "
                   f"bound ({pt['loop_cpu'] * 1000 / pt['served']:.2f} ms of CPU per request); its command adds "
                   f"{pt['command'] - pt['loop']:.2f} s, of which about {tok:.2f} s (what simulate does not spend) is "
                   f"loading the tokenizer whose chat template gives magpie's prefix (importing transformers, which "
                   f"imports torch where it is installed, and reading the tokenizer), once a run.")
    dl = next((n for n in best if n.startswith("distilabel") and engines[n][2] == a.concurrency), None)
    if dl and "error" not in best[dl] and pt.get("time"):
        d = best[dl]
        share, t, floor = summary[dl]
        out.append(f"distilabel's Magpie with batches of {a.concurrency} takes {t:.2f} s, {floor / t:.0%} of the same "
                   f"round floor and {share:.0%} of the bound ({d['cpu'] * 1000 / d['served']:.2f} ms of CPU per "
                   f"request in the loop, most of it in the openai client: httpcore's connection pool, building and "
                   f"parsing each request and response; rendering the chat template is a small part); ptdata's magpie "
                   f"loop is {t / pt['time']:.2f}x faster.")
    return " ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--delay", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--results", type=Path)
    a = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    topics = WORK / "topics.txt"
    topics.write_text("".join(f"{SUBJECTS[i % len(SUBJECTS)]}: a practical problem, case {i + 1}\n"
                              for i in range(a.seeds)))
    tok = WORK / "qwen25_tok"
    if not (tok / "tokenizer.json").exists():  # the same chat template for both, as a local directory
        from ptdata.tokenizers import stock_qwen_tokenizer

        stock_qwen_tokenizer("qwen2.5").save_pretrained(str(tok))
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    T, C = str(a.turns), str(a.concurrency)

    def pt(method: str, checks: str, template: str = str(tok)) -> list[str]:
        return [sys.executable, str(ENGINES / "multiturn_ptdata.py"), base, str(topics), str(WORK / f"out-{method}-{checks}"),
                method, checks, C, T, template]

    k_plain, k_judged = 2 * a.turns, 2 * a.turns + (a.turns - 1)  # judges after turns 2.. (one round: both at once)
    # name -> (command, chain length k, requests in flight at most)
    engines: dict[str, tuple[list[str], int, int]] = {
        "ptdata magpie, checks off": (pt("magpie", "off"), k_plain, a.concurrency),
        "ptdata magpie, coherence + consistency judges": (pt("magpie", "judges"), k_judged, a.concurrency),
        "ptdata simulate, checks off": (pt("simulate", "off"), k_plain, a.concurrency),
        "ptdata magpie, checks off, `--magpie-template qwen2.5`": (pt("magpie", "off", "qwen2.5"), k_plain, a.concurrency),
    }
    if DISTILABEL.exists():
        for batch, label in ((a.concurrency, f"batches of {a.concurrency}"), (a.seeds, f"one batch of {a.seeds}")):
            engines[f"distilabel Magpie n_turns={a.turns}, {label}"] = (
                [str(DISTILABEL), str(ENGINES / "multiturn_distilabel.py"), base, str(a.seeds), T, str(batch), str(tok)],
                k_plain, batch)
    srv = subprocess.Popen([sys.executable, str(ENGINES / "slow_server.py"), str(port), str(a.delay)])
    best: dict[str, dict] = {}
    try:
        for _ in range(100):
            try:
                served(base)
                break
            except OSError:
                time.sleep(0.1)
        for _ in range(a.repeats):
            for name, (cmd, _, _) in engines.items():
                d = run(cmd, base)
                d["time"] = d.get("loop", d.get("wall"))
                print(name, {k: v for k, v in d.items() if k != "example"}, flush=True)
                old = best.get(name)
                if old is None or ("error" in old and "error" not in d) or \
                        ("error" not in d and d["time"] < old["time"]):
                    best[name] = d
    finally:
        srv.terminate()
        srv.wait()
    L = a.delay
    ceil = lambda x, y: -(-x // y)  # noqa: E731

    def round_floor(name: str, inflight: int) -> float:
        """The least a round-by-round engine takes: every round (all user turns of the batch, then all
        answers, then all judges) waits for its slowest request, ceil(n / in flight) latencies."""
        if name.startswith("distilabel"):
            return ceil(a.seeds, inflight) * 2 * a.turns * L
        judged = "judges" in name
        return (2 * a.turns * ceil(a.seeds, a.concurrency)
                + (a.turns - 1) * ceil(2 * a.seeds, a.concurrency) * judged) * L

    rows, summary = [], {}
    for name, d in best.items():
        _, k, inflight = engines[name]
        if "error" in d:
            rows.append(f"| {name} | – | {k} | – | – | – | – | – | – | – | error: {d['error']} |")
            continue
        R = d["served"]
        bound = max(R * L / a.concurrency, k * L)
        floor = round_floor(name, inflight)
        summary[name] = (bound / d["time"], d["time"], floor)
        cpu = d.get("loop_cpu", d.get("cpu"))
        if "kept" in d:
            out = f"{d['kept']} kept, {d['rejected']} rejected"
            note = f"CPU in the loop {cpu:.2f} s; the command {d['command']:.2f} s"
        else:
            out = f"{d['complete']} of {d['rows']} rows with {a.turns} full turns"
            note = f"CPU in the loop {cpu:.2f} s; load (tokenizer, /v1/models) {d['load']:.2f} s"
            if inflight > a.concurrency:
                note += (f"; {inflight} in flight, not held to {a.concurrency}: its own bound at C={inflight} is "
                         f"{max(R * L / inflight, k * L):.2f} s")
        rows.append(f"| {name} | {R:,} | {k} | {bound:.2f} | {floor:.2f} | {d['time']:.2f} | {R / d['time']:,.0f} | "
                    f"{bound / d['time']:.1%} | {d['process']:.2f} | {bound / d['process']:.1%} | {out}; {note} |")
    py = platform.python_version()
    text = (f"### multi-turn construction: {a.seeds} seeds x {a.turns} turns, concurrency {a.concurrency}, server latency "
            f"{a.delay * 1000:.0f} ms\n\n"
            f"Machine: {platform.machine()} ({platform.system()} {platform.release()}), {os.cpu_count()} cores, "
            f"{ram_gib():.0f} GiB RAM, Python {py}; command: `.venv/bin/python bench/multiturn.py --results "
            f"bench/RESULTS.md`; best of {a.repeats}, interleaved. Server: `bench/engines/slow_server.py` (chat and raw "
            f"completions, varied answers distinct per request, passing JSON verdicts for judge prompts), in its own "
            f"process; requests served counted by its /stats. Bound = max(R x L / C, k x L) for R requests served, "
            f"C = {a.concurrency}, L = {a.delay:g} s and k dependent requests per conversation "
            f"(k = {k_plain} with a user turn and an answer per turn, {k_judged} with the judges: one judge round after "
            f"turns 2 and 3). **loop s** is the construction itself (ptdata: `Builder.run`; distilabel: the Magpie "
            f"task's `process` calls), **process s** the whole subprocess (interpreter, imports, tokenizer, writing). "
            f"ptdata: `ptdata multiturn TOPICS --topics --method magpie|simulate --turns {a.turns} --llm "
            f"concurrency={a.concurrency} --llm cache_dir=null --no-embeddings [--no-coherence-judge "
            f"--no-consistency-judge] --magpie-template DIR`, one worker process (`bench/engines/multiturn_ptdata.py`); "
            f"distilabel 1.5.3: `Magpie(llm=ClientvLLM(tokenizer=DIR, magpie_pre_query_template=\"qwen2\"), "
            f"n_turns={a.turns})`, its `process` called per input batch (`bench/engines/multiturn_distilabel.py`), "
            f"HF_HUB_OFFLINE=1, DIR = the Qwen2.5 chat template saved with `save_pretrained`.\n\n"
            "| engine | requests served | k | bound s | round floor s | loop s | requests/s | share of bound (loop) | "
            "process s | share of bound (process) | output; notes |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
            + "\n".join(rows) + "\n" + reading(best, summary, a, engines) + "\n")
    print(text)
    if a.results:
        update_results(a.results, "multiturn", text)


if __name__ == "__main__":
    main()
