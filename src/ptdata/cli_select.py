"""`ptdata select-report`: selection methods side by side on one pool, with the baselines."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import orjson
import typer

from .cli import (EXIT_USAGE, FieldOpt, FromOpt, JsonOpt, QuietOpt, app, err, exit_if_nothing, out, print_json,
                  _read_options)
from .errors import InputError
from .io import guard_outputs
from .reader import RecordReader
from .records import Record
from .selection.report import EMBEDDING_METHODS, METHODS, compare, pick, to_html
from .text import prompt_text, record_text, response_text


def _load(inputs: list[Path], ro) -> tuple[list[Record], int]:
    recs, rejected = [], 0
    for path in inputs:
        for rec, bad in RecordReader(path, ro):
            if rec is None:
                rejected += 1
            else:
                recs.append(rec)
    return recs, rejected


def _scores(recs: list[Record], names: list[str]) -> dict[str, np.ndarray]:
    """Each named score as an array (NaN where a record lacks it); quality scores are computed
    with the quality_scores op when no record has them."""
    if any(n.startswith("quality") for n in names) and not any(n in r.scores for r in recs for n in names):
        from .ops.quality import QualityScores

        op = QualityScores()
        op.setup()
        for s in range(0, len(recs), 1024):
            op.process(recs[s:s + 1024])
    out_ = {}
    for n in names:
        v = np.array([r.scores.get(n, np.nan) if isinstance(r.scores.get(n), (int, float)) else np.nan for r in recs], float)
        out_[n] = v
    return out_


@app.command("select-report")
def select_report_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="The pool: input files in any format ptdata reads.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for select_report.html/.json and each method's kept records.")],
    n: Annotated[int, typer.Option("--n", min=0, help="Records each method keeps (0: use --fraction).")] = 0,
    fraction: Annotated[float, typer.Option("--fraction", min=0.0, max=1.0, help="Share of the pool each method keeps.")] = 0.0,
    methods: Annotated[str, typer.Option("--methods", help=f"Comma-separated, from: {', '.join(METHODS)}.")] = "score,random,longest,kcenter,facility",
    score: Annotated[Optional[list[str]], typer.Option("--score", help="Score(s) to report; the first ranks `score` (default quality).")] = None,
    targets: Annotated[Optional[Path], typer.Option("--targets", help="Example prompts (any format) for the `target` method.")] = None,
    embed_model: Annotated[str, typer.Option("--embed-model", help="Embedding model: use, minilm, e5, or a folder.")] = "use",
    field: Annotated[str, typer.Option("--embed-field", help="Text to embed: prompt, response or all.")] = "prompt",
    cache_dir: Annotated[str, typer.Option("--cache-dir", help="Embedding cache folder ('' for none).")] = ".ptdata-cache",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random baseline.")] = 0,
    fmt: FromOpt = None,
    fields: FieldOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run selection methods on one pool beside the random and longest-response baselines: kept sets, overlaps, length bias, score distributions, top/bottom records."""
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in chosen if m not in METHODS]
    if bad or not chosen:
        err.print(f"error: --methods: unknown {', '.join(bad) or '(none given)'}; one of {', '.join(METHODS)}", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    for base in ("random", "longest"):  # the baselines, always
        if base not in chosen:
            chosen.append(base)
    if "target" in chosen and targets is None:
        err.print("error: --methods target needs --targets FILE (the example prompts to select toward)", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    if field not in ("prompt", "response", "all"):
        err.print("error: --embed-field: one of prompt, response, all", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    if not n and not fraction:
        err.print("error: give --n N or --fraction F", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: exists and is not a directory")
    guard_outputs(inputs + ([targets] if targets else []),  # never write over an input, before anything is read
                  files=[out_dir / "select_report.json", out_dir / "select_report.html", *(out_dir / f"{m}.jsonl" for m in chosen)])
    ro = _read_options(fmt, fields, None, None, None, 100_000, False, True, 16 * 1024 * 1024)
    t0 = time.perf_counter()
    recs, rejected = _load(inputs, ro)
    exit_if_nothing(len(recs) + rejected, len(recs))
    k = min(len(recs), n or int(round(fraction * len(recs))))
    names = list(score or ["quality"])
    scores = _scores(recs, names)
    lengths = np.array([len(response_text(r)) for r in recs], dtype=float)
    emb_cache: dict[str, np.ndarray] = {}
    timing: dict[str, float] = {}

    def embedder():
        from .embed import EmbeddingCache, load_embedder

        if "model" not in emb_cache:
            emb_cache["model"] = (load_embedder(embed_model), EmbeddingCache(cache_dir) if cache_dir else None)
        return emb_cache["model"]

    def emb() -> np.ndarray:
        if "pool" not in emb_cache:
            from .embed import embed

            t = time.perf_counter()
            m, c = embedder()
            emb_cache["pool"] = embed(m, [record_text(r, field) for r in recs], c)
            timing["embed"] = round(time.perf_counter() - t, 2)
        return emb_cache["pool"]

    def target_emb() -> np.ndarray:
        from .embed import embed

        trecs, _ = _load([targets], _read_options(None, None, None, None, None, 100_000, False, True, 16 * 1024 * 1024))
        if not trecs:
            raise InputError(f"--targets {targets}: no records")
        m, c = embedder()
        return embed(m, [record_text(r, field) for r in trecs], c)

    kept: dict[str, np.ndarray] = {}
    for m in chosen:
        t, before = time.perf_counter(), timing.get("embed", 0.0)
        kept[m] = pick(m, k, scores=scores[names[0]], lengths=lengths, emb=emb if m in EMBEDDING_METHODS else None,
                       targets=target_emb if m == "target" else None, seed=seed)
        timing[m] = round(time.perf_counter() - t - (timing.get("embed", 0.0) - before), 2)  # the embedding apart

    def example(i: int) -> dict:
        return {"id": recs[i].id, "prompt": prompt_text(recs[i])[:300], "response": response_text(recs[i])[:300]}

    rep = compare(kept, lengths, scores, example)
    rep.update({"k": k, "rejected_on_read": rejected, "embed_model": embed_model if set(chosen) & set(EMBEDDING_METHODS) else None,
                "seconds": timing, "wall_s": round(time.perf_counter() - t0, 2)})
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "select_report.json").write_bytes(orjson.dumps(rep, option=orjson.OPT_INDENT_2))
    (out_dir / "select_report.html").write_text(to_html(rep), encoding="utf-8")
    for m, idx in kept.items():
        with open(out_dir / f"{m}.jsonl", "wb") as f:
            for i in idx.tolist():
                f.write(orjson.dumps(recs[i].to_dict()) + b"\n")
    summary = {"command": "select-report", "records_in": len(recs) + rejected, "pool": len(recs), "k": k,
               "methods": {m: {kk: v for kk, v in r.items() if kk in ("kept", "mean_length", "mean_scores")}
                           for m, r in rep["methods"].items()},
               "spearman_with_length": {s: v["spearman_with_length"] for s, v in rep["scores"].items()},
               "files": {"html": str(out_dir / "select_report.html"), "json": str(out_dir / "select_report.json")},
               "wall_s": rep["wall_s"]}
    if as_json:
        print_json(summary)
        return
    out.print(f"pool {len(recs):,} records, {k:,} kept per method ({rep['wall_s']} s)", highlight=False)
    for m, r in rep["methods"].items():
        ms = ", ".join(f"{s} {v}" for s, v in r["mean_scores"].items())
        out.print(f"  {m:<9} mean length {r['mean_length']}  {ms}", highlight=False)
    for s, v in rep["scores"].items():
        out.print(f"  {s}: Spearman with response length {v['spearman_with_length']}", highlight=False)
    out.print(f"report: {out_dir / 'select_report.html'}", highlight=False)
