"""Streaming conversion between formats: read (validate) -> write, every record kept or rejected."""
from __future__ import annotations

import gc
import os
import shutil
import tempfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson

from .errors import InputError, RecordError
from .formats import TRL_TYPE_NAMES, TYPE_COLUMNS, check_write_options, dataset_info_entry, get_format, record_class, row_type
from .parallel import pool_context
from .io import RowWriter, guard_outputs, count_newlines, reject_row, rejects_path_for, split_name, split_ranges, with_first_lines
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
    row_type: str | None = None  # a file of one row type (Parquet, LLaMA-Factory): that type
    columns: set = field(default_factory=set)  # the columns written (single-type files)
    extra: Counter = field(default_factory=Counter)  # unmapped input fields (meta.extra) -> records written with them

    def check(self) -> None:
        assert self.records_in == self.kept + self.rejected, "record accounting broke: in != kept + rejected"

    def as_dict(self) -> dict:
        return {"in": self.records_in, "kept": self.kept, "rejected": self.rejected, "rows_out": self.rows_out,
                "format_in": self.fmt_in, "kinds": dict(self.kinds), "reject_reasons": dict(self.reasons),
                "flags": dict(self.flags), "unmapped_fields": dict(self.extra)}


    def merge(self, other: "RunCounts") -> None:
        self.records_in += other.records_in
        self.kept += other.kept
        self.rejected += other.rejected
        self.rows_out += other.rows_out
        self.reasons.update(other.reasons)
        self.flags.update(other.flags)
        self.kinds.update(other.kinds)
        self.extra.update(other.extra)
        self.columns |= other.columns
        self.row_type = self.row_type or other.row_type


Progress = Callable[[float, RunCounts], None]

PARALLEL_MIN_BYTES = 16 << 20  # below this, starting workers costs more than it saves


def convert(
    src: str | Path,
    dst: str | Path,
    to: str,
    ro: ReadOptions | None = None,
    write_opts: dict | None = None,
    rejects: str | Path | None = None,
    progress: Progress | None = None,
    write_dataset_info: bool = False,
    workers: int | None = None,
) -> RunCounts:
    """Convert one file. Rejects (read, parse, validate and write failures) go to `*.rejects.jsonl`.

    A large plain-JSONL input is split into line-aligned ranges converted by `workers`
    processes (default: all cores); the parts are joined in order, so the output, the rejects
    and their line numbers are byte-identical to a serial run.

    A Parquet file of a format with several row types (trl, alpaca, sharegpt), and a file
    written with `write_dataset_info`, hold one row type: the first record written fixes it
    (and the Parquet schema is that type's columns alone); a record of another type is a
    `wrong_kind` reject naming the export that takes it.
    """
    get_format(to)
    ro = ro or ReadOptions()
    write_opts = write_opts or {}
    check_write_options(write_opts)
    dst = Path(dst)
    if split_name(dst)[0] == "parquet" and "extra" not in write_opts:
        write_opts = {**write_opts, "extra": "drop"}  # a fixed schema has no column for unmapped fields
    rejects_path = Path(rejects) if rejects else rejects_path_for(dst)
    write_dataset_info = write_dataset_info and to in ("alpaca", "sharegpt")
    guard_outputs([src, *([ro.dataset_info] if ro.dataset_info else [])],
                  [dst, rejects_path, *([dst.parent / "dataset_info.json"] if write_dataset_info else [])])
    if write_dataset_info:
        check_dataset_info_target(dst)
    single = write_dataset_info or (split_name(dst)[0] == "parquet" and to in TYPE_COLUMNS)
    reader = RecordReader(src, ro)
    fmt_in = reader.detect()
    n_workers = 1 if single else _workers_for(reader, dst, workers)
    if n_workers > 1:
        counts = _convert_parallel(reader, dst, to, write_opts, rejects_path, progress, n_workers)
        for path, n in ((dst, counts.kept), (rejects_path, counts.rejected)):
            if not n:  # as the serial path: nothing to write, no file (nor an older one that would be stale)
                path.unlink(missing_ok=True)
    else:
        counts = _convert_range(reader, dst, to, write_opts, rejects_path, progress, single_type=single,
                                for_llamafactory=write_dataset_info)
    counts.check()
    counts.fmt_in = fmt_in
    if progress is not None:
        progress(1.0, counts)
    if write_dataset_info and counts.row_type:
        update_dataset_info(dst, to, counts.row_type, counts.columns)
    return counts


def _workers_for(reader: RecordReader, dst: Path, workers: int | None) -> int:
    src = reader.source
    if src.container != "jsonl" or src.gz or split_name(dst)[0] != "jsonl":
        return 1
    if workers is None:
        workers = (os.cpu_count() or 1) if src.size >= PARALLEL_MIN_BYTES else 1
    return max(1, min(workers, src.size // (1 << 20) + 1))


def _convert_range(reader: RecordReader, dst: Path, to: str, write_opts: dict, rejects_path: Path,
                   progress: Progress | None = None, single_type: bool = False,
                   for_llamafactory: bool = False) -> RunCounts:
    """The serial loop: every record from `reader` is written to `dst` or to the rejects file.
    `single_type`: the first record written fixes the file's row type, other types are rejected."""
    write = get_format(to).write
    counts = RunCounts()
    parquet = split_name(dst)[0] == "parquet"
    rej = RowWriter(rejects_path, "ptdata", keep_empty=False)  # no rejects, no file

    def unfit(tag: tuple, detail: str) -> None:  # a record the output container cannot hold
        pos, rec, n_rows = tag
        rej.write(reject_row(str(reader.alias), pos, reader.label, "write", RecordError("not_representable", detail), rec.to_dict()))
        counts.kept -= 1
        counts.rejected += 1
        counts.rows_out -= n_rows
        counts.kinds[rec.kind] -= 1
        counts.reasons["not_representable"] += 1

    with no_gc(), rej, RowWriter(dst, to, write_opts, on_unfit=unfit, keep_empty=False) as out:
        for n, (rec, bad) in enumerate(reader, 1):
            counts.records_in = n
            if rec is None:
                rej.write(bad)
                counts.rejected += 1
                counts.reasons[bad["reason"]] += 1
                continue
            try:
                rows = write(rec, write_opts)
                if single_type and rows:
                    t = _one_type(to, rows, rec, counts.row_type, parquet, for_llamafactory)
                    if counts.row_type is None:
                        counts.row_type = out.row_type = t
                    for r in rows:
                        counts.columns.update(r)
            except RecordError as e:
                rej.write(reject_row(str(reader.alias), reader.position, reader.label, "write", e, rec.to_dict()))
                counts.rejected += 1
                counts.reasons[e.reason] += 1
                continue
            out.write_many(rows, (reader.position, rec, len(rows)))
            counts.kept += 1
            counts.rows_out += len(rows)
            counts.kinds[rec.kind] += 1
            for f in rec.meta.get("flags", ()):
                counts.flags[f] += 1
            if "extra" in rec.meta and isinstance(rec.meta["extra"], dict):
                counts.extra.update(rec.meta["extra"].keys())
            if progress is not None and not n & 4095:
                progress(reader.fraction(), counts)
    return counts


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic GC in a streaming loop: records hold no cycles, and collections
    triggered by millions of short-lived dicts cost about a tenth of the run."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _range_job(args: tuple) -> RunCounts:
    src, ro, fmt, byte_range, first_line, dst, to, write_opts, rejects_path = args
    reader = RecordReader(src, ro, byte_range=byte_range, first_line=first_line, detected=fmt)
    return _convert_range(reader, Path(dst), to, write_opts, Path(rejects_path))


def _convert_parallel(reader: RecordReader, dst: Path, to: str, write_opts: dict, rejects_path: Path,
                      progress: Progress | None, n_workers: int) -> RunCounts:
    byte_ranges = split_ranges(reader.path, n_workers * 4)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent if dst.parent.exists() else None))
    try:
        ext = "jsonl.gz" if split_name(dst)[1] else "jsonl"
        counts = RunCounts()
        with pool_context().Pool(n_workers) as pool:
            newlines = pool.starmap(count_newlines, [(str(reader.path), r) for r in byte_ranges])
            ranges = with_first_lines(byte_ranges, newlines)
            jobs = [(str(reader.path), reader.ro, reader.fmt, (a, b), line, str(tmp / f"{i:05d}.{ext}"), to, write_opts,
                     str(tmp / f"{i:05d}.rejects.jsonl")) for i, (a, b, line) in enumerate(ranges)]
            for i, part in enumerate(pool.imap(_range_job, jobs), 1):
                counts.merge(part)
                if progress is not None:
                    progress(i / len(jobs), counts)
        _concat([Path(j[5]) for j in jobs], dst, missing_ok=True)
        _concat([Path(j[8]) for j in jobs], rejects_path, missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return counts


def _concat(parts: list[Path | tuple[Path, Any]], dst: Path, missing_ok: bool = False) -> None:
    """Join part files in order (gzip members concatenate into a valid gzip stream). A part may
    be (path, byte ranges): only those ranges of it, in order.

    copy_file_range copies inside the kernel: 8x faster than a read/write loop here.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(f".{dst.name}.partial")
    with open(partial, "wb") as out:
        for p in parts:
            p, ranges = p if isinstance(p, tuple) else (p, None)
            if missing_ok and not p.exists():  # a part that had nothing to write left no file
                continue
            with open(p, "rb") as f:
                for lo, hi in ([(0, os.fstat(f.fileno()).st_size)] if ranges is None else ranges):
                    _copy_range(f, out, int(lo), int(hi))
    os.replace(partial, dst)


def _copy_range(f, out, lo: int, hi: int) -> None:
    done = lo
    try:
        while done < hi:
            n = os.copy_file_range(f.fileno(), out.fileno(), hi - done, done)
            if n == 0:
                break
            done += n
    except (AttributeError, OSError):  # no copy_file_range here (or across filesystems)
        f.seek(done)
        out.seek(0, os.SEEK_END)
        while done < hi:
            chunk = f.read(min(8 << 20, hi - done))
            if not chunk:
                break
            out.write(chunk)
            done += len(chunk)


# Where a record of each class goes when the file in hand cannot take it.
OTHER_FILE = {"trl": {"sft": "--to trl-sft", "preference": "--to trl-dpo", "unpaired": "--to trl-kto"},
              "alpaca": {"sft": "--to llamafactory-sft", "preference": "--to llamafactory-ranking",
                         "unpaired": "--to llamafactory-kto"}}
OTHER_FILE["sharegpt"] = OTHER_FILE["alpaca"]
CLASS_NAMES = {"sft": "an sft record", "preference": "a preference pair", "unpaired": "an unpaired (KTO) record",
               "prompt": "an unlabeled prompt"}


def _one_type(to: str, rows: list[dict], rec, fixed: str | None, parquet: bool, for_llamafactory: bool) -> str:
    """The row type of a record's rows, or a wrong_kind RecordError when the file holds another type."""
    cls = record_class(rec)
    t = row_type(to, rows[0], cls)
    if for_llamafactory and cls == "prompt":
        raise RecordError("wrong_kind", "LLaMA-Factory has no dataset type for an unlabeled prompt (sft, ranking or kto)")
    if fixed is None or t == fixed:
        return t
    where = "a Parquet file" if parquet else "a LLaMA-Factory dataset"
    hint = OTHER_FILE.get(to, {}).get(cls)
    raise RecordError("wrong_kind", f"{CLASS_NAMES.get(cls, cls)} gives {TRL_TYPE_NAMES.get(t, t)}, but this file holds "
                      f"{TRL_TYPE_NAMES.get(fixed, fixed)} ({where} holds one type, set by its first record): "
                      + (f"export it with `ptdata export {hint}`" if hint else "convert it into a file of its own"))


def dataset_name(dst: Path) -> str:
    """The dataset_info.json name of a data file: its name without the container extension."""
    name = dst.name
    for ext in (".gz", ".parquet", ".jsonl", ".json", ".arrow", ".csv"):
        if name.endswith(ext) and len(name) > len(ext):
            name = name[: -len(ext)]
    return name


def check_dataset_info_target(dst: Path) -> None:
    """Refuse, before anything is written, a data file LLaMA-Factory cannot load or a dataset_info.json we cannot merge into."""
    if split_name(dst)[1]:
        raise InputError(f"{dst}: LLaMA-Factory does not read gzipped files; write .json, .jsonl or .parquet")
    read_dataset_info(dst.parent / "dataset_info.json")


def read_dataset_info(info_path: Path) -> dict:
    if not info_path.exists():
        return {}
    try:
        info = orjson.loads(info_path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise InputError(f"{info_path}: cannot merge into it, it is not readable JSON ({e})") from None
    if not isinstance(info, dict):
        raise InputError(f"{info_path}: cannot merge into it, it is not a JSON object of dataset entries")
    return info


def update_dataset_info(dst: Path, fmt: str, kind: "str | set[str]", columns: set | None = None) -> Path:
    """Add (or replace) this file's entry, named after the file, in the dataset_info.json beside
    it, for LLaMA-Factory; the other entries are kept as they are. Written atomically."""
    info_path = dst.parent / "dataset_info.json"
    info = read_dataset_info(info_path)
    info[dataset_name(dst)] = dataset_info_entry(fmt, dst.name, kind, columns)
    tmp = info_path.with_name(f".{info_path.name}.partial")
    tmp.write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(tmp, info_path)
    return info_path
