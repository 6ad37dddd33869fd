"""Decontamination: the layer-2 embedding models side by side, and the op's wall time per layer.

Part 1 embeds the MMLU high-school US history items (each as its whole text with options, its
question line and its passage), LMSYS's English rephrasings and Chinese translations of them, and
untouched Alpaca prompts, with each candidate model (all installed as packages, offline). For each
model: texts/s on this machine, the cosine at which 0.1% of untouched Alpaca records reach some
item, and the share of rephrasings and translations whose own item reaches that cosine.

Part 2 runs the `decontaminate` op on Alpaca 52k with the rephrasings, the translations and
GSM8K test questions with one word changed planted in, against GSM8K test + the MMLU items:
layer 1 alone, layers 1+2 with a cold and a warm embedding cache, and the number of candidate
pairs layer 3 would send to a judge. Recall counts a planted record as caught when its own item
is among its hits; false positives are untouched Alpaca records flagged.

    .venv/bin/python bench/decontam.py --results bench/RESULTS.md
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
from convert import update_results  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
DEV = DATA / "decontam_dev"
MMLU = DEV / "high_school_us_history_test.csv"


def dev_set() -> tuple[list[list[str]], list[tuple[int, str]], list[tuple[int, str]]]:
    """MMLU rows, and (row index, text) of the non-empty rephrasings and translations."""
    rows = list(csv.reader(MMLU.open(encoding="utf-8")))

    def read(name: str) -> list[tuple[int, str]]:
        lines = [json.loads(ln)["text"].strip() for ln in (DEV / name).open(encoding="utf-8")]
        return [(i, t) for i, t in enumerate(lines) if t]

    return (rows, read("high_school_us_history_test_rephrase_english_filtered_question.jsonl"),
            read("high_school_us_history_test_chinese_filtered_question.jsonl"))


def alpaca() -> list[dict]:
    with gzip.open(DATA / "alpaca_en_52k.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(ln) for ln in f]


def prompt(r: dict) -> str:
    return (r["instruction"] + ("\n" + r["input"] if r.get("input") else "")).strip()


def compare_models(models: list[str], sample: int) -> list[dict]:
    from ptdata.embed import embed, load_embedder
    from ptdata.ops.decontam import item_chunks

    rows, reph, trans = dev_set()
    chunks = [item_chunks(r[0], "\n".join(f"{chr(65 + j)}. {c}" for j, c in enumerate(r[1:5]))) for r in rows]
    starts = np.cumsum([0] + [len(c) for c in chunks[:-1]])
    flat = [c for cs in chunks for c in cs]
    untouched_all = [prompt(r) for r in alpaca()]
    out = []
    for name in models:
        untouched = untouched_all if name == "use" else untouched_all[:sample]
        emb = load_embedder(name)
        emb.encode(["warm up"])
        items = embed(emb, flat)
        t = time.perf_counter()
        u = embed(emb, untouched)
        rate = len(untouched) / (time.perf_counter() - t)
        planted = embed(emb, [t for _, t in reph + trans])
        su = np.maximum.reduceat(u @ items.T, starts, axis=1).max(1)
        sp = np.maximum.reduceat(planted @ items.T, starts, axis=1)
        own = sp[np.arange(len(sp)), [i for i, _ in reph + trans]]
        cut = float(np.sort(su)[-int(0.001 * len(su)) - 1])
        out.append({"model": name, "untouched": len(untouched), "rate": rate, "cut": cut,
                    "rephrase": float((own[:len(reph)] > cut).mean()), "translation": float((own[len(reph):] > cut).mean()),
                    "rephrase_06": float((own[:len(reph)] >= 0.585).mean()), "translation_06": float((own[len(reph):] >= 0.585).mean()),
                    "fp_06": int((su >= 0.585).sum())})
        print(out[-1], flush=True)
    return out


def planted_file(work: Path) -> tuple[Path, dict[str, set[int]], int]:
    """Alpaca 52k + the plants, shuffled in deterministically; the plants' line numbers by kind."""
    rows, reph, trans = dev_set()
    gsm = [json.loads(ln) for ln in gzip.open(DATA / "gsm8k_test.jsonl.gz", "rt", encoding="utf-8")]
    rng = random.Random(7)
    plants: list[tuple[str, dict]] = []
    for kind, pairs in (("rephrase", reph), ("translation", trans)):
        for i, t in pairs:
            answer = rows[i][1 + "ABCD".index(rows[i][5].strip())] if rows[i][5].strip() in "ABCD" else rows[i][5]
            plants.append((kind, {"instruction": t, "input": "", "output": answer}))
    for r in rng.sample(gsm, 200):
        words = r["question"].split()
        k = rng.randrange(len(words))
        words[k] = rng.choice(["several", "exactly", "about", "nearly", "those"])
        plants.append(("gsm8k_edit", {"instruction": " ".join(words), "input": "", "output": r["answer"]}))
    lines = [("untouched", r) for r in alpaca()] + plants
    rng.shuffle(lines)
    path = work / "train.jsonl"
    kinds: dict[str, set[int]] = {}
    with path.open("w", encoding="utf-8") as f:
        for n, (kind, r) in enumerate(lines):
            f.write(json.dumps({**r, "plant": kind}, ensure_ascii=False) + "\n")
            kinds.setdefault(kind, set()).add(n)
    return path, kinds, len(lines)


def run_op(path: Path, out: Path, **params) -> tuple[float, dict, list[dict]]:
    from ptdata.formats import FORMATS  # noqa: F401
    from ptdata.ops.decontam import Decontaminate
    from ptdata.pipeline.local import run
    from ptdata.pipeline.recipe import Input, Output, Recipe

    op = Decontaminate(benchmarks=[str(DATA / "gsm8k_test.jsonl.gz"), str(MMLU)], action="flag", **params)
    t = time.perf_counter()
    res = run(Recipe(inputs=[Input(str(path))], ops=[op], output=Output(dir=str(out)), base_dir=out.parent), workers=2)
    wall = time.perf_counter() - t
    kept = [json.loads(ln) for ln in Path(res.kept_path).open(encoding="utf-8")]
    return wall, res.stats, kept


def score(kept: list[dict], rows: list[list[str]]) -> dict:
    """Recall per plant kind (own item among the hits; for GSM8K any gsm8k hit) and untouched flagged."""
    found: dict[str, list[int]] = {}
    want = {}
    rows_, reph, trans = dev_set()
    for i, t in reph:
        want[("rephrase", t)] = f"high_school_us_history_test.csv#{i + 1}"
    for i, t in trans:
        want[("translation", t)] = f"high_school_us_history_test.csv#{i + 1}"
    by_layer: dict[str, dict[str, int]] = {}
    for r in kept:
        kind = ((r.get("meta") or {}).get("extra") or {}).get("plant")
        hits = (r.get("meta") or {}).get("contamination") or []
        instr = r["messages"][0]["content"] if "messages" in r else r.get("instruction", "")
        if kind in ("rephrase", "translation"):
            target = want.get((kind, instr.strip()))
            ok = [h for h in hits if h["item"] == target]
        elif kind == "gsm8k_edit":
            ok = [h for h in hits if h["benchmark"] == "gsm8k_test.jsonl.gz"]
        else:
            ok = hits
        found.setdefault(kind, []).append(bool(ok))
        for layer in {h["layer"] for h in ok}:
            by_layer.setdefault(kind, {}).setdefault(layer, 0)
            by_layer[kind][layer] += 1
    return {k: (sum(v), len(v)) for k, v in found.items()} | {"by_layer": by_layer}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="use,e5,minilm")
    ap.add_argument("--sample", type=int, default=5000, help="untouched Alpaca records for the slower models")
    ap.add_argument("--results", type=Path)
    a = ap.parse_args()
    t0 = time.time()
    load0 = os.getloadavg()[0]
    models = compare_models(a.models.split(","), a.sample)
    work = Path(tempfile.mkdtemp(prefix="ptdata-decontam-"))
    try:
        path, kinds, n = planted_file(work)
        runs = []
        for label, params in (("layer 1 (n-gram)", {}),
                              ("layers 1+2, cold cache", {"semantic": True, "cache_dir": str(work / "cache")}),
                              ("layers 1+2, warm cache", {"semantic": True, "cache_dir": str(work / "cache")})):
            wall, stats, kept = run_op(path, work / f"out{len(runs)}", **params)
            runs.append((label, wall, score(kept, []), stats["contamination"]["records_by_layer"]))
            print(runs[-1][:3], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        "### decontamination: layer-2 models, and the op per layer",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; command: "
        f"`.venv/bin/python bench/decontam.py --results bench/RESULTS.md` ({(time.time() - t0) / 60:.0f} min, "
        f"{time.strftime('%Y-%m-%d')}). Dev data: ../shared/data/decontam_dev (204 MMLU high-school US history items; "
        "192 non-empty English rephrasings of their question line, 202 Chinese translations of the whole item). "
        f"The machine was shared: 1-minute load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.",
        "",
        "**Layer 2 candidates.** Each MMLU item is embedded as three chunks (whole item with options, question line, passage; "
        "a record's score for an item is its best chunk). `cut` is the cosine reached by 0.1% of untouched Alpaca prompts; "
        "recall is the share of rephrasings/translations whose own item reaches it; the last columns use the op's default "
        "threshold 0.585.",
        "",
        "| model | languages | untouched prompts | texts/s | cut (0.1% FP) | rephrase recall | translation recall | at 0.585: rephrase | translation | untouched flagged |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lang = {"use": "16 (multilingual USE v3)", "e5": "~100 (multilingual-e5-small, 4-bit)", "minilm": "English"}
    for m in models:
        lines.append(f"| {m['model']} | {lang.get(m['model'], '')} | {m['untouched']:,} | {m['rate']:.0f} | {m['cut']:.3f} | "
                     f"{m['rephrase']:.3f} | {m['translation']:.3f} | {m['rephrase_06']:.3f} | {m['translation_06']:.3f} | "
                     f"{m['fp_06']} ({m['fp_06'] / m['untouched']:.3%}) |")
    lines += ["", f"**The op**, 2 workers, on Alpaca 52k + plants ({n:,} records) against GSM8K test (1,319) + the MMLU items "
              "(204), `action: flag`. Recall: plants whose own item is among the record's hits.", "",
              "| run | wall s | rephrase recall | translation recall | GSM8K one-word-edit recall | untouched flagged | records per layer |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for label, wall, sc, layers in runs:
        def frac(k: str) -> str:
            got, tot = sc.get(k, (0, 0))
            return f"{got}/{tot} ({got / tot:.3f})" if tot else "-"
        fp, tot = sc.get("untouched", (0, 1))
        lines.append(f"| {label} | {wall:.1f} | {frac('rephrase')} | {frac('translation')} | {frac('gsm8k_edit')} | "
                     f"{fp} ({fp / tot:.3%}) | {', '.join(f'{k}: {v:,}' for k, v in layers.items())} |")
    lines += ["", "Layer 3 (an LLM judge through `ptdata.llm`) sees only the candidate pairs of layers 1-2: the records "
              "per layer above bound its calls; its wall time is the judge's."]
    text = "\n".join(lines)
    print(text)
    if a.results:
        update_results(a.results, "decontam", text)


if __name__ == "__main__":
    main()
