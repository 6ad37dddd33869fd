"""The worker side of a run: one shard of one segment at a time. It drops what the previous
global op decided, applies the segment's map ops batch by batch, writes kept records, rejects,
stats and the keys of the segment's global op; the parent never touches record data."""
from __future__ import annotations

import gc
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import orjson
import xxhash

from ..ops.base import Drop
from ..parallel import pool_context
from ..reader import RecordReader
from ..records import Record
from .recipe import Recipe
from .decision import decide_part, load_decision_parts
from .histograms import Hist, HistColumns
from .plan import Segment, Shard
from .shards import COPY_KEY, save_bundle


def reject_row_bytes(rec: bytes, op_name: str, reason: str, detail: str, source: bytes | None = None, copy: bool = False) -> bytes:
    """A global op's reject row around a record line ptdata wrote (no parsing: id and source are
    read from the line; `source`, a JSON string, overrides the line's own). `copy`: the record
    is a copy of the one kept, listed by reference."""
    if copy:
        return copy_row_bytes(source or _source_of(rec), op_name, reason, detail, rec[6:40])
    return b"".join((b'{"source":', source or _source_of(rec), b',"op":', orjson.dumps(op_name), b',"reason":', orjson.dumps(reason),
                     b',"detail":', orjson.dumps(detail), b',"id":', rec[6:40], b',"record":', rec, b"}\n"))


def copy_fingerprint(line: bytes, meta: dict) -> int:
    """xxh3-64 of a record line ptdata wrote (meta last), all but its meta.source value: two
    records are copies when these agree. 0 (never a copy) for a record without a source."""
    src = meta.get("source")
    if not isinstance(src, str):
        return 0
    if len(meta) == 1:  # the usual meta: {"source": ...}
        cut = len(line) - len(orjson.dumps(src)) - 12
        if line[cut:cut + 10] != b'{"source":':
            return 0
        head, rest, at = line[:cut], b"{}", 0
    else:
        mb = orjson.dumps(meta)
        if not line.endswith(mb + b"}"):
            return 0
        head = line[:len(line) - len(mb) - 1]
        rest, at = orjson.dumps({k: v for k, v in meta.items() if k != "source"}), list(meta).index("source")
    return xxhash.xxh3_64_intdigest(b"%b%b%d" % (head, rest, at)) or 1


def copy_row_bytes(source: bytes, op_name: str, reason: str, detail: str, rid: bytes) -> bytes:
    """A reject row for a copy of the record the op kept (`copy_of`: its id); the record is not
    repeated: it is that record with this row's source as its meta.source."""
    return b"".join((b'{"source":', source, b',"op":', orjson.dumps(op_name), b',"reason":', orjson.dumps(reason),
                     b',"detail":', orjson.dumps(detail), b',"id":', rid, b',"copy_of":', rid, b"}\n"))


def note_contamination(store: dict[str, list], rec: Record) -> None:
    """For the report: the benchmark items a record matched, each with [record id, layer, score]."""
    for c in rec.meta.get("contamination", ()):
        if isinstance(c, dict) and "item" in c:
            store.setdefault(c["item"], []).append([rec.id, c.get("layer"), c.get("score")])


class Workers:
    """A process pool started with the run state (or this process, with one worker: no pool to
    start, easy to profile); `map` yields results as they finish."""

    def __init__(self, state: dict, n: int, processes: int | None = None) -> None:
        self.state, self.n, self.processes, self.pool = state, n, processes or n, None

    def __enter__(self) -> "Workers":
        if self.n > 1:
            self.pool = pool_context().Pool(self.processes, _init_worker, (self.state,))
        else:
            _init_worker(self.state)
        return self

    def map(self, fn: Callable, jobs: list) -> Iterator:
        if not jobs:
            return iter(())
        return map(fn, jobs) if self.pool is None else self.pool.imap_unordered(fn, jobs)

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.terminate() if exc[0] else self.pool.close()
            self.pool.join()


# --- worker side -----------------------------------------------------------------------------

_CTX: dict[str, Any] = {}  # worker state: recipe, segments, shards, work dir, formats, decisions


def _init_worker(state: dict[str, Any]) -> None:
    """Pool initializer: receives the run state (inherited under fork, pickled under forkserver)."""
    _CTX.clear()
    _CTX.update(state)
    if os.getpid() != state.get("parent_pid"):
        from ..llm import base as llm_base

        llm_base.on_result = None  # a forked worker must not draw on the parent's terminal
    for op in state["recipe"].ops:
        op.setup()  # no-op when already built in the parent and inherited


def _source_records(seg: Segment, shard_no: int, work: Path, shards: list[Shard]) -> Iterator[tuple[Record | None, dict | None]]:
    if seg.index == 0:
        sh = shards[shard_no]
        recipe: Recipe = _CTX["recipe"]
        inp = recipe.inputs[sh.input_index]
        ro = inp.read_options(recipe.validation)
        reader = RecordReader(sh.path, ro, byte_range=sh.byte_range, first_line=sh.first_line,
                              detected=_CTX["formats"].get(sh.path), alias=sh.alias)
        yield from reader
        return
    prev = work / f"seg{seg.index - 1}" / f"{shard_no:05d}.jsonl"
    with open(prev, "rb") as f:
        for line in f:
            yield Record.from_trusted(orjson.loads(line)), None


def shard_drop_arrays(work: Path, si: int, offset: int, n: int) -> tuple[list[int], list[str], list[bytes], list[bool]]:
    """The previous global op's drops inside [offset, offset + n): local positions (sorted),
    reasons, details (UTF-8) and whether each is a copy of the record kept in its place.
    Decisions live on disk as sorted arrays, one per partition; each worker maps only its slice."""
    pos: list[np.ndarray] = []
    reasons: list[str] = []
    details: list[np.ndarray] = []
    copies: list[np.ndarray] = []
    for dec, meta in load_decision_parts(work, si):
        drop = dec["drop"]
        lo, hi = np.searchsorted(drop, [offset, offset + n])
        if hi > lo:
            pos.append(drop[lo:hi] - offset)
            reasons += [meta["reasons"][c] for c in dec["reason"][lo:hi].tolist()]
            details.append(dec["detail"][lo:hi])
            copies.append(dec["copy"][lo:hi])
    if not pos:
        return [], [], [], []
    if len(pos) == 1:
        return pos[0].tolist(), reasons, details[0].tolist(), copies[0].tolist()
    at = np.concatenate(pos)
    order = np.argsort(at, kind="stable")
    return (at[order].tolist(), [reasons[i] for i in order.tolist()], np.concatenate(details)[order].tolist(),
            np.concatenate(copies)[order].tolist())


def _shard_drops(work: Path, si: int, offset: int, n: int) -> dict[int, tuple[str, str, bool]]:
    """The same drops as a dict by local position."""
    pos, reasons, details, copies = shard_drop_arrays(work, si, offset, n)
    return {i: (r, t.decode(), c) for i, r, t, c in zip(pos, reasons, details, copies)}


def _process_shard(args: tuple[int, int, int, int]) -> dict:
    """Worker: segment `si`, shard `shard_no`. `offset`, `n`: where this shard's records sit in the
    previous global op's numbering. Writes kept records, rejects, keys and stats; returns the stats."""
    si, shard_no, offset, n = args
    gc.disable()
    work: Path = _CTX["work"]
    segments: list[Segment] = _CTX["segments"]
    seg = segments[si]
    out_dir = work / f"seg{si}"
    prev_global = segments[si - 1].global_op if si > 0 else None
    drops = _shard_drops(work, si - 1, offset, n) if prev_global is not None else {}
    stats = {"shard": shard_no, "in": 0, "kept": 0, "ops": {}, "read_rejects": Counter(), "contamination": {}}
    op_stats = {op.name: {"in": 0, "kept": 0, "added": 0, "dropped": Counter(), "seconds": 0.0} for op in seg.map_ops}
    if prev_global is not None:
        op_stats = {prev_global.name: {"in": 0, "kept": 0, "added": 0, "dropped": Counter(), "seconds": 0.0}, **op_stats}
    hist = Hist() if si == len(segments) - 1 else None
    cols = HistColumns() if si + 1 < len(segments) and segments[si + 1].applies_only else None  # the last segment counts from these
    tmp = {k: out_dir / f".{shard_no:05d}.{k}.partial" for k in ("jsonl", "rejects.jsonl", "stats.json")}
    if seg.applies_only:
        with open(tmp["rejects.jsonl"], "wb") as rej:
            ranges = _apply_bytes(work / f"seg{si - 1}" / f"{shard_no:05d}", drops, prev_global.name, rej, stats, op_stats, hist)
        save_bundle(out_dir / f"{shard_no:05d}.ranges.bin", {"ranges": ranges})
    else:
        with open(tmp["jsonl"], "wb") as out, open(tmp["rejects.jsonl"], "wb") as rej:
            keys = _apply_records(seg, shard_no, drops, prev_global, out, rej, stats, op_stats, hist or cols)
        if seg.global_op is not None:
            save_bundle(out_dir / f"{shard_no:05d}.keys.bin", keys)
            stats["keys"] = {name: len(a) for name, a in keys.items()}
        if cols is not None:
            cols.save(out_dir / f"{shard_no:05d}.hist.bin")
        os.replace(tmp["jsonl"], out_dir / f"{shard_no:05d}.jsonl")
    os.replace(tmp["rejects.jsonl"], out_dir / f"{shard_no:05d}.rejects.jsonl")
    stats["ops"] = {k: {**v, "dropped": dict(v["dropped"])} for k, v in op_stats.items()}
    stats["read_rejects"] = dict(stats["read_rejects"])
    stats.update(hist.as_dict() if hist is not None else {"hist": {}, "langs": {}, "flags": {}, "kinds": {}})
    tmp["stats.json"].write_bytes(orjson.dumps(stats))
    os.replace(tmp["stats.json"], out_dir / f"{shard_no:05d}.stats.json")  # commit marker: written last
    return stats


def _decide_part(args: tuple[int, int, int, list[dict]]) -> tuple[int, dict]:
    """Worker: partition `part` of `parts` of segment `si`'s decision (`stats`: each shard's
    kept count and keys); commits it and returns (part, its report)."""
    si, part, parts, stats = args
    seg = _CTX["segments"][si]
    return part, decide_part(seg, _CTX["work"], stats, part, parts, _CTX["recipe"].output.copies_by_reference)


def _stage_job(args: tuple) -> object:
    """Worker: one job of a staged decision (pipeline/staged.py): (stage, its arguments)."""
    from .staged import STAGES

    return STAGES[args[0]](*args[1:])


def _apply_bytes(src: Path, drops: dict, op_name: str, rej, stats: dict, op_stats: dict, hist: Hist) -> np.ndarray:
    """Apply a global decision without parsing records: returns the byte ranges of the runs of
    kept lines of `src`.jsonl between the drops (the writer copies them into the output), writes
    the reject rows spliced around each dropped line (id and source read from the line ptdata
    itself wrote), and counts the kept records from the columns the segment before saved."""
    st = op_stats[op_name]
    data = src.with_name(f"{src.name}.jsonl").read_bytes()
    ends = _line_ends(data)
    n = len(ends)
    stats["in"] += n
    st["in"] += n
    keep = np.ones(n, dtype=bool)
    ranges, start = [], 0
    for i in sorted(drops):
        lo = int(ends[i - 1]) if i else 0
        if lo > start:
            ranges.append((start, lo))
        start = int(ends[i])
        reason, detail, copy = drops[i]
        st["dropped"][reason] += 1
        rej.write(reject_row_bytes(data[lo:start - 1], op_name, reason, detail, copy=copy))
        keep[i] = False
    if len(data) > start:
        ranges.append((start, len(data)))
    kept = int(keep.sum())
    st["kept"] += kept
    stats["kept"] += kept
    hist.add_columns(HistColumns.load(src.with_name(f"{src.name}.hist.bin")), keep)
    return np.array(ranges, dtype=np.int64).reshape(-1, 2)


def _line_ends(data: bytes, chunk: int = 8 << 20) -> np.ndarray:
    """The offset just past each newline of `data`, found in chunks (a bounded temporary)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    parts = [np.flatnonzero(buf[at:at + chunk] == 10) + (at + 1) for at in range(0, len(buf), chunk)]
    if data and data[-1] != 10:  # a last line without its newline
        parts.append(np.array([len(data)]))
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def _source_of(line: bytes) -> bytes:
    """meta.source of a ptdata record line (meta is the last key ptdata writes)."""
    m = line.rfind(b',"meta":{')
    k = line.find(b'"source":', m) if m >= 0 else -1
    if k < 0:
        return b'""'
    start = k + 9
    end = line.find(b'"', start + 1)
    while end > 0 and line[end - 1] == 92:  # an escaped quote inside the value
        end = line.find(b'"', end + 1)
    return line[start:end + 1] if end > 0 else b'""'


def _apply_records(seg: Segment, shard_no: int, drops: dict, prev_global, out, rej, stats: dict, op_stats: dict,
                   hist: "Hist | HistColumns | None") -> dict[str, np.ndarray]:
    """The general path: records are rebuilt, map ops run batch by batch, global keys computed."""
    keys_parts: list[dict[str, np.ndarray]] = []
    batch_size = _CTX["recipe"].batch_size

    def flush(batch: list[Record]) -> None:
        for op in seg.map_ops:
            st = op_stats[op.name]
            n_in = len(batch)
            st["in"] += n_in
            t = time.perf_counter()
            batch, dropped = op.process(batch)
            st["seconds"] += time.perf_counter() - t
            st["kept"] += len(batch)
            added = len(batch) + len(dropped) - n_in  # ops that derive records (n samples, several pairs)
            if added < 0:
                raise RuntimeError(f"op {op.name} lost {-added} record(s): every record must be kept or dropped")
            st["added"] += added
            if hasattr(op, "counters"):  # model calls, cache hits, retries, tokens
                counters = st.setdefault("counters", {})
                for k, v in op.counters().items():
                    counters[k] = counters.get(k, 0) + v
            for rec, d in dropped:
                st["dropped"][d.reason] += 1
                rej.write(orjson.dumps(_reject(rec, op.name, d)) + b"\n")
                if d.reason == "contaminated":
                    note_contamination(stats["contamination"], rec)
            if type(op).name == "decontaminate" and getattr(op, "action", "drop") == "flag":
                for rec in batch:  # flagged, kept: counted the same way
                    note_contamination(stats["contamination"], rec)
        if seg.global_op is not None and batch:
            t = time.perf_counter()
            keys_parts.append(seg.global_op.keys(batch))
            stats["keys_seconds"] = stats.get("keys_seconds", 0.0) + time.perf_counter() - t
        dumps = orjson.dumps
        fps = []
        for rec in batch:
            d = rec.to_dict()
            line = dumps(d)
            out.write(line + b"\n")
            if hist is not None:
                hist.add(d)
            if seg.global_op is not None:
                fps.append(copy_fingerprint(line, d["meta"]))
        if seg.global_op is not None and batch:
            keys_parts[-1][COPY_KEY] = np.array(fps, dtype=np.uint64)
        stats["kept"] += len(batch)

    batch: list[Record] = []
    index = 0
    work: Path = _CTX["work"]
    for rec, bad in _source_records(seg, shard_no, work, _CTX["shards"]):
        stats["in"] += 1
        if rec is None:
            stats["read_rejects"][bad["reason"]] += 1
            rej.write(orjson.dumps(bad) + b"\n")
            continue
        if prev_global is not None:
            st = op_stats[prev_global.name]
            st["in"] += 1
            d = drops.get(index)
            index += 1
            if d is not None:
                st["dropped"][d[0]] += 1
                if d[2]:  # a copy of the record kept: by reference
                    rej.write(copy_row_bytes(orjson.dumps(rec.meta["source"]), prev_global.name, d[0], d[1], orjson.dumps(rec.id)))
                else:
                    rej.write(orjson.dumps(_reject(rec, prev_global.name, Drop(d[0], d[1]))) + b"\n")
                continue
            st["kept"] += 1
        batch.append(rec)
        if len(batch) >= batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    return {k: np.concatenate([p[k] for p in keys_parts]) for k in keys_parts[0]} if keys_parts else {}


def _reject(rec: Record, op: str, d: Drop) -> dict:
    return {"source": rec.meta.get("source", ""), "op": op, "reason": d.reason, "detail": d.detail, "id": rec.id, "record": rec.to_dict()}
