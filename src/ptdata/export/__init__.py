"""Training-ready export: trainer formats, and tokenized Parquet with assistant-only labels
and optional packing, plus token statistics."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError, RecordError
from ..io import guard_outputs
from ..reader import ReadOptions, read_records
from ..report.stats import numeric_summary
from .pack import PackedRow, best_fit_decreasing, pack, pad_row, unpack
from .tokenize import IGNORE, ChatEncoder, load_tokenizer

@dataclass(frozen=True)
class Target:
    """One trainer file: which records it takes (record_class), in which format, under which name."""

    name: str
    fmt: str
    opts: dict
    file: str
    takes: tuple[str, ...]
    what: str
    llamafactory: bool = False  # gets a dataset_info.json entry


_T = [
    Target("trl-sft", "trl", {}, "train.trl-sft.jsonl", ("sft",), "TRL SFTTrainer: messages (+ tools)"),
    Target("trl-dpo", "trl", {}, "train.trl-dpo.jsonl", ("preference",), "TRL DPOTrainer: prompt / chosen / rejected"),
    Target("trl-kto", "trl", {"preference": "unpaired"}, "train.trl-kto.jsonl", ("unpaired", "preference"),
           "TRL KTOTrainer: prompt / completion / label (each pair becomes two rows)"),
    Target("openai", "openai", {}, "train.openai.jsonl", ("sft",), "OpenAI supervised fine-tuning: messages"),
    Target("openai-pref", "openai-pref", {}, "train.openai-pref.jsonl", ("preference",),
           "OpenAI preference fine-tuning: input / preferred_output / non_preferred_output"),
    Target("llamafactory-sft", "sharegpt", {}, "train.llamafactory-sft.json", ("sft",),
           "LLaMA-Factory sft stage (sharegpt)", llamafactory=True),
    Target("llamafactory-ranking", "sharegpt", {}, "train.llamafactory-ranking.json", ("preference",),
           "LLaMA-Factory rm / dpo stages (sharegpt, ranking: true)", llamafactory=True),
    Target("llamafactory-kto", "sharegpt", {}, "train.llamafactory-kto.json", ("unpaired",),
           "LLaMA-Factory kto stage (sharegpt, kto_tag)", llamafactory=True),
]
for _t in _T:  # a trainer file holds the columns its trainer reads: fields kept in meta.extra stay out
    _t.opts.setdefault("extra", "drop")
TARGETS: dict[str, Target] = {t.name: t for t in _T}
# --to names that write several files: each record goes to every file whose trainer takes its kind.
GROUPS = {
    "trl": ["trl-sft", "trl-dpo", "trl-kto"],
    "llamafactory": ["llamafactory-sft", "llamafactory-ranking", "llamafactory-kto"],
    "all": list(TARGETS),
}
# Where each kind of record goes instead, by the family of the target asked for.
_HINTS = {
    "trl": {"sft": ["trl-sft"], "preference": ["trl-dpo", "trl-kto"], "unpaired": ["trl-kto"]},
    "openai": {"sft": ["openai"], "preference": ["openai-pref"], "unpaired": ["trl-kto", "llamafactory-kto"]},
    "llamafactory": {"sft": ["llamafactory-sft"], "preference": ["llamafactory-ranking"], "unpaired": ["llamafactory-kto"]},
}
KIND_NAMES = {"sft": "sft", "preference": "preference", "unpaired": "unpaired (KTO)", "prompt": "prompt"}
WHAT = {"sft": "an sft record", "preference": "a preference pair", "unpaired": "an unpaired (KTO) record",
        "prompt": "an unlabeled prompt"}


def target_names() -> list[str]:
    return [*TARGETS, *GROUPS, "tokenized"]


def resolve_targets(to: str) -> list[Target]:
    if to in TARGETS:
        return [TARGETS[to]]
    if to in GROUPS:
        return [TARGETS[n] for n in GROUPS[to]]
    raise InputError(f"--to {to!r}: choose from {', '.join(target_names())}")


def _family(to: str) -> str:
    return "openai" if to.startswith("openai") else "llamafactory" if to.startswith("llamafactory") else "trl"


def wrong_kind_hint(to: str, cls: str) -> str:
    """The `--to` that takes records of class `cls` when `to` does not ('' when none does)."""
    if cls == "prompt":
        return ""
    return " or ".join(f"--to {n}" for n in _HINTS[_family(to)][cls])


def _wrong_kind(to: str, targets: list[Target], cls: str) -> RecordError:
    takes = sorted({k for t in targets for k in t.takes}, key=list(KIND_NAMES).index)
    hint = wrong_kind_hint(to, cls)
    where = f"export it with {hint}" if hint else \
        "no export trains on unlabeled prompts: label them first (ptdata generate, ptdata distill)"
    return RecordError("wrong_kind", f"{WHAT[cls]}: --to {to} takes {' and '.join(KIND_NAMES[k] for k in takes)} "
                                     f"records only; {where}")


def export_format(inputs: list[Path], out_dir: Path, to: str, ro: ReadOptions | None = None,
                  names: dict[str, str] | None = None, rejects: Path | None = None, check_dir: bool = True) -> dict:
    """Write the trainer file(s) of `to` (a target or a group of targets) into `out_dir`.

    Each target takes only the kinds of record its trainer trains on; a record none of the
    targets asked for takes is a `wrong_kind` reject whose detail names the target that does. All
    inputs go into one file per target; a target no record went to writes no file. LLaMA-Factory
    files get their entry in `out_dir/dataset_info.json` (merged, named after the file).
    `names` renames target files ({target: file name}); `check_dir=False` allows inputs in `out_dir`.
    Accounting: records_in = written (to at least one file) + rejected, and every rejected
    record is one row of the rejects file (`train.TO.rejects.jsonl`).
    """
    from ..convert import check_dataset_info_target, dataset_name, update_dataset_info
    from ..formats import get_format, lf_type, record_class
    from ..io import RowWriter, reject_row
    from ..reader import RecordReader

    targets = resolve_targets(to)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: not a directory (-o names the output directory)")
    names = names or {}
    paths = {t.name: out_dir / names.get(t.name, t.file) for t in targets}
    rejects_path = rejects or out_dir / f"train.{to}.rejects.jsonl"
    lf = [t for t in targets if t.llamafactory]
    guard_outputs(inputs, [*paths.values(), rejects_path, *([out_dir / "dataset_info.json"] if lf else [])],
                  dirs=[out_dir] if check_dir else [])
    for t in lf:
        check_dataset_info_target(paths[t.name])
    for src in inputs:
        RecordReader(src, ro).detect()  # an unreadable or unrecognizable input is refused before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    writers: dict[str, RowWriter] = {}
    per = {t.name: {"file": str(paths[t.name]), "records": 0, "rows": 0, "rejected": 0, "unlisted": 0, "reasons": Counter(),
                    "columns": set()} for t in targets}
    n_in = written = rejected = 0
    reasons: Counter = Counter()
    wrong: Counter = Counter()
    kinds_in: Counter = Counter()
    try:
        with RowWriter(rejects_path, "ptdata", keep_empty=False) as rej:
            for src in inputs:
                reader = RecordReader(src, ro)
                reader.detect()
                for rec, bad in reader:
                    n_in += 1
                    if rec is None:
                        rej.write(bad)
                        rejected += 1
                        reasons[bad["reason"]] += 1
                        continue
                    cls = record_class(rec)
                    kinds_in[cls] += 1
                    takers = [t for t in targets if cls in t.takes]
                    if not takers:
                        rej.write(reject_row(str(reader.alias), reader.position, reader.label, "export",
                                             _wrong_kind(to, targets, cls), rec.to_dict()))
                        rejected += 1
                        wrong[cls] += 1
                        reasons["wrong_kind"] += 1
                        continue
                    errors = []
                    for t in takers:
                        try:
                            rows = get_format(t.fmt).write(rec, t.opts)
                        except RecordError as e:
                            errors.append((t.name, e))
                            per[t.name]["rejected"] += 1
                            per[t.name]["reasons"][e.reason] += 1
                            continue
                        if t.name not in writers:
                            writers[t.name] = RowWriter(paths[t.name], t.fmt, t.opts)
                        writers[t.name].write_many(rows)
                        p = per[t.name]
                        p["records"] += 1
                        p["rows"] += len(rows)
                        for r in rows:
                            p["columns"].update(r)
                    if len(errors) < len(takers):  # written to another file: not a reject, only counted here
                        for n, _ in errors:
                            per[n]["unlisted"] += 1
                        written += 1
                        continue
                    name, e = errors[0]
                    if len(errors) > 1:
                        e = RecordError(e.reason, "; ".join(f"{n}: {x.detail}" for n, x in errors))
                    row = reject_row(str(reader.alias), reader.position, reader.label, "write", e, rec.to_dict())
                    row["target"] = name if len(errors) == 1 else [n for n, _ in errors]
                    rej.write(row)
                    rejected += 1
                    reasons[e.reason] += 1
        for w in writers.values():
            w.close()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    info = None
    for t in lf:
        if per[t.name]["records"]:
            info = update_dataset_info(paths[t.name], t.fmt, lf_type(t.takes[0]), per[t.name]["columns"])
    assert n_in == written + rejected, "export accounting broke: in != written + rejected"
    out_targets = {}
    for t in targets:
        p = per[t.name]
        if not p["records"] and not p["rejected"]:
            continue
        out_targets[t.name] = {"file": p["file"] if p["records"] else None, "records": p["records"], "rows": p["rows"],
                               "rejected": p["rejected"], "unlisted": p["unlisted"], "reasons": dict(p["reasons"]),
                               "takes": list(t.takes),
                               "what": t.what,
                               **({"dataset": dataset_name(paths[t.name])} if t.llamafactory and p["records"] else {})}
    return {"records_in": n_in, "written": written, "kept": written, "rejected": rejected, "reasons": dict(reasons),
            "kinds": dict(kinds_in), "targets": out_targets,
            "not_written": [{"kind": k, "records": n, "hint": wrong_kind_hint(to, k)} for k, n in wrong.items()],
            "rejects": str(rejects_path), "dataset_info": str(info) if info else None}


def export_tokenized(inputs: list[Path], out_dir: Path, tokenizer_dir: str | Path, max_length: int | None = None,
                     truncation: str = "reject", train_on: str = "all", pack_length: int | None = None,
                     ro: ReadOptions | None = None, tokenizer: Any = None, reasoning: str = "keep",
                     reasoning_key: str = "reasoning_content", history: str = "split") -> dict:
    """tokenized.parquet, rejects, stats. One row per sequence (id, input_ids, labels, attention_mask): one per
    record, or one per trained assistant turn where the template rewrites earlier turns (tokenize.py); or with
    `pack_length` packed rows padded to that length (input_ids, labels, position_ids, seq_lengths, ids; see pack.py)."""
    guard_outputs(inputs, dirs=[out_dir])
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: not a directory (-o names the output directory)")
    tok = tokenizer or load_tokenizer(tokenizer_dir)
    if pack_length is not None and pack_length < 1:
        raise InputError(f"--pack {pack_length}: the pack length must be at least 1 token")
    if pack_length and (max_length is None or max_length > pack_length):
        max_length = pack_length  # a sequence longer than a row cannot be packed: the truncation policy decides
    enc = ChatEncoder(tok, train_on=train_on, max_length=max_length, truncation=truncation, reasoning=reasoning,
                      reasoning_key=reasoning_key, history=history)
    out_dir.mkdir(parents=True, exist_ok=True)
    seqs: list[tuple[str, list[int], list[int]]] = []
    rejects, reasons = [], Counter()
    n_in = kept = split = 0
    for src in inputs:
        for rec, bad in read_records(src, ro):
            n_in += 1
            if rec is None:
                rejects.append(bad)
                reasons[bad["reason"]] += 1
                continue
            try:
                encoded = enc.encode(rec)
            except RecordError as err:
                reasons[err.reason] += 1
                rejects.append({"source": rec.meta.get("source", ""), "op": "tokenize", "reason": err.reason,
                                "detail": err.detail, "id": rec.id, "record": rec.to_dict()})
                continue
            kept += 1
            split += len(encoded) > 1
            seqs += [(rec.id, e.input_ids, e.labels) for e in encoded]
    (out_dir / "rejects.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rejects))
    lengths = [len(s[1]) for s in seqs]
    trained = sum(sum(1 for x in s[2] if x != IGNORE) for s in seqs)
    stats: dict[str, Any] = {"records_in": n_in, "kept": kept, "rejected": len(rejects), "reasons": dict(reasons),
                             "sequences": len(seqs), "split_records": split,
                             "tokens": sum(lengths), "trained_tokens": trained,
                             "trained_share": round(trained / sum(lengths), 4) if lengths else None,
                             "tokens_per_sequence": numeric_summary(lengths), "histogram": _histogram(lengths)}
    path = out_dir / "tokenized.parquet"
    if pack_length:
        rows, eff = pack(seqs, pack_length)
        pad_id = next((i for i in (tok.pad_token_id, tok.eos_token_id) if isinstance(i, int)), 0)
        rows = [pad_row(r, pack_length, pad_id) for r in rows]
        stats.update(packed_rows=len(rows), pack_length=pack_length, packing_efficiency=round(eff, 4), pad_token_id=pad_id)
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
             *([f"<p>{stats['split_records']:,} records became {stats['sequences']:,} sequences in all: the chat template "
                "rewrites earlier turns (it drops their reasoning), so each trained assistant turn is a sequence of its "
                "own, rendered as the template renders it at inference.</p>"] if stats["split_records"] else []),
             histogram("tokens per sequence", [float(b) for b in h["bins"][:-1]] + [float(h["bins"][-2] * 2)], h["counts"]),
             hbar_chart("tokens", ["all tokens", "trained (assistant) tokens"], [stats["tokens"], stats["trained_tokens"]])]
    if "packing_efficiency" in stats:
        parts.append(f"<h2>Packing</h2><p>{stats['sequences']:,} sequences in {stats['packed_rows']:,} rows of "
                     f"{stats['pack_length']:,} tokens: efficiency {stats['packing_efficiency']:.1%}.</p>")
    if stats["reasons"]:
        parts.append(hbar_chart("rejected by reason", list(stats["reasons"]), list(stats["reasons"].values()), color="#E45756"))
    path.write_text(page("ptdata export", "".join(parts), stats), encoding="utf-8")


__all__ = ["ChatEncoder", "GROUPS", "PackedRow", "TARGETS", "Target", "best_fit_decreasing", "export_format", "export_tokenized", "load_tokenizer",
           "pack", "pad_row", "unpack"]
