"""A run's rejects with every record in place.

With `output.rejects: compact` (the default) a record a dedup op dropped that is byte for byte
the record it kept in its place, all but meta.source, is listed by reference:

    {"source": "data.jsonl:52003", "op": "exact_dedup", "reason": "exact_duplicate",
     "detail": "same text as 53ce…", "id": "53ce…", "copy_of": "53ce…"}

Its record is the one with id `copy_of` that got past that op (in the kept file, or in the
rejects of a later op), with this row's source as its meta.source. Merged datasets and traffic
logs repeat records many times over; listing each copy in full made the rejects file ten
times the size of the kept one on Alpaca x10. `read_rejects(..., full=True)` gives the rows
exactly as `output.rejects: full` writes them (tested byte for byte).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import orjson

from ..errors import InputError
from ..io import RowSource


def read_rejects(out_dir: str | Path, full: bool = True) -> Iterator[dict[str, Any]]:
    """The rows of OUT/rejects.jsonl in order; with `full`, reference rows get their record back."""
    out_dir = Path(out_dir)
    path = out_dir / "rejects.jsonl"
    if not path.exists():
        raise InputError(f"{path}: no such file (is {out_dir} the output directory of a run?)")
    wanted = _referenced(path) if full else {}
    if not wanted:
        yield from _rows(path)
        return
    records = _records_past(out_dir, path, wanted)
    for row in _rows(path):
        ref = row.get("copy_of")
        if ref is None:
            yield row
            continue
        rec = records.get((row["op"], ref))
        if rec is None:
            raise InputError(f"{path}: the record {ref} that {row['source']} is a copy of is neither kept nor rejected by a later op "
                             "(was the kept file changed or removed?)")
        meta = dict(rec["meta"])
        meta["source"] = row["source"]  # source is meta's first key: the order is kept
        yield {"source": row["source"], "op": row["op"], "reason": row["reason"], "detail": row["detail"], "id": row["id"],
               "record": {**rec, "meta": meta}}


def write_full_rejects(out_dir: str | Path, dst: str | Path) -> int:
    """Write the full rows (as `output.rejects: full` would) to dst; returns the row count."""
    n = 0
    with open(dst, "wb") as f:
        for row in read_rejects(out_dir, full=True):
            f.write(orjson.dumps(row) + b"\n")
            n += 1
    return n


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError as e:
                    raise InputError(f"{path}:{lineno}: not a JSON row ({e})") from None


def _referenced(path: Path) -> dict[str, set[str]]:
    """op -> the ids its reference rows point at."""
    out: dict[str, set[str]] = {}
    for row in _rows(path):
        if "copy_of" in row:
            out.setdefault(row["op"], set()).add(row["copy_of"])
    return out


def _records_past(out_dir: Path, path: Path, wanted: dict[str, set[str]]) -> dict[tuple[str, str], dict]:
    """(op, id) -> the record with that id that got past that op: kept, or rejected by a later op."""
    stats = orjson.loads((out_dir / "stats.json").read_bytes())
    order = {st["op"]: k for k, st in enumerate(stats["ops"])}
    ids = set().union(*wanted.values())
    found: dict[str, list[tuple[float, dict]]] = {}  # id -> (index of the op that dropped it, or inf when kept; record)
    for row in _rows(path):
        rec = row.get("record")
        if isinstance(rec, dict) and row.get("id") in ids:
            found.setdefault(row["id"], []).append((order.get(row["op"], -1), rec))
    kept = out_dir / stats.get("kept_file", "kept.jsonl")
    if kept.exists() and kept.stat().st_size:
        for _, rec in RowSource(kept):
            if isinstance(rec, dict) and rec.get("id") in ids:
                found.setdefault(rec["id"], []).append((float("inf"), rec))
    out: dict[tuple[str, str], dict] = {}
    for op, refs in wanted.items():
        k = order.get(op, -1)
        for rid in refs:
            later = [rec for at, rec in found.get(rid, ()) if at > k]
            if later:
                out[(op, rid)] = later[0]
    return out
