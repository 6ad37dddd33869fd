"""Identical input lines are decoded once.

Merged datasets and traffic logs repeat whole lines. An identical line gives an identical
record, so every *pure* op (see `Op.pure`) gives it the same verdict and changes, and a
global op the same keys. For a recipe of pure map ops and at most one global op, over plain
JSONL, the local executor therefore runs this plan instead of segment by segment:

1. `lines`: every shard's lines are hashed (xxh3-128) and sorted by hash in parallel; the
   parent merges the sorted runs and finds each line's first identical copy within its
   input (`canon`), and the shards' first line numbers.
2. `decode`: the map ops (and the global op's keys) run on the first copies only; each one's
   outcome is kept as bytes: its record, or its reject row; with what the report counts of it.
3. The global op decides: told each distinct record once with its count when it says copies
   share a fate (`GlobalOp.copy_drop`, as the dedup ops do), else on every surviving record.
4. `write`: every line gets its first copy's outcome, with its own source and line spliced in.
   Runs of kept first copies are copied as one slice; the reference rows of later copies of
   a kept record are built as byte matrices; the kept records are counted for the report
   with numpy.

The files it writes are the ones the segment-by-segment plan writes, byte for byte
(`tests/test_copies.py`), so the report, resume and the final concatenation are shared.
With `copies="auto"` the plan is taken only when at least `MIN_COPY_SHARE` of the lines are
copies; otherwise step 1 was the only extra work. Each step keeps its results in a few files
(a bundle per decode job, one outcome table, append-only streams): creating a file costs more
than writing megabytes on this kind of machine.
"""
from __future__ import annotations

import gc
import mmap
import os
import re
import time
from collections import Counter
from itertools import chain, repeat
from operator import getitem, itemgetter, mul, not_
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import orjson
import xxhash

from ..io import sniff
from ..reader import RecordReader
from . import local

MIN_COPY_SHARE = 0.05
KEPT_STREAM, REJECTS_STREAM, STATS_STREAM = "kept.stream.jsonl", "rejects.stream.jsonl", "stats.stream.jsonl"
CACHE_ROWS = 200_000  # per worker: templates of dropped copies' rows (~1 KB each), kept for the next copies
SURVIVOR = -1  # outcome code of a record that every map op kept
JOBS = "jobs.bin"  # the decode jobs, cut once (in lines/)

# One first copy's outcome: its line, code, bytes in the shard's blob, whether its row carried
# its own meta.source, and where the source value sits in a survivor's record (to splice).
_ENTRY = np.dtype([("pos", "<i8"), ("code", "<i4"), ("start", "<i8"), ("end", "<i8"), ("own", "?"), ("sa", "<i4"), ("sb", "<i4")])
_NEEDS_ESCAPE = re.compile(rb'["\\\x00-\x1f]')


def eligible(recipe, segments: list[local.Segment], shards: list[local.Shard]) -> bool:
    """Pure map ops, then at most one global op with pure keys, over plain JSONL only."""
    if len(segments) > 2 or (len(segments) == 2 and segments[1].map_ops):
        return False
    seg = segments[0]
    if not all(op.pure for op in seg.map_ops) or (seg.global_op is not None and not seg.global_op.pure):
        return False
    return all(sniff(Path(p)) == ("jsonl", False) for p in {sh.path for sh in shards})


# --- 1. lines ----------------------------------------------------------------------------------

def _hash_shard(i: int) -> tuple[int, int, int, np.ndarray, np.ndarray, str, int, int]:
    """Worker: hash shard i's record lines (xxh3-128; blank lines are not records, as in
    RowSource) and sort them by hash (stable: the parent then only merges sorted runs).
    Returns the shard's newlines and physical lines, its blank and over-long lines (never
    collapsed), and where in this worker's hash file its hashes and order are: sent through
    the pool's pipe, 20 bytes a line cost more in waits for the busy parent to read them than
    the hashing itself. Not kept for a resumed run, which hashes again unless the outcome
    table is done."""
    ctx = local._CTX
    sh: local.Shard = ctx["shards"][i]
    recipe = ctx["recipe"]
    limit = recipe.inputs[sh.input_index].read_options(recipe.validation).max_record_bytes
    data = _read_shard(ctx, sh)
    arr = np.frombuffer(data, dtype=np.uint8)
    hit = ctx.get("hit_buf")
    if hit is None or len(hit) < len(arr):
        hit = ctx["hit_buf"] = np.empty(max(len(arr), 1 << 20), dtype=bool)
    ends = np.flatnonzero(np.equal(arr, 10, out=hit[:len(arr)]))
    newlines = len(ends)
    if len(data) and data[-1] != 10:
        ends = np.append(ends, len(data))
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64) if len(ends) else ends.astype(np.int64)
    # blank lines are not records (as in RowSource); a record line almost always starts with "{"
    odd = np.flatnonzero((starts == ends) | (arr[np.minimum(starts, max(len(arr) - 1, 0))] != 123))
    blank = np.array([j for j in odd.tolist() if not bytes(data[starts[j]:ends[j]]).strip()], dtype=np.int64)
    n_lines = len(starts)
    if len(blank):
        keep = np.ones(n_lines, dtype=bool)
        keep[blank] = False
        starts, ends = starts[keep], ends[keep]
    big = np.flatnonzero(ends - starts >= limit)
    hashes = b"".join(map(xxhash.xxh3_128_digest, map(data.__getitem__, map(slice, starts.tolist(), ends.tolist()))))
    order = np.argsort(np.frombuffer(hashes, dtype=np.uint64)[::2], kind="stable").astype(np.int32)
    f = ctx.get("hash_file")
    if f is None:
        f = ctx["hash_file"] = open(ctx["work"] / "lines" / f"hash-{os.getpid()}.bin", "ab")
    at = f.tell()
    f.write(hashes)
    f.write(memoryview(order))
    f.flush()
    return i, newlines, n_lines, blank, big, f.name, at, len(starts)


def _hashed(results: dict[int, tuple], shards: list[local.Shard]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The hash step's results in shard order: every record line's physical number, where each
    shard's lines start, and per shard its hashes, order by hash and over-long lines."""
    maps: dict[str, mmap.mmap] = {}
    pos, hashes, orders, big = [], [], [], []
    for i, sh in enumerate(shards):
        _, n_lines, blank, b, path, at, n = results[i]
        if path not in maps:
            with open(path, "rb") as f:
                maps[path] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        p = np.arange(sh.first_line, sh.first_line + n_lines, dtype=np.int64)
        pos.append(np.delete(p, blank) if len(blank) else p)
        hashes.append(np.frombuffer(maps[path], np.uint64, 2 * n, at).reshape(n, 2) if n else np.empty((0, 2), np.uint64))
        orders.append(np.frombuffer(maps[path], np.int32, n, at + 16 * n) if n else np.empty(0, np.int32))
        big.append(b)
    line_off = np.concatenate(([0], np.cumsum([len(x) for x in pos]))).astype(np.int64)
    return np.concatenate(pos) if pos else np.empty(0, np.int64), line_off, hashes, orders, big


def _read_shard(ctx: dict, sh: local.Shard) -> memoryview:
    """A shard's bytes, read into one buffer per worker: a fresh buffer per shard costs a page
    fault per 4 KB, which on a VM costs about as much as hashing the lines."""
    with open(sh.path, "rb") as f:
        size = (sh.byte_range[1] - sh.byte_range[0]) if sh.byte_range is not None else os.fstat(f.fileno()).st_size
        buf = ctx.get("read_buf")
        if buf is None or len(buf) < size:
            buf = ctx["read_buf"] = bytearray(max(size, 1 << 20))
        if sh.byte_range is not None:
            f.seek(sh.byte_range[0])
        view = memoryview(buf)[:size]
        got = f.readinto(view)
    return view[:got]


def _canon(shards: list[local.Shard], offsets: np.ndarray, hashes: list[np.ndarray], orders: list[np.ndarray],
           big: list[np.ndarray]) -> np.ndarray:
    """For every record line (all shards, in order), the global index of its first identical
    copy in the same input; over-long lines are their own. `orders`: each shard's lines sorted
    by hash, so the sort here only merges runs."""
    canon = np.arange(offsets[-1], dtype=np.int64)
    for ii in sorted({sh.input_index for sh in shards}):
        members = [i for i, sh in enumerate(shards) if sh.input_index == ii]  # consecutive shards
        lo, hi = int(offsets[members[0]]), int(offsets[members[-1] + 1])
        if hi == lo:
            continue
        h = np.concatenate([hashes[i] for i in members])
        runs = np.concatenate([orders[i] + (offsets[i] - lo) for i in members])
        order = runs[np.argsort(h[runs, 0], kind="stable")]  # timsort: merging sorted runs is cheap
        canon[lo:hi] = lo + _first_copies(h, order)
    for i in range(len(shards)):
        b = big[i] + offsets[i]
        canon[b] = b
    return canon


def _first_copies(h: np.ndarray, order: np.ndarray) -> np.ndarray:
    """For rows of 128-bit hashes (n, 2), the index of each row's first equal row. Grouped on
    the high half (`order`: the rows stably sorted by it), then checked on the low half: rows
    whose low half differs from their group's first are grouped on both halves (practically never)."""
    hs = h[order, 0]
    start = np.ones(len(hs), dtype=bool)
    start[1:] = hs[1:] != hs[:-1]
    out = np.empty(len(h), dtype=np.int64)
    out[order] = order[start][np.cumsum(start) - 1]  # a stable sort puts each group's first row first
    odd = np.flatnonzero(h[out, 1] != h[:, 1])
    if len(odd):
        sub = np.flatnonzero(np.isin(h[:, 0], h[odd, 0]))
        keys = np.ascontiguousarray(h[sub]).view([("hi", "<u8"), ("lo", "<u8")]).ravel()
        _, f2, inv2 = np.unique(keys, return_index=True, return_inverse=True)
        out[sub] = sub[f2[inv2.ravel()]]
    return out


# --- 2. decode ---------------------------------------------------------------------------------

def _decode_jobs(work: Path, firsts: np.ndarray, line_off: np.ndarray, n_workers: int) -> np.ndarray:
    """(shard, lo, hi) per decode job: slices of each shard's first copies, about equal in size
    and at least eight per worker (copies cluster: all first copies may sit in a few shards).
    Saved, so a resumed run cuts the same jobs whatever its worker count."""
    path = work / "lines" / JOBS
    if path.exists():
        return local.load_bundle(path)[0]["jobs"]
    per_shard = [int(firsts[line_off[i]:line_off[i + 1]].sum()) for i in range(len(line_off) - 1)]
    size = max(1, -(-sum(per_shard) // (8 * n_workers)))
    jobs = [(i, lo, min(lo + size, n)) for i, n in enumerate(per_shard) for lo in range(0, n, size)]
    arr = np.array(jobs, dtype=np.int64).reshape(-1, 3)
    local.save_bundle(path, {"jobs": arr})
    return arr


def _outcome(work: Path, j: int) -> tuple[dict[str, np.ndarray], dict]:
    """Decode job j's committed outcome: its entries and keys, and its figures."""
    return local.load_bundle(work / "seg0" / f"{j:05d}.outcome")


def _job_meta(work: Path, jobs: np.ndarray, i: int, n_ops: int) -> dict:
    """Shard i's decode figures: its jobs' summed, in order."""
    meta = {"seconds": [0.0] * n_ops, "keys_seconds": 0.0, "contamination": {}}
    for j in np.flatnonzero(jobs[:, 0] == i).tolist():
        m = _outcome(work, j)[1]
        meta["seconds"] = [a + b for a, b in zip(meta["seconds"], m["seconds"])]
        meta["keys_seconds"] += m["keys_seconds"]
        for item, ids in m["contamination"].items():
            meta["contamination"].setdefault(item, []).extend(ids)
    return meta


def _decode_shard(args: tuple[int, int, int, np.ndarray]) -> int:
    """Worker, job j: read shard i's first copies `wanted` only, run the map ops and the global
    op's keys, and keep each outcome's bytes: the record for a survivor, the reject row otherwise."""
    j, i, first_line, wanted = args  # first_line: the shard's, known only after hashing
    gc.disable()
    ctx = local._CTX
    recipe = ctx["recipe"]
    seg: local.Segment = ctx["segments"][0]
    sh: local.Shard = ctx["shards"][i]
    d = ctx["work"] / "seg0"
    reader = RecordReader(sh.path, recipe.inputs[sh.input_index].read_options(recipe.validation), byte_range=sh.byte_range,
                          first_line=first_line, detected=ctx["formats"].get(sh.path), alias=sh.alias,
                          wanted=set(wanted.tolist()))
    label = reader.label
    blob = bytearray()
    entries: list[tuple[int, int, int, int, bool, int, int]] = []
    codes: dict[tuple[int, str], int] = {}  # (op index, or -1 when reading; reason) -> code
    seconds = [0.0] * len(seg.map_ops)
    keys_parts: list[dict[str, np.ndarray]] = []
    keys_seconds = 0.0
    contamination: dict[str, list[str]] = {}
    dumps = orjson.dumps

    hist = _HistColumns()

    def emit(pos: int, code: int, data: bytes, own: bool, sa: int = 0, sb: int = 0) -> None:
        start = len(blob)
        blob.extend(data)
        entries.append((pos, code, start, len(blob), own, sa, sb))
        blob.extend(b"\n")  # so that survivors written one after the other are one slice of the blob

    def code_of(k: int, reason: str) -> int:
        return codes.setdefault((k, reason), len(codes))

    def flush(batch: list, where: dict[int, tuple[int, bool]]) -> None:
        nonlocal keys_seconds
        for k, op in enumerate(seg.map_ops):
            n_in = len(batch)
            t = time.perf_counter()
            batch, dropped = op.process(batch)
            seconds[k] += time.perf_counter() - t
            if len(batch) + len(dropped) != n_in:
                raise RuntimeError(f"op {op.name} is marked pure but did not keep or drop each record once")
            for rec, drop in dropped:
                pos, own = where[id(rec)]
                emit(pos, code_of(k, drop.reason), dumps(local._reject(rec, op.name, drop)), own)
                local.note_contamination(contamination, rec, drop.reason)
        if seg.global_op is not None and batch:
            t = time.perf_counter()
            keys_parts.append(seg.global_op.keys(batch))
            keys_seconds += time.perf_counter() - t
        fps = []
        for rec in batch:
            pos, own = where[id(rec)]
            rd = rec.to_dict()
            data = dumps(rd)
            hist.add(rd)
            sa = sb = 0
            if not own:  # where a copy's own source goes
                q = b'"source":' + dumps(rec.meta["source"])
                sa = data.find(q, data.rfind(b',"meta":{')) + 9
                sb = sa + len(q) - 9
            emit(pos, SURVIVOR, data, own, sa, sb)
            if seg.global_op is not None:
                fps.append(local.copy_fingerprint(data, rec.meta))
        if seg.global_op is not None and batch:
            keys_parts[-1][local.COPY_KEY] = np.array(fps, dtype=np.uint64)

    batch: list = []
    where: dict[int, tuple[int, bool]] = {}
    for rec, bad in reader:
        if rec is None:
            emit(bad[label], code_of(-1, bad["reason"]), dumps(bad), False)
            continue
        batch.append(rec)
        where[id(rec)] = (reader.position, reader.own_source)
        if len(batch) >= recipe.batch_size:
            flush(batch, where)
            batch, where = [], {}
    if batch:
        flush(batch, where)
    local.commit_file(d / f"{j:05d}.blob", lambda f: f.write(blob))
    arrays = {"entries": np.array(entries, dtype=_ENTRY)}
    for name in (keys_parts[0] if keys_parts else {}):
        arrays[f"key.{name}"] = np.concatenate([p[name] for p in keys_parts])
    h_arrays, h_meta = hist.arrays()
    arrays.update((f"hist.{k}", a) for k, a in h_arrays.items())
    meta = {"codes": [[k, r] for (k, r) in codes], "seconds": seconds, "keys_seconds": keys_seconds, "contamination": contamination,
            "hist": h_meta}
    local.save_bundle(d / f"{j:05d}.outcome", arrays, meta)  # commit marker: written last
    return j


class _HistColumns:
    """What `local._Hist.add` takes from each survivor, as columns: the write step then counts
    the kept records with numpy instead of parsing each one again. Values are codes into lists
    of names (kinds, languages, flags) kept in first-seen order; a score a record lacks (see
    `_Hist.fields`) is NaN."""

    CODED = ("kind", "lang", "flag")

    def __init__(self) -> None:
        self.n = 0
        self.len: list[int] = []
        self.kind: list[int] = []
        self.lang: list[int] = []
        self.flag_rec: list[int] = []
        self.flag: list[int] = []
        self.scores: dict[str, dict[int, float]] = {}
        self.names: dict[str, dict] = {k: {} for k in self.CODED}

    def add(self, d: dict) -> None:
        i = self.n
        self.n += 1
        length, kind, lang, flags, scores = local._Hist.fields(d)
        self.len.append(length)
        self.kind.append(self.names["kind"].setdefault(kind, len(self.names["kind"])))
        self.lang.append(self.names["lang"].setdefault(lang, len(self.names["lang"])))
        for f in flags:
            self.flag_rec.append(i)
            self.flag.append(self.names["flag"].setdefault(f, len(self.names["flag"])))
        for k, v in scores:
            self.scores.setdefault(k, {})[i] = v

    def arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        out = {"len": np.array(self.len, dtype=np.int64), "kind": np.array(self.kind, dtype=np.int32),
               "lang": np.array(self.lang, dtype=np.int32), "flag_rec": np.array(self.flag_rec, dtype=np.int64),
               "flag": np.array(self.flag, dtype=np.int32)}
        for k, vals in self.scores.items():
            a = np.full(self.n, np.nan)
            a[list(vals)] = list(vals.values())
            out[f"score.{k}"] = a
        return out, {**{k: list(v) for k, v in self.names.items()}, "scores": list(self.scores)}


def _join_hist(parts: list[tuple[dict[str, np.ndarray], dict]]) -> tuple[dict[str, np.ndarray], dict]:
    """The decode jobs' hist columns as one table over all survivors, with one list of names."""
    names: dict[str, dict] = {k: {} for k in _HistColumns.CODED}
    scores: dict[str, None] = {}
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("len", "kind", "lang", "flag_rec", "flag")}
    score_parts: list[tuple[int, int, dict[str, np.ndarray]]] = []
    n = 0
    for cols, meta in parts:
        m = len(cols["len"])
        out["len"].append(cols["len"])
        for k in _HistColumns.CODED:
            remap = np.array([names[k].setdefault(x, len(names[k])) for x in meta[k]] or [0], dtype=np.int32)
            out[k].append(remap[cols[k]])
        out["flag_rec"].append(cols["flag_rec"] + n)
        score_parts.append((n, m, {name: cols[f"score.{name}"] for name in meta["scores"]}))
        scores.update(dict.fromkeys(meta["scores"]))
        n += m
    arrays = {f"h_{k}": (np.concatenate(v) if v else np.empty(0, np.int64)) for k, v in out.items()}
    for name in scores:
        a = np.full(n, np.nan)
        for lo, m, cols in score_parts:
            if name in cols:
                a[lo:lo + m] = cols[name]
        arrays[f"h_score.{name}"] = a
    return arrays, {**{k: list(v) for k, v in names.items()}, "scores": list(scores)}


def _count_kept(hist: "local._Hist", t: dict[str, np.ndarray], meta: dict, s: np.ndarray) -> None:
    """Add the kept records whose survivor numbers are `s` (in output order) to `hist`, as
    `hist.add` would one by one (names first met first)."""
    hist.len_resp.extend(t["h_len"][s].tolist())
    for name in meta["scores"]:
        v = t[f"h_score.{name}"][s]
        v = v[~np.isnan(v)]
        if len(v):
            hist.scores.setdefault(name, []).extend(v.tolist())
    for k, counter in (("kind", hist.kinds), ("lang", hist.langs)):
        codes = t[f"h_{k}"][s]
        u, first, cnt = np.unique(codes, return_index=True, return_counts=True)
        for j in np.argsort(first, kind="stable").tolist():
            counter[meta[k][int(u[j])]] += int(cnt[j])
    if len(t["h_flag"]):
        uniq, first_at = np.unique(s, return_index=True)
        weight = np.bincount(s, minlength=len(t["h_len"]))  # kept lines per survivor
        rec = t["h_flag_rec"]
        mine = weight[rec] > 0
        if mine.any():
            where = np.full(len(weight), -1, dtype=np.int64)
            where[uniq] = first_at
            order = np.argsort(where[rec[mine]], kind="stable")  # records in output order, flags in record order
            codes, w = t["h_flag"][mine][order], weight[rec[mine]][order]
            for c, n in zip(codes.tolist(), w.tolist()):
                hist.flags[meta["flag"][c]] += n


class Table:
    """Every first copy's outcome, indexed by canonical number; `canon` maps each global line
    to its first copy's canonical number; `pos` and `line_off` say where each shard's record
    lines are. One mapped file, so workers share it without a copy."""

    FILE = "table.bin"

    def __init__(self, arrays: dict[str, np.ndarray], codes: list[tuple[int, str]], jobs: np.ndarray, hist: dict) -> None:
        self.arrays = arrays  # the columns above, and the survivors' hist columns (h_*)
        self.codes = codes
        self.jobs = jobs  # (shard, lo, hi) per decode job; the "job" column names the outcome file
        self.hist = hist  # names behind the hist columns' codes

    def save(self, d: Path) -> None:
        local.save_bundle(d / self.FILE, self.arrays, {"codes": self.codes, "hist": self.hist})

    @classmethod
    def load(cls, d: Path) -> "Table":
        arrays, meta = local.load_bundle(d / cls.FILE)
        return cls(arrays, [tuple(c) for c in meta["codes"]], local.load_bundle(d / JOBS)[0]["jobs"], meta["hist"])


def _build_table(work: Path, jobs: np.ndarray, canon: np.ndarray, pos: np.ndarray, offsets: np.ndarray
                 ) -> tuple[Table, dict[str, np.ndarray], np.ndarray]:
    """Join the decode jobs' outcomes into one table; return it with the survivors' keys (one row
    per first copy that every map op kept, in input order) and, for every surviving line in
    input order, its row there."""
    firsts = np.flatnonzero(canon == np.arange(len(canon)))
    number = np.full(len(canon), -1, dtype=np.int64)
    number[firsts] = np.arange(len(firsts))
    n = len(firsts)
    arr = {"first": firsts, "job": np.zeros(n, np.int32), "start": np.zeros(n, np.int64), "end": np.zeros(n, np.int64),
           "code": np.zeros(n, np.int32), "own": np.zeros(n, bool), "sa": np.zeros(n, np.int64), "sb": np.zeros(n, np.int64),
           "surv": np.full(n, -1, np.int64)}
    code_index: dict[tuple[int, str], int] = {}  # (op index or -1, reason) -> code, over all shards
    keys: dict[str, list[np.ndarray]] = {}
    hist_parts = []
    n_surv = 0
    for j, i in enumerate(jobs[:, 0].tolist()):  # in shard order, and in line order within a shard
        out, meta = _outcome(work, j)
        hist_parts.append(({k[5:]: a for k, a in out.items() if k.startswith("hist.")}, meta["hist"]))
        remap = np.array([code_index.setdefault((k, r), len(code_index)) for k, r in meta["codes"]] or [0], dtype=np.int32)
        e = out["entries"]
        c = number[offsets[i] + np.searchsorted(pos[offsets[i]:offsets[i + 1]], e["pos"])]
        arr["job"][c] = j
        arr["start"][c], arr["end"][c], arr["own"][c] = e["start"], e["end"], e["own"]
        arr["sa"][c], arr["sb"][c] = e["start"] + e["sa"], e["start"] + e["sb"]
        surv = e["code"] == SURVIVOR
        arr["code"][c] = np.where(surv, SURVIVOR, remap[np.where(surv, 0, e["code"])])
        arr["surv"][c[surv]] = np.arange(n_surv, n_surv + int(surv.sum()))
        n_surv += int(surv.sum())
        for name, a in out.items():
            if name.startswith("key."):
                keys.setdefault(name[4:], []).append(a)
    cnum = number[canon]
    h_arrays, h_meta = _join_hist(hist_parts)
    table = Table({"canon": cnum, **arr, "pos": pos, "line_off": offsets, **h_arrays}, list(code_index), jobs, h_meta)
    rows = arr["surv"][cnum]
    return table, {k: np.concatenate(v) for k, v in keys.items()}, rows[rows >= 0]


def expand_keys(keys: dict[str, np.ndarray], rows: np.ndarray, chunk: int = 50_000) -> dict[str, np.ndarray]:
    """The keys of records `rows` (with repeats), in that order. A ragged key X (flattened, with
    per-record counts in X_n, like near-dedup's shingle hashes) is gathered segment by segment."""
    out: dict[str, np.ndarray] = {}
    for name, a in keys.items():
        if name.endswith("_n") and name[:-2] in keys:
            flat, counts = keys[name[:-2]], a
            starts = np.cumsum(counts) - counts
            parts = []
            for part in np.array_split(rows, max(1, len(rows) // chunk)):
                c = counts[part]
                parts.append(flat[np.repeat(starts[part] - (np.cumsum(c) - c), c) + np.arange(int(c.sum()))])
            out[name] = counts[rows]
            out[name[:-2]] = np.concatenate(parts) if parts else flat[:0]
        elif f"{name}_n" not in keys:
            out[name] = a[rows]
    return out


# --- 4. write ----------------------------------------------------------------------------------

# What a global op's drops of one shard need to become rows: the dropped lines (shard-local, in
# order), a template key per line (lines with the same key get the same row but for their
# source), and, for the lines whose template is not cached, (reasons, details, copy flags)
# given their record ids (JSON strings, as in the record line).
Describe = Callable[[list[int], list[bytes]], tuple[list[str], list[bytes], list[bool]]]


class _Drops:
    """The global op's drops in one shard: `lines` (shard-local, in order); `refs`, a mask over
    them of the reference rows written without templates (see `_reference_rows`); for the other
    lines, a template key each and `describe`."""

    def __init__(self, lines: np.ndarray, refs: np.ndarray, keys: list, describe: Describe) -> None:
        self.lines, self.refs, self.keys, self.describe = lines, refs, keys, describe


def _global_drops(ctx: dict, t: Table, c: np.ndarray, surv: np.ndarray, line_off: int, surv_off: int, sp: bytes) -> _Drops:
    """The global op's drops in this shard. When the op decided on distinct records, a line is
    dropped with its first copy's verdict, or, as a later copy of a kept record, as the op's
    `copy_drop` says; otherwise the decision lists every surviving line."""
    g_op = ctx["segments"][0].global_op
    dec, meta = ctx.get("copies_decision") or ctx.setdefault("copies_decision", local.load_decision(ctx["work"], 0))
    names = meta["reasons"]
    if "has_fp" not in dec:  # decided on every surviving line
        d_pos, d_reason, d_detail, d_copy = local.shard_drop_arrays(ctx["work"], 0, surv_off, len(surv))
        lines = surv[d_pos]

        def describe_all(js: list[int], rids: list[bytes]) -> tuple[list[str], list[bytes], list[bool]]:
            return [d_reason[j] for j in js], [d_detail[j] for j in js], [d_copy[j] for j in js]
        return _Drops(lines, np.zeros(len(lines), dtype=bool), list(zip(c[lines].tolist(), d_reason, d_detail, d_copy, repeat(sp))),
                      describe_all)
    at = ctx.get("copies_drop_at")
    if at is None:  # per distinct survivor: its place in the decision's drops, or -1 when kept
        at = ctx["copies_drop_at"] = np.full(int(t.arrays["surv"].max(initial=-1)) + 1, -1, dtype=np.int64)
        at[dec["drop"]] = np.arange(len(dec["drop"]))
    cs = c[surv]
    s = t.arrays["surv"][cs]
    k = at[s]
    gone = (k >= 0) | (t.arrays["first"][cs] != line_off + surv)
    lines, k, s = surv[gone], k[gone], s[gone]
    copy_of_kept = k < 0
    refs = copy_of_kept & dec["has_fp"][s] if ctx["recipe"].output.copies_by_reference else np.zeros(len(lines), dtype=bool)
    copy_reason = g_op.copy_drop[0]
    rest = np.flatnonzero(~refs)
    k_rest, own_copy = k[rest], copy_of_kept[rest] & ~refs[rest]  # the latter: a later copy of a kept record, in full

    def describe(js: list[int], rids: list[bytes]) -> tuple[list[str], list[bytes], list[bool]]:
        mine = own_copy[js]
        reasons = [copy_reason] * len(js)
        details = [g_op.copy_detail(rid[1:-1].decode()).encode() for rid in rids]
        copies = [False] * len(js)
        theirs = np.flatnonzero(~mine)  # lines the decision itself dropped
        kk = k_rest[js][theirs]
        for q, r, d, cp in zip(theirs.tolist(), dec["reason"][kk].tolist(), dec["detail"][kk].tolist(), dec["copy"][kk].tolist()):
            reasons[q], details[q], copies[q] = names[r], d, cp
        return reasons, details, copies
    return _Drops(lines, refs, list(zip(c[lines[rest]].tolist(), repeat(sp))), describe)


def _reference_rows(g_op, sp: bytes, pos: np.ndarray, hexes: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Reference rows of later copies of kept records, built as byte matrices, not joined row by
    row: every such row is the same bytes but for its line number and the kept record's id.
    `pos`: line numbers (ascending); `hexes`: (n, 32) uint8, the ids. Returns the rows and the
    offset of each row's start (n + 1 values)."""
    reason, detail = g_op.copy_drop
    d_pre, d_post = (orjson.dumps(x)[1:-1] for x in detail.split("{id}"))
    parts = [b'{"source":' + sp, None, b'","op":' + orjson.dumps(g_op.name) + b',"reason":' + orjson.dumps(reason) + b',"detail":"' + d_pre,
             hexes, d_post + b'","id":"', hexes, b'","copy_of":"', hexes, b'"}\n']
    out, widths = [], np.empty(len(pos), dtype=np.int64)
    digits = np.char.str_len(pos.astype(str)) if len(pos) else pos
    lo = 0
    while lo < len(pos):  # one matrix per number of digits (line numbers ascend: contiguous runs)
        nd = int(digits[lo])
        hi = lo + int(np.searchsorted(digits[lo:], nd, side="right"))
        width = sum(nd if x is None else (32 if isinstance(x, np.ndarray) else len(x)) for x in parts)
        m = np.empty((hi - lo, width), dtype=np.uint8)
        col = 0
        for x in parts:
            if x is None:
                m[:, col:col + nd] = (pos[lo:hi, None] // 10 ** np.arange(nd - 1, -1, -1, dtype=np.int64)) % 10 + 48
                col += nd
            elif isinstance(x, np.ndarray):
                m[:, col:col + 32] = x[lo:hi]
                col += 32
            else:
                m[:, col:col + len(x)] = np.frombuffer(x, dtype=np.uint8)
                col += len(x)
        out.append(m.tobytes())
        widths[lo:hi] = width
        lo = hi
    return b"".join(out), np.concatenate(([0], np.cumsum(widths)))


def _ids_at(views: dict[int, memoryview], job: np.ndarray, start: np.ndarray) -> np.ndarray:
    """(n, 32) uint8: the hex ids of records in the decode blobs (a record line starts {"id":")."""
    out = np.empty((len(job), 32), dtype=np.uint8)
    span = np.arange(7, 39, dtype=np.int64)
    for j in np.unique(job).tolist():
        sel = job == j
        out[sel] = np.frombuffer(views[j], dtype=np.uint8)[start[sel, None] + span]
    return out


def _write_shard(args: tuple[int, int]) -> tuple[dict, dict | None]:
    """Worker: every line of shard i gets its first copy's outcome, with its own source spliced
    in; appends what the segment-by-segment plan writes for this shard to the output streams."""
    i, surv_off = args
    gc.disable()
    ctx = local._CTX
    work: Path = ctx["work"]
    segments: list[local.Segment] = ctx["segments"]
    sh: local.Shard = ctx["shards"][i]
    seg0 = segments[0]
    g_op = seg0.global_op
    table = _worker_table(ctx)
    t = table.arrays
    line_off, line_end = int(t["line_off"][i]), int(t["line_off"][i + 1])
    n = line_end - line_off
    pos = np.asarray(t["pos"][line_off:line_end])
    c = np.asarray(t["canon"][line_off:line_end])
    code = t["code"][c]
    surv = np.flatnonzero(code == SURVIVOR)  # lines whose record every map op kept
    name = sh.alias
    sp = orjson.dumps(name)[:-1] + b":"  # a source value up to the line number
    drops = _global_drops(ctx, table, c, surv, line_off, surv_off, sp) if g_op is not None else None
    dropped = np.zeros(n, dtype=bool)
    if drops is not None:
        dropped[drops.lines] = True
    col = {k: t[k][c] for k in ("job", "start", "end", "sa", "sb")}
    whole = (t["first"][c] == np.arange(line_off, line_end)) | t["own"][c]
    maps = _Blobs(work)
    hist = local._Hist()
    read_rejects: Counter = Counter()
    op_drops: list[Counter] = [Counter() for _ in seg0.map_ops]
    rej0: list[bytes] = []
    # the segment-by-segment plan writes a read reject as it meets it, and an op's drops when the
    # batch the record is in is full: order this shard's rejects the same way
    read_rej = np.zeros(n, dtype=bool)
    for cd in np.unique(code[code != SURVIVOR]).tolist():
        if table.codes[cd][0] < 0:
            read_rej |= code == cd
    batch_of = ((np.cumsum(~read_rej) - ~read_rej) // ctx["recipe"].batch_size).tolist()
    rej0_keys: list[tuple[int, int, int]] = []
    rest = np.flatnonzero(~dropped & (code != SURVIVOR))  # read and map-op rejects: a plain loop
    for j, cd, p, w, s, a, b in zip(rest.tolist(), code[rest].tolist(), pos[rest].tolist(), whole[rest].tolist(),
                                    *(col[k][rest].tolist() for k in ("job", "start", "end"))):
        op_k, reason = table.codes[cd]
        (read_rejects if op_k < 0 else op_drops[op_k])[reason] += 1
        row = maps[s][a:b]
        rej0.append(row if w else _respliced_reject(row, op_k, str(sh.alias), p, f"{name}:{p}"))
        rej0_keys.append((batch_of[j], op_k, j))
    keep = np.flatnonzero(~dropped & (code == SURVIVOR))
    _count_kept(hist, t, table.hist, t["surv"][c[keep]])
    kept = _kept_lines(maps, sp, pos, col, whole, keep)
    if rej0_keys:
        rej0 = [rej0[k] for k in sorted(range(len(rej0)), key=rej0_keys.__getitem__)]
    rej1, g_drops = _drop_rows(ctx, g_op, maps, sp, pos, col, drops, t["own"][c]) if drops is not None and len(drops.lines) else (b"", Counter())
    maps.close()
    return _commit_shard(i, work, segments, n, len(surv), read_rejects, op_drops, g_drops, hist, rej0, kept, len(keep), rej1)


def _kept_lines(maps: "_Blobs", sp: bytes, pos: np.ndarray, col: dict, whole: np.ndarray, keep: np.ndarray) -> bytes:
    """The kept records of lines `keep`, each with its newline: a first copy is its bytes in
    the blob, and first copies that follow one another there (a decode batch's survivors) are
    one slice; a later copy gets its own source spliced in."""
    if not len(keep):
        return b""
    w, job, a, b = whole[keep], col["job"][keep], col["start"][keep], col["end"][keep]
    # a run: whole lines, each starting right after the previous one's newline in the same blob
    joined = w[1:] & w[:-1] & (job[1:] == job[:-1]) & (a[1:] == b[:-1] + 1)
    heads = np.flatnonzero(np.concatenate(([True], ~joined)))
    tails = np.concatenate((heads[1:], [len(keep)])) - 1
    out = []
    join = b"".join
    for h, e, ww, jb, x, y in zip(heads.tolist(), tails.tolist(), w[heads].tolist(), job[heads].tolist(), a[heads].tolist(),
                                  b[tails].tolist()):
        m = maps[jb]
        if ww:
            out.append(m[x:y + 1])
            continue
        ln = int(keep[h])  # a later copy: never part of a run
        sa, sb = int(col["sa"][ln]), int(col["sb"][ln])
        out.append(join((m[x:sa], sp, b'%d"' % int(pos[ln]), m[sb:y], b"\n")))
    return join(out)


def _drop_rows(ctx: dict, g_op, maps: "_Blobs", sp: bytes, pos: np.ndarray, col: dict, drops: _Drops, own: np.ndarray
               ) -> tuple[bytes, Counter]:
    """The global op's reject rows for the dropped lines, in order, as one block of JSONL, and
    their count by reason. Reference rows of later copies of kept records come from
    `_reference_rows`; any other row is its first copy's record with this line's source spliced
    in twice (or, for a copy of the record kept, a reference row with the source once), from a
    template per key built once per worker and kept for the next copies it meets. Rows are
    joined by C-level map/zip/chain: a Python loop here cost more than all the rest of the step."""
    dumps = orjson.dumps
    lines = drops.lines
    if own[lines].any():  # rows that carried their own source: nothing to splice (rare: native input)
        return _drop_rows_own(g_op, maps, sp, pos, col, drops, own)
    counts: Counter = Counter()
    rlines = lines[drops.refs]
    if len(rlines):
        ref_rows, ref_off = _reference_rows(g_op, sp, pos[rlines], _ids_at(maps.views(), col["job"][rlines], col["start"][rlines]))
        counts[g_op.copy_drop[0]] += len(rlines)
    tlines = lines[~drops.refs]
    keys = drops.keys
    tl = []
    if len(tlines):
        cache: dict = ctx.setdefault("copies_rows", {})
        tl = list(map(cache.get, keys))
        if None in tl:
            miss = [j for j, tpl in enumerate(tl) if tpl is None]
            views = maps.views()
            sel = tlines[miss]
            mm = list(map(views.__getitem__, col["job"][sel].tolist()))
            a, b, sa, sb = (col[k][sel].tolist() for k in ("start", "end", "sa", "sb"))
            rids = list(map(bytes, map(getitem, mm, map(slice, [x + 6 for x in a], [x + 40 for x in a]))))
            reasons, details, copies = drops.describe(miss, rids)
            heads = {r: b'",' + dumps(g_op.name).join((b'"op":', b',"reason":')) + dumps(r) + b',"detail":' for r in set(reasons)}
            for q, (j, rid, reason, detail, copy) in enumerate(zip(miss, rids, reasons, details, copies)):
                det = b'"' + detail + b'"' if _NEEDS_ESCAPE.search(detail) is None else dumps(detail.decode())
                if copy:  # a reference row: only the id is needed
                    tl[j] = (b"".join((heads[reason], det, b',"id":', rid, b',"copy_of":', rid, b"}\n")), b"", True, reason)
                else:
                    pre, post = bytes(mm[q][a[q]:sa[q]]), bytes(mm[q][sb[q]:b[q]])
                    tl[j] = (b"".join((heads[reason], det, b',"id":', rid, b',"record":', pre, sp)), b'"' + post + b"}\n", False, reason)
            if len(cache) < CACHE_ROWS:
                cache.update((keys[j], tl[j]) for j in miss)
        counts.update(map(itemgetter(3), tl))
    if not len(tlines):
        return ref_rows, counts
    head = b'{"source":' + sp
    ps = list(map(b"%d".__mod__, pos[tlines].tolist()))
    ps2 = list(map(mul, ps, map(not_, map(itemgetter(2), tl))))  # the second source: none in a reference row
    if not len(rlines):
        return b"".join(chain.from_iterable(zip(repeat(head), ps, map(itemgetter(0), tl), ps2, map(itemgetter(1), tl)))), counts
    # both kinds: interleave them in line order, a run of each kind at a time
    t_rows = list(map(b"".join, zip(repeat(head), ps, map(itemgetter(0), tl), ps2, map(itemgetter(1), tl))))
    out, ri, ti = [], 0, 0
    kinds = drops.refs
    bounds = np.flatnonzero(np.diff(kinds.astype(np.int8))) + 1
    for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), len(kinds)]):
        if kinds[lo]:
            out.append(ref_rows[ref_off[ri]:ref_off[ri + hi - lo]])
            ri += hi - lo
        else:
            out.extend(t_rows[ti:ti + hi - lo])
            ti += hi - lo
    return b"".join(out), counts


def _drop_rows_own(g_op, maps: "_Blobs", sp: bytes, pos: np.ndarray, col: dict, drops: _Drops, own: np.ndarray) -> tuple[bytes, Counter]:
    """The slow path of `_drop_rows`, one row at a time, for shards with rows that carried their own source."""
    recs, srcs = [], []
    for line in drops.lines.tolist():
        m = maps.views()[int(col["job"][line])]
        a, b = int(col["start"][line]), int(col["end"][line])
        src = None
        if own[line]:
            rec = bytes(m[a:b])
        else:
            src = sp + b'%d"' % int(pos[line])
            rec = bytes(m[a:int(col["sa"][line])]) + src + bytes(m[int(col["sb"][line]):b])
        recs.append(rec)
        srcs.append(src)
    refs = drops.refs.tolist()
    rest = [q for q, r in enumerate(refs) if not r]
    described = iter(zip(*drops.describe(list(range(len(rest))), [recs[q][6:40] for q in rest])))
    rows, counts = [], Counter()
    for rec, src, ref in zip(recs, srcs, refs):
        reason, detail, copy = (g_op.copy_drop[0], g_op.copy_detail(rec[7:39].decode()).encode(), True) if ref else next(described)
        rows.append(local.reject_row_bytes(rec, g_op.name, reason, detail.decode(), src, copy))
        counts[reason] += 1
    return b"".join(rows), counts


class _Blobs:
    """The decode jobs' outcome blobs, mapped on first use."""

    def __init__(self, work: Path) -> None:
        self.work, self.maps, self._views = work, {}, None

    def __getitem__(self, s: int):
        m = self.maps.get(s)
        if m is None:
            with open(self.work / "seg0" / f"{s:05d}.blob", "rb") as f:
                m = self.maps[s] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(f.fileno()).st_size else b""
        return m

    def views(self) -> dict[int, memoryview]:
        """Every job's blob as a memoryview (slicing one copies nothing)."""
        if self._views is None:
            d = self.work / "seg0"
            self._views = {int(p.name[:5]): memoryview(self[int(p.name[:5])]) for p in d.glob("*.blob")}
        return self._views

    def close(self) -> None:
        if self._views is not None:
            for v in self._views.values():
                v.release()
        for m in self.maps.values():
            if isinstance(m, mmap.mmap):
                m.close()


def _worker_table(ctx: dict) -> Table:
    """The outcome table, mapped once per worker."""
    if "copies_table" not in ctx:
        ctx["copies_table"] = Table.load(ctx["work"] / "lines")
    return ctx["copies_table"]


def _commit_shard(i: int, work: Path, segments: list[local.Segment], n: int, n_surv: int, read_rejects: Counter,
                  op_drops: list[Counter], g_drops: Counter, hist: "local._Hist", rej0: list[bytes], kept: bytes, kept_n: int,
                  rej1: bytes) -> tuple[dict, dict | None]:
    """Append shard i's kept records, rejects and stats (in that order, the stats line marking
    it done) to the streams, as the segment-by-segment plan would write it."""
    seg0 = segments[0]
    g_op = seg0.global_op
    meta = _job_meta(work, _worker_table(local._CTX).jobs, i, len(seg0.map_ops))
    reach = n - sum(read_rejects.values())
    ops0: dict[str, dict] = {}
    for k, op in enumerate(seg0.map_ops):  # ops sharing a name share a stats entry, as in local.py
        st = ops0.setdefault(op.name, {"in": 0, "kept": 0, "added": 0, "dropped": Counter(), "seconds": 0.0})
        st["in"] += reach
        reach -= sum(op_drops[k].values())
        st["kept"] += reach
        st["dropped"].update(op_drops[k])
        st["seconds"] += meta["seconds"][k]
    stats0 = {"shard": i, "in": n, "kept": n_surv, "ops": {k: {**v, "dropped": dict(v["dropped"])} for k, v in ops0.items()},
              "read_rejects": dict(read_rejects), "contamination": meta["contamination"]}
    stats1 = None
    if g_op is None:
        stats0.update(hist.as_dict())
    else:
        stats0.update({"hist": {}, "langs": {}, "flags": {}, "kinds": {}}, keys_seconds=meta["keys_seconds"])
        stats1 = {"shard": i, "in": n_surv, "kept": kept_n,
                  "ops": {g_op.name: {"in": n_surv, "kept": kept_n, "added": 0, "dropped": dict(g_drops), "seconds": 0.0}},
                  "read_rejects": {}, "contamination": {}, **hist.as_dict()}
    # append to the output streams in shard order: wait for the previous shard's turn
    ctx = local._CTX
    turn, cond = ctx["turn"], ctx["cond"]
    with cond:
        while turn.value != i:
            cond.wait()
        ends = []
        for path, parts in ((work / KEPT_STREAM, (kept,)), (work / REJECTS_STREAM, (rej0, rej1))):  # bytes: whole rows
            with open(path, "ab") as f:
                for rows in parts:
                    if isinstance(rows, bytes):
                        f.write(rows)
                    elif rows:
                        f.write(b"\n".join(rows))
                        f.write(b"\n")
                ends.append(f.tell())
        with open(work / STATS_STREAM, "ab") as f:  # the commit marker: written last
            f.write(orjson.dumps({"shard": i, "stream": ends, "s0": stats0, "s1": stats1}) + b"\n")
        turn.value = i + 1
        cond.notify_all()
    return stats0, stats1


def _respliced_reject(row: bytes, op_k: int, alias: str, pos: int, source: str) -> bytes:
    """A first copy's reject row, made this copy's: its file and line (read rejects), or its
    source in the row and in the record (op rejects)."""
    d = orjson.loads(row)
    if op_k < 0:
        d["source"], d["line"] = alias, pos
    else:
        d["source"] = source
        d["record"]["meta"]["source"] = source
    return orjson.dumps(d)


# --- the plan ----------------------------------------------------------------------------------

def run_plan(state: dict, n_workers: int, progress: local.Progress | None, force: bool) -> tuple | None:
    """Run the four steps (each resumable); None when `force` is off and copies are too few."""
    work: Path = state["work"]
    shards: list[local.Shard] = state["shards"]
    segments: list[local.Segment] = state["segments"]
    seg = segments[0]
    (work / "lines").mkdir(exist_ok=True)
    for s in segments:
        (work / f"seg{s.index}").mkdir(exist_ok=True)
    with _Workers(state, n_workers) as pool:
        if (work / "lines" / Table.FILE).exists():
            table = Table.load(work / "lines")
        else:
            for old in (work / "lines").glob("hash-*.bin"):  # a killed run's
                old.unlink()
            got = {}
            for r in _progress(pool.map(_hash_shard, list(range(len(shards)))), progress, "lines: hashing", len(shards), 0):
                got[r[0]] = r[1:]
            local.number_shards(shards, [got[i][0] for i in range(len(shards))])
            pos, line_off, hashes, orders, big = _hashed(got, shards)
            canon = _canon(shards, line_off, hashes, orders, big)
            del hashes, orders, big
            for done in (work / "lines").glob("hash-*.bin"):
                done.unlink()
            firsts = canon == np.arange(len(canon))
            if not force and len(canon) and 1 - firsts.mean() < MIN_COPY_SHARE:
                return None
            d = work / "seg0"
            jobs = _decode_jobs(work, firsts, line_off, n_workers)
            todo_a = []
            for j, (i, lo, hi) in enumerate(jobs.tolist()):
                if not (d / f"{j:05d}.outcome").exists():
                    todo_a.append((j, i, shards[i].first_line, pos[line_off[i]:line_off[i + 1]][firsts[line_off[i]:line_off[i + 1]]][lo:hi]))
            label = f"distinct lines: {', '.join(op.name for op in seg.map_ops) or 'read'}"
            for _ in _progress(pool.map(_decode_shard, todo_a), progress, label, len(jobs), len(jobs) - len(todo_a)):
                pass
            table, keys, rows = _build_table(work, jobs, canon, pos, line_off)
            if seg.global_op is not None and not (d / local.DECISION).exists():
                by_ref = state["recipe"].output.copies_by_reference
                if seg.global_op.copy_drop is not None:  # decide on distinct records, told how many times each comes
                    local.commit_decision(seg, work, keys, by_ref, counts=np.bincount(rows, minlength=int((table.arrays["surv"] >= 0).sum())))
                else:
                    local.commit_decision(seg, work, expand_keys(keys, rows), by_ref)
            del keys, rows
            table.save(work / "lines")
        t = table.arrays
        code = np.asarray(t["code"])[np.asarray(t["canon"])]
        surv_cum = np.concatenate(([0], np.cumsum(code == SURVIVOR)))
        jobs = [(i, int(surv_cum[t["line_off"][i]])) for i in range(len(shards))]
        stats0, stats1, ends = _written_prefix(work, len(shards))
        resumed = len(stats0)
        for name, end in zip((KEPT_STREAM, REJECTS_STREAM), ends):
            with open(work / name, "ab") as f:
                f.truncate(end)
        pool.turn.value = resumed
        for s0, s1 in _progress(pool.map(_write_shard, jobs[resumed:]), progress, "writing", len(shards), resumed):
            stats0[s0["shard"]] = s0
            if s1 is not None:
                stats1[s1["shard"]] = s1
    seg_stats = [[stats0[i] for i in range(len(shards))]]
    global_reports: dict[str, dict] = {}
    global_seconds: dict[str, float] = {}
    g = seg.global_op
    if g is not None:
        seg_stats.append([stats1[i] for i in range(len(shards))])
        global_reports[g.name] = local.load_decision(work, 0)[1]["report"]
        global_seconds[g.name] = sum(s.get("keys_seconds", 0.0) for s in seg_stats[0])
    return seg_stats, global_reports, global_seconds, resumed, (work / KEPT_STREAM, work / REJECTS_STREAM)


def _written_prefix(work: Path, n: int) -> tuple[dict, dict, list[int]]:
    """The shards already appended to the streams (always a prefix: appends go in shard order),
    their stats, and the stream lengths to cut back to (bytes of a shard cut off mid-append).
    The stats stream is cut back to its whole, consistent lines."""
    stats0: dict[int, dict] = {}
    stats1: dict[int, dict] = {}
    ends = [0, 0]
    have = [(work / name).stat().st_size if (work / name).exists() else -1 for name in (KEPT_STREAM, REJECTS_STREAM)]
    path = work / STATS_STREAM
    data = path.read_bytes() if path.exists() else b""
    at = 0
    for i in range(n):
        nl = data.find(b"\n", at)
        if nl < 0:
            break
        try:
            marker = orjson.loads(data[at:nl])
        except orjson.JSONDecodeError:
            break
        if marker.get("shard") != i or any(e > h for e, h in zip(marker["stream"], have)):
            break
        ends = marker["stream"]
        stats0[i] = marker["s0"]
        if marker["s1"] is not None:
            stats1[i] = marker["s1"]
        at = nl + 1
    with open(path, "ab") as f:
        f.truncate(at)
    return stats0, stats1, ends


def _progress(results: Iterator, progress: local.Progress | None, label: str, total: int, done: int) -> Iterator:
    if progress:
        progress(label, done, total)
    for r in results:
        done += 1
        if progress:
            progress(label, done, total)
        yield r


class _Workers(local.Workers):
    """One process pool for all steps, sharing the turn counter that keeps the output streams in
    shard order."""

    def __init__(self, state: dict, n: int) -> None:
        ctx = local.pool_context()
        self.turn, self.cond = ctx.Value("q", 0), ctx.Condition()
        super().__init__({**state, "turn": self.turn, "cond": self.cond}, n)
