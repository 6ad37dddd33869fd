"""The local executor: a streaming, resumable run of a recipe on a process pool.

Plan: the ops are cut into segments, each a run of map ops ended by at most one global op.
Inputs are cut into shards (line-aligned ranges of JSONL files; whole files otherwise).
Segment s turns shard i of segment s-1 (or of the input) into shard i of segment s:
it drops what the previous global op decided, applies its map ops batch by batch, writes
kept records, rejects and stats, and computes the keys of its global op. The parent then
runs that op's `decide` on all keys. Workers write their own files, so the parent never
touches record data until the final concatenation.

Resume: every shard is written under a temporary name and committed by renaming; its stats
file, written last, marks it done; decisions are committed the same way. A rerun with the
same recipe and inputs skips what is done, so a run killed at any point finishes with
output identical to an uninterrupted one, and no record twice.
"""
from __future__ import annotations

import gc
import gzip
import math
import mmap
import os
import shutil
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import orjson
import xxhash

from .. import __version__
from ..convert import _concat
from ..formats import get_format
from ..io import RowWriter, guard_outputs, sniff, newline_counts, split_name, split_ranges, with_first_lines
from ..errors import InputError, RecordError
from ..ops.base import Drop, GlobalOp, MapOp, Op
from ..parallel import pool_context
from ..reader import RecordReader
from ..records import Record
from .recipe import RUN_FILES, SUCCESS, Recipe

Progress = Callable[[str, int, int], None]  # (stage label, done, total)


@dataclass
class Shard:
    """One unit of work of segment 0: a file, or a line-aligned range of a plain JSONL file."""

    path: str
    alias: str
    input_index: int
    byte_range: tuple[int, int] | None = None
    first_line: int = 1  # 0 until `number_shards` has counted the lines before a split shard


@dataclass
class Segment:
    index: int
    map_ops: list[MapOp]
    global_op: GlobalOp | None


@dataclass
class RunResult:
    out_dir: Path
    kept_path: Path
    rejects_path: Path
    stats_path: Path
    report_path: Path | None
    stats: dict
    resumed_shards: int = 0

    @property
    def records_in(self) -> int:
        return self.stats["records_in"]

    @property
    def kept(self) -> int:
        return self.stats["kept"]

    @property
    def rejected(self) -> int:
        return self.stats["rejected"]


def plan_segments(ops: list[Op]) -> list[Segment]:
    segs: list[Segment] = []
    current: list[MapOp] = []
    for op in ops:
        if isinstance(op, GlobalOp):
            segs.append(Segment(len(segs), current, op))
            current = []
        else:
            current.append(op)  # type: ignore[arg-type]
    segs.append(Segment(len(segs), current, None))  # the last one applies the final decisions
    return segs


def commit_file(path: Path, write: Callable[[Any], None]) -> None:
    """Write a file under a temporary name and rename it into place: a reader (or a resumed run)
    sees it whole or not at all."""
    part = path.with_name(f".{path.name}.partial")
    with open(part, "wb") as f:
        write(f)
    os.replace(part, path)


_BUNDLE_MAGIC = b"PTDATA-B"


def save_bundle(path: Path, arrays: dict[str, np.ndarray], meta: Any = None) -> None:
    """Several arrays and a JSON value in one committed file. One file, not one per array:
    creating a file costs far more than writing a few MB into it (ext4 scans for a free inode,
    slowly after many deletions), and a run writes hundreds. Arrays are 64-byte aligned and
    mapped on load without a copy, so workers share their pages."""
    arrs = {k: np.ascontiguousarray(a) for k, a in arrays.items()}
    specs, off = {}, 0
    for k, a in arrs.items():
        specs[k] = [np.lib.format.dtype_to_descr(a.dtype), list(a.shape), off]
        off += -(-a.nbytes // 64) * 64
    head = orjson.dumps({"meta": meta, "arrays": specs})
    head += b" " * (-(len(head) + 16) % 64)

    def write(f) -> None:
        f.write(_BUNDLE_MAGIC + len(head).to_bytes(8, "little") + head)
        for a in arrs.values():
            if a.nbytes:
                f.write(memoryview(a.reshape(-1).view(np.uint8)))
                f.write(b"\0" * (-a.nbytes % 64))
    commit_file(path, write)


def load_bundle(path: Path) -> tuple[dict[str, np.ndarray], Any]:
    """(arrays, meta) of a bundle; the arrays are read-only views of the mapped file."""
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if mm[:8] != _BUNDLE_MAGIC:
        raise ValueError(f"{path}: not a ptdata bundle")
    n = int.from_bytes(mm[8:16], "little")
    head = orjson.loads(mm[16:16 + n])
    base = 16 + n
    arrays = {}
    for k, (dt, shape, off) in head["arrays"].items():
        dtype = np.lib.format.descr_to_dtype(dt if isinstance(dt, str) else [tuple(f) for f in dt])
        count = int(np.prod(shape, dtype=np.int64))
        arrays[k] = (np.frombuffer(mm, dtype, count, base + off) if count else np.empty(0, dtype)).reshape(shape)
    return arrays, head["meta"]


def reject_row_bytes(rec: bytes, op_name: str, reason: str, detail: str, source: bytes | None = None, copy: bool = False) -> bytes:
    """A global op's reject row around a record line ptdata wrote (no parsing: id and source are
    read from the line; `source`, a JSON string, overrides the line's own). `copy`: the record
    is a copy of the one kept, listed by reference."""
    if copy:
        return copy_row_bytes(source or _source_of(rec), op_name, reason, detail, rec[6:40])
    return b"".join((b'{"source":', source or _source_of(rec), b',"op":', orjson.dumps(op_name), b',"reason":', orjson.dumps(reason),
                     b',"detail":', orjson.dumps(detail), b',"id":', rec[6:40], b',"record":', rec, b"}\n"))


COPY_KEY = "_copy_fp"  # the executor's own key beside a global op's: what a drop must equal to be a reference


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
    Decisions live on disk as sorted arrays; each worker maps only its own slice."""
    dec, meta = load_decision(work, si)
    drop = dec["drop"]
    lo, hi = np.searchsorted(drop, [offset, offset + n])
    if hi <= lo:
        return [], [], [], []
    reasons = meta["reasons"]
    codes = dec["reason"][lo:hi].tolist()
    return (drop[lo:hi] - offset).tolist(), [reasons[c] for c in codes], dec["detail"][lo:hi].tolist(), dec["copy"][lo:hi].tolist()


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
    hist = _Hist() if si == len(segments) - 1 else None
    tmp = {k: out_dir / f".{shard_no:05d}.{k}.partial" for k in ("jsonl", "rejects.jsonl", "stats.json")}
    with open(tmp["jsonl"], "wb") as out, open(tmp["rejects.jsonl"], "wb") as rej:
        if prev_global is not None and not seg.map_ops and seg.global_op is None:
            _apply_bytes(work / f"seg{si - 1}" / f"{shard_no:05d}.jsonl", drops, prev_global.name, out, rej, stats, op_stats, hist)
        else:
            keys = _apply_records(seg, shard_no, drops, prev_global, out, rej, stats, op_stats, hist)
            if seg.global_op is not None:
                save_bundle(out_dir / f"{shard_no:05d}.keys.bin", keys)
                stats["keys"] = {name: len(a) for name, a in keys.items()}
    os.replace(tmp["jsonl"], out_dir / f"{shard_no:05d}.jsonl")
    os.replace(tmp["rejects.jsonl"], out_dir / f"{shard_no:05d}.rejects.jsonl")
    stats["ops"] = {k: {**v, "dropped": dict(v["dropped"])} for k, v in op_stats.items()}
    stats["read_rejects"] = dict(stats["read_rejects"])
    stats.update(hist.as_dict() if hist is not None else {"hist": {}, "langs": {}, "flags": {}, "kinds": {}})
    tmp["stats.json"].write_bytes(orjson.dumps(stats))
    os.replace(tmp["stats.json"], out_dir / f"{shard_no:05d}.stats.json")  # commit marker: written last
    return stats


def _apply_bytes(src: Path, drops: dict, op_name: str, out, rej, stats: dict, op_stats: dict, hist: "_Hist | None") -> None:
    """Apply a global decision without parsing records: kept lines are copied, reject rows are
    spliced around the dropped line (id and source read from the line ptdata itself wrote)."""
    st = op_stats[op_name]
    with open(src, "rb") as f:
        for i, line in enumerate(f):
            stats["in"] += 1
            st["in"] += 1
            d = drops.get(i)
            if d is None:
                st["kept"] += 1
                stats["kept"] += 1
                out.write(line)
                if hist is not None:
                    hist.add(orjson.loads(line))
                continue
            reason, detail, copy = d
            st["dropped"][reason] += 1
            rej.write(reject_row_bytes(line.rstrip(b"\n"), op_name, reason, detail, copy=copy))


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
                   hist: "_Hist | None") -> dict[str, np.ndarray]:
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


def _response_len(d: dict) -> int:
    if d["kind"] == "sft":
        return len(d["messages"][-1]["content"])
    if d["kind"] == "preference":
        return sum(len(m["content"]) for m in (d.get("chosen") or d.get("rejected") or []) if m["role"] == "assistant")
    return len(d["messages"][-1]["content"]) if d["messages"] else 0


PII_FLAG = "pii:"  # a flag-channel entry counting one redaction of that type


class _Hist:
    """Fixed-bin histograms of lengths and scores of the kept records, summed across shards for the report."""

    LEN_BINS = [0, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 10**9]
    UNIT_BINS = [i / 20 for i in range(21)]

    def __init__(self) -> None:
        self.len_resp: list[int] = []
        self.scores: dict[str, list[float]] = {}
        self.langs: Counter = Counter()
        self.flags: Counter = Counter()
        self.kinds: Counter = Counter()

    @staticmethod
    def fields(d: dict) -> tuple[int, str, Any, Any, list[tuple[str, float]]]:
        """What the report counts of a record: response length, kind, language, flags and the
        scores that are finite numbers (a record about to be written may hold a NaN, which JSON
        writes as null, so it is not counted either way)."""
        meta = d["meta"]
        scores = [(k, float(v)) for k, v in d["scores"].items() if isinstance(v, (int, float)) and (isinstance(v, int) or math.isfinite(v))]
        flags = meta.get("flags", ())
        pii = meta.get("pii")
        if pii:  # redactions travel with the flags (one entry each) and are split out in the merged stats
            flags = [*flags, *(f"{PII_FLAG}{t}" for t, n in pii.items() for _ in range(int(n)))]
        return _response_len(d), d["kind"], meta.get("lang", "?"), flags, scores

    def add(self, d: dict) -> None:
        length, kind, lang, flags, scores = self.fields(d)
        self.len_resp.append(length)
        for k, v in scores:
            self.scores.setdefault(k, []).append(v)
        self.langs[lang] += 1
        self.kinds[kind] += 1
        for f in flags:
            self.flags[f] += 1

    def as_dict(self) -> dict:
        hist = {"length": np.histogram(self.len_resp, bins=self.LEN_BINS)[0].tolist()}
        for k, vals in self.scores.items():
            a = np.asarray(vals)
            bins = self.LEN_BINS if k.startswith("tokens.") or a.max(initial=0) > 1 or a.min(initial=0) < 0 else self.UNIT_BINS
            hist[f"score:{k}"] = {"bins": bins, "counts": np.histogram(a, bins=bins)[0].tolist()}
        return {"hist": hist, "langs": dict(self.langs), "flags": dict(self.flags), "kinds": dict(self.kinds)}


# --- parent side -----------------------------------------------------------------------------

WORK_LAYOUT = 3  # the files a run keeps in its work dir; a dir kept in another layout is not resumed


def file_fingerprint(path: Path, block: int = 8 << 20) -> str:
    """xxh3-128 of a file's bytes: what resume trusts (an input edited in place keeps its size
    and can keep its mtime). About 0.1 s per GB from the page cache."""
    h = xxhash.xxh3_128()
    buf = bytearray(block)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _manifest(recipe: Recipe, files: list[list[Path]]) -> bytes:
    inputs = [[str(p), p.stat().st_size, file_fingerprint(p)] for group in files for p in group]
    return orjson.dumps({"ptdata": __version__, "layout": WORK_LAYOUT, "recipe": orjson.loads(recipe.fingerprint()), "inputs": inputs,
                         "outputs": _output_names(recipe)},
                        option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)


def _output_names(recipe: Recipe) -> list[str]:
    return [recipe.output.file, *RUN_FILES]


def _clear_outputs(out_dir: Path, old_manifest: bytes | None, recipe: Recipe) -> None:
    """Before a run writes anything: no completion marker, and the outputs of an earlier,
    different recipe (or inputs) moved to `.previous/`, so nothing stale looks complete."""
    names = set(_output_names(recipe))
    for record in (old_manifest, _read_or_none(out_dir / SUCCESS)):  # the earlier run's outputs, by either record
        if record is not None:
            try:
                names |= set(orjson.loads(record).get("outputs") or [])
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                pass
    prev = out_dir / ".previous"
    present = [n for n in sorted(names, key=lambda n: n != SUCCESS) if "/" not in n and (out_dir / n).is_file()]
    if not present:
        return
    shutil.rmtree(prev, ignore_errors=True)  # only the last run is kept aside, whole
    prev.mkdir(parents=True)
    for name in present:  # the marker first: a kill half-way leaves nothing that claims to be complete
        os.replace(out_dir / name, prev / name)


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def recipe_hash(recipe: Recipe) -> str:
    """What the recipe does (inputs, ops, output format), not where it writes."""
    d = orjson.loads(recipe.fingerprint())
    d["output"].pop("dir", None)
    return xxhash.xxh3_64_hexdigest(orjson.dumps(d, option=orjson.OPT_SORT_KEYS))


def _mark_done(result: "RunResult", recipe: Recipe, manifest: bytes) -> "RunResult":
    """The completion marker, written after every output is whole."""
    commit_file(result.out_dir / SUCCESS, lambda f: f.write(orjson.dumps(
        {"recipe": recipe.name, "recipe_hash": recipe_hash(recipe), "inputs": orjson.loads(manifest)["inputs"],
         "outputs": _output_names(recipe),
         "records_in": result.records_in, "kept": result.kept, "rejected": result.rejected, "ptdata": __version__},
        option=orjson.OPT_INDENT_2) + b"\n"))
    return result


def _make_shards(recipe: Recipe, files: list[list[Path]], work: Path) -> list[Shard]:
    """Cut inputs into shards; gzipped JSONL is inflated once into the work dir so it can be split."""
    shards: list[Shard] = []
    for ii, group in enumerate(files):
        for jj, path in enumerate(group):
            container, gz = sniff(path)  # from the bytes: a JSON array named .jsonl is not split into line ranges
            src = path
            if gz and container == "jsonl":
                # one copy per input file: two inputs may share a name (g/a/train.jsonl.gz, g/b/train.jsonl.gz)
                plain = _inflated(path, work / "inputs" / f"{ii}-{jj}-{path.name[:-3]}")
                if plain is None:  # truncated or corrupt: read as it is, so its readable lines are kept
                    shards.append(Shard(str(path), lineage_path(path, recipe.base_dir), ii))
                    continue
                src, container, gz = plain, "jsonl", False
            if container == "jsonl" and not gz and src.stat().st_size > recipe.shard_bytes:
                ranges = split_ranges(src, max(1, src.stat().st_size // recipe.shard_bytes))
                shards.extend(Shard(str(src), lineage_path(path, recipe.base_dir), ii, r, 1 if k == 0 else 0)
                              for k, r in enumerate(ranges))
            else:
                shards.append(Shard(str(src), lineage_path(path, recipe.base_dir), ii))
    return shards


def lineage_path(path: Path, base: Path) -> str:
    """How records and rejects name their file: relative to the recipe's directory when inside
    it (so a/train.jsonl and b/train.jsonl stay apart), else the absolute path."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(os.path.abspath(base)))
    except ValueError:
        return str(os.path.abspath(path))


def _inflated(path: Path, plain: Path) -> Path | None:
    """A gzipped JSONL input inflated once into the work dir (so it can be split), or None when
    the stream is truncated or corrupt: its reader then keeps the readable lines and rejects the
    rest as `corrupt_file`, naming the last good line."""
    if plain.exists():
        return plain
    plain.parent.mkdir(parents=True, exist_ok=True)
    part = plain.with_name(plain.name + ".partial")
    try:
        with gzip.open(path, "rb") as g, open(part, "wb") as f:
            shutil.copyfileobj(g, f, 8 << 20)
    except (OSError, EOFError, zlib.error):
        part.unlink(missing_ok=True)
        return None
    os.replace(part, plain)
    return plain


def number_shards(shards: list[Shard]) -> None:
    """Give each split shard the number of its first line, from the newlines counted in the
    shards before it (a read of the whole file that the shards' own reads make again, so it is
    done only when needed)."""
    by_path: dict[str, list[int]] = {}
    for i, sh in enumerate(shards):
        if sh.byte_range is not None:
            by_path.setdefault(sh.path, []).append(i)
    for path, idx in by_path.items():
        if all(shards[i].first_line for i in idx):
            continue
        counts = newline_counts(path, [shards[i].byte_range for i in idx])
        for i, (_, _, line) in zip(idx, with_first_lines([shards[i].byte_range for i in idx], counts)):
            shards[i].first_line = line


Dispatch = Callable[[dict, list[tuple], int], Iterator[dict]]  # (run state, shard jobs, workers) -> shard stats


def _pool_dispatch(state: dict, todo: list[tuple], n_workers: int) -> Iterator[dict]:
    """Shard jobs on a process pool (a fresh one per segment, started with the decisions made so
    far), or in this process when there is one worker."""
    with Workers(state, n_workers, min(n_workers, len(todo))) as workers:
        yield from workers.map(_process_shard, todo)


def run(recipe: Recipe, workers: int | None = None, progress: Progress | None = None,
        dispatch: Dispatch | None = None) -> RunResult:
    """Run a recipe; resumes from the work dir when the recipe and inputs are unchanged.
    `dispatch` runs the shard jobs elsewhere (the Ray executor); the plan, the decisions and
    the outputs stay the same."""
    out_dir = recipe.out_dir()
    work = out_dir / ".work"
    files = []
    for i, inp in enumerate(recipe.inputs):
        try:
            files.append(inp.files(recipe.base_dir))
        except InputError as e:
            raise InputError(f"{recipe.where()}inputs[{i}]: {e}") from None
    guard_outputs([p for group in files for p in group], dirs=[out_dir])
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{recipe.where()}output.dir {out_dir}: exists and is not a directory")
    for i, op in enumerate(recipe.ops):
        try:
            op.setup()  # built once here, before anything is written; inherited by the forked workers
        except InputError as e:
            msg = str(e).removeprefix(f"{type(op).name}: ")
            raise InputError(f"{recipe.where()}ops[{i}] {op.name}: {msg}") from None
    manifest = _manifest(recipe, files)
    mpath = work / "manifest.json"
    old = mpath.read_bytes() if mpath.exists() else None
    if old != manifest:
        _clear_outputs(out_dir, old, recipe)  # first: a kill while .work is removed leaves nothing stale beside it
    else:
        (out_dir / SUCCESS).unlink(missing_ok=True)
    if old is not None and old != manifest:
        shutil.rmtree(work)  # the recipe or an input changed: nothing done can be reused
    work.mkdir(parents=True, exist_ok=True)
    mpath.write_bytes(manifest)
    segments = plan_segments(recipe.ops)
    shards = _make_shards(recipe, files, work)
    # detect each file's format once, here, so every shard of it agrees
    formats: dict[str, str] = {}
    for sh in shards:
        if sh.path not in formats:
            inp = recipe.inputs[sh.input_index]
            formats[sh.path] = RecordReader(sh.path, inp.read_options(recipe.validation), alias=sh.alias).detect()
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(shards)))
    for op in recipe.ops:
        if op.kind == "global":
            op.decide_workers = max(1, workers or os.cpu_count() or 1)  # the decision in the parent uses them too
    state: dict[str, Any] = dict(recipe=recipe, segments=segments, shards=shards, work=work, formats=formats,
                                 parent_pid=os.getpid())
    number_shards(shards)
    resumed = 0
    global_reports: dict[str, dict] = {}
    global_seconds: dict[str, float] = {}
    seg_stats: list[list[dict]] = []
    for seg in segments:
        seg_dir = work / f"seg{seg.index}"
        seg_dir.mkdir(exist_ok=True)
        offsets = _offsets(seg_stats[-1]) if seg_stats else [0] * len(shards)
        sizes = [st["kept"] for st in seg_stats[-1]] if seg_stats else [0] * len(shards)
        todo, done = [], {}
        for i in range(len(shards)):
            sp = seg_dir / f"{i:05d}.stats.json"
            if sp.exists():
                done[i] = orjson.loads(sp.read_bytes())
            else:
                todo.append((seg.index, i, offsets[i], sizes[i]))
        resumed += len(done)
        names = [op.name for op in seg.map_ops] + ([seg.global_op.name] if seg.global_op else [])
        label = f"segment {seg.index + 1}/{len(segments)}: {', '.join(names) or 'apply decisions'}"
        if progress:
            progress(label, len(done), len(shards))
        if todo:
            for st in (dispatch or _pool_dispatch)(state, todo, n_workers):
                done[st["shard"]] = st
                if progress:
                    progress(label, len(done), len(shards))
        seg_stats.append([done[i] for i in range(len(shards))])
        if seg.global_op is not None:
            t = time.perf_counter()
            if not (seg_dir / DECISION).exists():
                _decide(seg, work, len(shards), seg_stats[-1], recipe.output.copies_by_reference)
            global_seconds[seg.global_op.name] = time.perf_counter() - t + sum(x.get("keys_seconds", 0.0) for x in seg_stats[-1])
            global_reports[seg.global_op.name] = load_decision(work, seg.index)[1]["report"]
    return _mark_done(_finish(recipe, segments, seg_stats, global_reports, global_seconds, work, out_dir, resumed), recipe, manifest)


def _offsets(stats: list[dict]) -> list[int]:
    out, n = [], 0
    for st in stats:
        out.append(n)
        n += st["kept"]
    return out


def _gather_keys(seg_dir: Path, n_shards: int, stats: list[dict]) -> dict[str, np.ndarray]:
    """All shards' keys in record order, each copied once into one preallocated array."""
    names = next((list(st["keys"]) for st in stats if st.get("keys")), [])
    out: dict[str, np.ndarray] = {}
    bundles = {i: load_bundle(seg_dir / f"{i:05d}.keys.bin")[0] for i in range(n_shards) if stats[i].get("keys")}
    for name in names:
        parts = [(i, bundles[i][name]) for i in range(n_shards) if stats[i].get("keys", {}).get(name)]
        total = sum(len(a) for _, a in parts)
        first = parts[0][1]
        arr = np.empty((total, *first.shape[1:]), dtype=first.dtype)
        pos = 0
        for _, a in parts:
            arr[pos:pos + len(a)] = a
            pos += len(a)
        out[name] = arr
    return out


def _decide(seg: Segment, work: Path, n_shards: int, stats: list[dict], copies_by_reference: bool) -> None:
    """Run the global op's decide on all keys; commit the drops."""
    commit_decision(seg, work, _gather_keys(work / f"seg{seg.index}", n_shards, stats), copies_by_reference)


DECISION = "decision.bin"  # a global op's committed decision, in its segment's folder


def commit_decision(seg: Segment, work: Path, keys: dict[str, np.ndarray], copies_by_reference: bool) -> None:
    """Decide on the keys of every record (in record order) and commit the drops, with which of
    them are copies of the record kept in their place (listed by reference when asked)."""
    d = work / f"seg{seg.index}"
    fp = keys.pop(COPY_KEY, None)
    if keys:
        dec = seg.global_op.decide(keys)
    else:
        from ..ops.base import Decision

        dec = Decision(np.empty(0, dtype=np.int64), [], [], {})
    del keys
    if isinstance(dec.reason, str):
        reasons, codes = [dec.reason], np.zeros(len(dec.drop), dtype=np.int16)
    else:
        reasons = sorted(set(dec.reason))
        code = {r: i for i, r in enumerate(reasons)}
        codes = np.array([code[r] for r in dec.reason], dtype=np.int16)
    if isinstance(dec.detail, np.ndarray):
        details = dec.detail.astype(bytes)
    else:
        details = np.array([x.encode() for x in dec.detail], dtype=bytes) if len(dec.detail) else np.empty(0, dtype="S1")
    drop = np.asarray(dec.drop, dtype=np.int64)
    copy = np.zeros(len(drop), dtype=bool)
    by_ref = copies_by_reference and fp is not None
    if by_ref and dec.kept_for is not None and len(drop):
        copy = (fp[drop] == fp[np.asarray(dec.kept_for, dtype=np.int64)]) & (fp[drop] != 0)
    arrays = {"drop": drop, "reason": codes, "detail": details, "copy": copy}
    save_bundle(d / DECISION, arrays, {"reasons": reasons, "report": dec.report})


def load_decision(work: Path, si: int) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, meta) of segment si's committed decision."""
    return load_bundle(work / f"seg{si}" / DECISION)


def _finish(recipe: Recipe, segments: list[Segment], seg_stats: list[list[dict]], global_reports: dict, global_seconds: dict,
            work: Path, out_dir: Path, resumed: int) -> RunResult:
    """Final files from the shard files, in shard order (a shard's rejects, segment by segment,
    then the next shard's)."""
    last = segments[-1].index
    n_shards = len(seg_stats[0])
    kept_path = out_dir / recipe.output.file
    rejects_path = out_dir / "rejects.jsonl"
    parts = [work / f"seg{last}" / f"{i:05d}.jsonl" for i in range(n_shards)]
    unfit: list[bytes] = []
    if recipe.output.format == "ptdata" and split_name(kept_path) == ("jsonl", False):
        _concat(parts, kept_path)
    else:
        unfit = _write_kept(recipe, parts, kept_path)
    _concat([work / f"seg{s.index}" / f"{i:05d}.rejects.jsonl" for i in range(n_shards) for s in segments], rejects_path)
    stats = _merge_stats(recipe, segments, seg_stats, global_reports, global_seconds)
    if unfit:
        _add_write_rejects(stats, unfit, rejects_path)
    stats_path = out_dir / "stats.json"
    stats_path.write_bytes(orjson.dumps(stats, option=orjson.OPT_INDENT_2))
    report_path = None
    if recipe.output.report:
        from ..report.html import write_report

        report_path = write_report(stats, out_dir / "report.html")
    return RunResult(out_dir, kept_path, rejects_path, stats_path, report_path, stats, resumed)


def _write_kept(recipe: Recipe, parts: list[Path], kept_path: Path) -> list[bytes]:
    """The kept records in the output format; returns the reject rows of those the format or
    container cannot hold (`not_representable`, op `write`)."""
    fmt = get_format(recipe.output.format)
    unfit: list[bytes] = []

    def reject(rec: Record, detail: str) -> None:
        unfit.append(orjson.dumps(_reject(rec, "write", Drop("not_representable", detail))) + b"\n")

    with RowWriter(kept_path, recipe.output.format, recipe.output.options, on_unfit=reject) as w:
        for p in parts:
            with open(p, "rb") as f:
                for line in f:
                    rec = Record.from_trusted(orjson.loads(line))
                    try:
                        rows = fmt.write(rec, recipe.output.options)
                    except RecordError as e:
                        reject(rec, e.detail or e.reason)
                        continue
                    w.write_many(rows, rec)
    return unfit


def _add_write_rejects(stats: dict, rows: list[bytes], rejects_path: Path) -> None:
    """Records the output could not hold: appended to the rejects, counted as a `write` step."""
    with open(rejects_path, "ab") as f:
        f.writelines(rows)
    n = len(rows)
    stats["kept"] -= n
    stats["rejected"] += n
    stats["ops"].append({"op": "write", "in": stats["kept"] + n, "kept": stats["kept"], "dropped": {"not_representable": n},
                         "seconds": None})


def _merge_stats(recipe: Recipe, segments: list[Segment], seg_stats: list[list[dict]], global_reports: dict, global_seconds: dict) -> dict:
    records_in = sum(st["in"] for st in seg_stats[0])
    read_rejects: Counter = Counter()
    for st in seg_stats[0]:
        read_rejects.update(st["read_rejects"])
    ops: dict[str, dict] = {}
    order = [op.name for op in recipe.ops]
    for seg_list in seg_stats:
        for st in seg_list:
            for name, o in st["ops"].items():
                acc = ops.setdefault(name, {"in": 0, "kept": 0, "added": 0, "dropped": Counter(), "seconds": 0.0})
                acc["in"] += o["in"]
                acc["added"] += o.get("added", 0)
                for k, v in (o.get("counters") or {}).items():
                    acc.setdefault("counters", Counter())[k] += v
                acc["kept"] += o["kept"]
                acc["dropped"].update(o["dropped"])
                acc["seconds"] += o["seconds"]
    for name, secs in global_seconds.items():
        if name in ops:
            ops[name]["seconds"] += secs
    final = seg_stats[-1]
    kept = sum(st["kept"] for st in final)
    hist: dict[str, Any] = {}
    langs: Counter = Counter()
    flags: Counter = Counter()
    kinds: Counter = Counter()
    contamination: dict[str, list] = {}
    for st in final:
        for k, v in st["hist"].items():
            if k == "length":
                hist[k] = [a + b for a, b in zip(hist.get(k, [0] * len(v)), v)]
            else:
                prev = hist.get(k)
                hist[k] = {"bins": v["bins"], "counts": [a + b for a, b in zip(prev["counts"], v["counts"])] if prev else v["counts"]}
        langs.update(st["langs"])
        flags.update(st["flags"])
        kinds.update(st["kinds"])
    for seg_list in seg_stats:
        for st in seg_list:
            for item, ids in st["contamination"].items():
                contamination.setdefault(item, []).extend(ids)
    rejected = sum(read_rejects.values()) + sum(sum(o["dropped"].values()) for o in ops.values())
    funnel = [{"op": "read+validate", "in": records_in, "kept": records_in - sum(read_rejects.values()),
               "dropped": dict(read_rejects), "seconds": None}]
    for name in order:
        o = ops.get(name, {"in": 0, "kept": 0, "added": 0, "dropped": Counter(), "seconds": 0.0})
        funnel.append({"op": name, "in": o["in"], "kept": o["kept"], "dropped": dict(o["dropped"]), "seconds": round(o["seconds"], 3),
                       **({"added": o["added"]} if o["added"] else {}),
                       **({"counters": dict(o["counters"])} if o.get("counters") else {}),
                       **({"report": global_reports[name]} if name in global_reports else {})})
    added = sum(o["added"] for o in ops.values())
    assert records_in + added == kept + rejected, f"record accounting broke: {records_in} + {added} != {kept} + {rejected}"
    return {
        "recipe": recipe.name, "recipe_hash": recipe_hash(recipe), "kept_file": recipe.output.file,
        "records_in": records_in, "kept": kept, "rejected": rejected, **({"derived": added} if added else {}),
        "ops": funnel,
        "kept_kinds": dict(kinds), "kept_languages": dict(langs.most_common()),
        "kept_flags": {k: v for k, v in flags.items() if not k.startswith(PII_FLAG)},
        "kept_pii_redactions": dict(sorted(((k[len(PII_FLAG):], v) for k, v in flags.items() if k.startswith(PII_FLAG)),
                                           key=lambda x: -x[1])),
        "histograms": {"bins_length": _Hist.LEN_BINS, **hist},
        "contamination": contamination_report(recipe, contamination),
    }


def contamination_report(recipe: Recipe, found: dict[str, list]) -> dict:
    """Per benchmark: its items, those found and by which layer; per layer: the records flagged;
    per item: the matching records with layer and score."""
    items: dict[str, dict] = {}
    for item, hits in sorted(found.items()):
        uniq = sorted({(h[0], h[1], h[2]) for h in hits}, key=lambda h: (-(h[2] or 0), h[0]))
        items[item] = [{"id": i, "layer": layer, "score": score} for i, layer, score in uniq]
    totals: dict[str, int] = {}
    for op in recipe.ops:
        for it in getattr(op, "_items", None) or ():
            if hasattr(it, "benchmark"):
                totals[it.benchmark] = totals.get(it.benchmark, 0) + 1
    benchmarks: dict[str, dict] = {b: {"items": n, "found": 0, "by_layer": {}} for b, n in totals.items()}
    layers: dict[str, set] = {}
    for item, hits in items.items():
        b = benchmarks.setdefault(item.rsplit("#", 1)[0], {"items": None, "found": 0, "by_layer": {}})
        b["found"] += 1
        for layer in sorted({h["layer"] for h in hits}):
            b["by_layer"][layer] = b["by_layer"].get(layer, 0) + 1
        for h in hits:
            layers.setdefault(h["layer"], set()).add(h["id"])
    return {"benchmarks": benchmarks, "records_by_layer": {k: len(v) for k, v in sorted(layers.items())}, "items": items}
