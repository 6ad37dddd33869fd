"""Streaming conversion between formats: read (validate) -> write, every record kept or rejected."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import orjson

from .errors import RecordError
from .formats import dataset_info_entry, get_format
from .io import RowWriter, reject_row, rejects_path_for
from .reader import ReadOptions, RecordReader


@dataclass
class RunCounts:
    """in = kept + rejected, always; rows_out can exceed kept (e.g. one pair -> two KTO rows)."""

    records_in: int = 0
    kept: int = 0
    rejected: int = 0
    rows_out: int = 0
    reasons: Counter = field(default_factory=Counter)
    flags: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    fmt_in: str | None = None

    def check(self) -> None:
        assert self.records_in == self.kept + self.rejected, "record accounting broke: in != kept + rejected"

    def as_dict(self) -> dict:
        return {"in": self.records_in, "kept": self.kept, "rejected": self.rejected, "rows_out": self.rows_out,
                "format_in": self.fmt_in, "kinds": dict(self.kinds), "reject_reasons": dict(self.reasons),
                "flags": dict(self.flags)}


Progress = Callable[[float, RunCounts], None]


def convert(
    src: str | Path,
    dst: str | Path,
    to: str,
    ro: ReadOptions | None = None,
    write_opts: dict | None = None,
    rejects: str | Path | None = None,
    progress: Progress | None = None,
    write_dataset_info: bool = False,
) -> RunCounts:
    """Convert one file. Rejects (read, parse, validate and write failures) go to `*.rejects.jsonl`."""
    writer_fmt = get_format(to)
    write_opts = write_opts or {}
    reader = RecordReader(src, ro)
    counts = RunCounts()
    rejects_path = Path(rejects) if rejects else rejects_path_for(dst)
    write = writer_fmt.write
    with RowWriter(dst, to, write_opts) as out, RowWriter(rejects_path, "ptdata") as rej:
        for n, (rec, bad) in enumerate(reader, 1):
            counts.records_in = n
            if rec is None:
                rej.write(bad)
                counts.rejected += 1
                counts.reasons[bad["reason"]] += 1
                continue
            try:
                rows = write(rec, write_opts)
            except RecordError as e:
                rej.write(reject_row(str(reader.path), _pos(rec), reader.label, "write", e, rec.to_dict()))
                counts.rejected += 1
                counts.reasons[e.reason] += 1
                continue
            out.write_many(rows)
            counts.kept += 1
            counts.rows_out += len(rows)
            counts.kinds[rec.kind] += 1
            for f in rec.meta.get("flags", ()):
                counts.flags[f] += 1
            if progress is not None and not n & 4095:
                progress(reader.fraction(), counts)
    counts.check()
    counts.fmt_in = reader.fmt
    if progress is not None:
        progress(1.0, counts)
    if write_dataset_info and to in ("alpaca", "sharegpt"):
        update_dataset_info(Path(dst), to, set(counts.kinds))
    return counts


def _pos(rec) -> int:
    src = rec.meta.get("source", "")
    tail = src.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def update_dataset_info(dst: Path, fmt: str, kinds: set[str]) -> Path:
    """Add (or replace) this file's entry in the dataset_info.json beside it, for LLaMA-Factory."""
    info_path = dst.parent / "dataset_info.json"
    info = orjson.loads(info_path.read_bytes()) if info_path.exists() else {}
    name = dst.name.split(".")[0]
    info[name] = dataset_info_entry(fmt, dst.name, kinds)
    info_path.write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2))
    return info_path
