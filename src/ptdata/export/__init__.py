"""Training-ready export: trainer formats, and tokenized Parquet with assistant-only labels
and optional packing, plus token statistics."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError, RecordError
from ..io import guard_outputs
from ..reader import ReadOptions, read_records
from ..report.stats import numeric_summary
from .pack import PackedRow, best_fit_decreasing, pack, unpack
from .tokenize import IGNORE, ChatEncoder, load_tokenizer

TARGETS = {  # --to: (format, writer options, file name, what it holds)
    "trl-sft": ("trl", {}, "train.trl-sft.jsonl", "TRL SFTTrainer: messages"),
    "trl-dpo": ("trl", {}, "train.trl-dpo.jsonl", "TRL DPOTrainer: prompt / chosen / rejected"),
    "trl-kto": ("trl", {"preference": "unpaired"}, "train.trl-kto.jsonl", "TRL KTOTrainer: prompt / completion / label"),
    "llamafactory": ("sharegpt", {}, "train.llamafactory.json", "LLaMA-Factory sharegpt data + dataset_info.json"),
    "openai": ("openai", {}, "train.openai.jsonl", "OpenAI fine-tuning (SFT)"),
    "openai-pref": ("openai-pref", {}, "train.openai-pref.jsonl", "OpenAI preference fine-tuning"),
}


def export_format(inputs: list[Path], out_dir: Path, to: str, ro: ReadOptions | None = None) -> dict:
    from ..convert import convert

    if to not in TARGETS:
        raise InputError(f"--to {to!r}: choose from {', '.join([*TARGETS, 'tokenized'])}")
    fmt, opts, name, _ = TARGETS[to]
    guard_outputs(inputs, dirs=[out_dir])
    out_dir.mkdir(parents=True, exist_ok=True)
    totals: Counter = Counter()
    for k, src in enumerate(inputs):
        dst = out_dir / (name if len(inputs) == 1 else f"{k:02d}.{name}")
        c = convert(src, dst, fmt, ro=ro, write_opts=opts, rejects=dst.with_name(dst.name + ".rejects.jsonl"),
                    write_dataset_info=to == "llamafactory")
        totals.update({"records_in": c.records_in, "kept": c.kept, "rejected": c.rejected})
    return dict(totals)


def export_tokenized(inputs: list[Path], out_dir: Path, tokenizer_dir: str | Path, max_length: int | None = None,
                     truncation: str = "reject", train_on: str = "all", pack_length: int | None = None,
                     ro: ReadOptions | None = None, tokenizer: Any = None) -> dict:
    """tokenized.parquet (input_ids, labels, attention_mask[, position_ids, seq_lengths]), rejects, stats."""
    guard_outputs(inputs, dirs=[out_dir])
    tok = tokenizer or load_tokenizer(tokenizer_dir)
    enc = ChatEncoder(tok, train_on=train_on, max_length=max_length, truncation=truncation)
    out_dir.mkdir(parents=True, exist_ok=True)
    seqs: list[tuple[str, list[int], list[int]]] = []
    rejects, reasons = [], Counter()
    n_in = 0
    for src in inputs:
        for rec, bad in read_records(src, ro):
            n_in += 1
            if rec is None:
                rejects.append(bad)
                reasons[bad["reason"]] += 1
                continue
            try:
                e = enc.encode(rec)
            except RecordError as err:
                reasons[err.reason] += 1
                rejects.append({"source": rec.meta.get("source", ""), "op": "tokenize", "reason": err.reason,
                                "detail": err.detail, "id": rec.id, "record": rec.to_dict()})
                continue
            seqs.append((rec.id, e.input_ids, e.labels))
    (out_dir / "rejects.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rejects))
    lengths = [len(s[1]) for s in seqs]
    trained = sum(sum(1 for x in s[2] if x != IGNORE) for s in seqs)
    stats: dict[str, Any] = {"records_in": n_in, "kept": len(seqs), "rejected": len(rejects), "reasons": dict(reasons),
                             "tokens": sum(lengths), "trained_tokens": trained,
                             "trained_share": round(trained / sum(lengths), 4) if lengths else None,
                             "tokens_per_record": numeric_summary(lengths), "histogram": _histogram(lengths)}
    path = out_dir / "tokenized.parquet"
    if pack_length:
        rows, eff = pack(seqs, pack_length)
        stats.update(packed_rows=len(rows), pack_length=pack_length, packing_efficiency=round(eff, 4))
        table = pa.table({"input_ids": [r.input_ids for r in rows], "labels": [r.labels for r in rows],
                          "position_ids": [r.position_ids for r in rows], "seq_lengths": [r.seq_lengths for r in rows],
                          "ids": [r.ids for r in rows]},
                         schema=pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
                                           ("position_ids", pa.list_(pa.int32())), ("seq_lengths", pa.list_(pa.int32())),
                                           ("ids", pa.list_(pa.string()))]))
    else:
        table = pa.table({"id": [s[0] for s in seqs], "input_ids": [s[1] for s in seqs], "labels": [s[2] for s in seqs],
                          "attention_mask": [[1] * len(s[1]) for s in seqs]},
                         schema=pa.schema([("id", pa.string()), ("input_ids", pa.list_(pa.int32())),
                                           ("labels", pa.list_(pa.int32())), ("attention_mask", pa.list_(pa.int8()))]))
    pq.write_table(table, path, compression="zstd")
    assert stats["records_in"] == stats["kept"] + stats["rejected"]
    (out_dir / "token_stats.json").write_bytes(orjson.dumps(stats, option=orjson.OPT_INDENT_2))
    _write_report(stats, out_dir / "token_report.html")
    return stats


BINS = [0, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 1 << 30]


def _histogram(xs: list[int]) -> dict:
    import bisect

    counts = [0] * (len(BINS) - 1)
    for x in xs:
        counts[min(bisect.bisect_right(BINS, x) - 1, len(counts) - 1)] += 1
    return {"bins": BINS, "counts": counts}


def _write_report(stats: dict, path: Path) -> None:
    from ..report.html import hbar_chart, histogram, page

    h = stats["histogram"]
    parts = ["<h1>ptdata export: token statistics</h1>",
             f"<p class='big'>{stats['records_in']:,} records → <b>{stats['kept']:,} tokenized</b> · {stats['rejected']:,} "
             f"rejected (reasons in <code>rejects.jsonl</code>) · {stats['tokens']:,} tokens, "
             f"{stats['trained_share'] or 0:.1%} of them trained</p>",
             histogram("tokens per record", [float(b) for b in h["bins"][:-1]] + [float(h["bins"][-2] * 2)], h["counts"]),
             hbar_chart("tokens", ["all tokens", "trained (assistant) tokens"], [stats["tokens"], stats["trained_tokens"]])]
    if "packing_efficiency" in stats:
        parts.append(f"<h2>Packing</h2><p>{stats['kept']:,} sequences in {stats['packed_rows']:,} rows of "
                     f"{stats['pack_length']:,} tokens: efficiency {stats['packing_efficiency']:.1%}.</p>")
    if stats["reasons"]:
        parts.append(hbar_chart("rejected by reason", list(stats["reasons"]), list(stats["reasons"].values()), color="#E45756"))
    path.write_text(page("ptdata export", "".join(parts), stats), encoding="utf-8")


__all__ = ["ChatEncoder", "PackedRow", "TARGETS", "best_fit_decreasing", "export_format", "export_tokenized", "load_tokenizer",
           "pack", "unpack"]
