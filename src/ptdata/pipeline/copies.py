"""Identical input lines are decoded once.

Merged datasets and traffic logs repeat whole lines. An identical line gives an identical
record, so every *pure* op (see `Op.pure`) gives it the same verdict and changes, and a
global op the same keys. For a recipe of pure map ops and at most one global op, over plain
JSONL, the local executor therefore runs this plan instead of segment by segment:

1. `lines`: every shard's lines are hashed (xxh3-128) in parallel; the parent finds each
   line's first identical copy within its input (`canon`).
2. `decode`: the map ops (and the global op's keys) run on the first copies only; each one's
   outcome is kept as bytes: its record, or its reject row.
3. The keys are expanded to every surviving record in input order, and the global op decides
   exactly as it would on the full data.
4. `write`: every line gets its first copy's outcome, with its own source and line spliced in.

The files it writes are the ones the segment-by-segment plan writes, byte for byte
(`tests/test_copies.py`), so the report, resume and the final concatenation are shared.
With `copies="auto"` the plan is taken only when at least `MIN_COPY_SHARE` of the lines are
copies; otherwise step 1 was the only extra work.
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
from typing import Iterator

import numpy as np
import orjson
import xxhash

from ..io import sniff
from ..reader import RecordReader
from . import local

MIN_COPY_SHARE = 0.05
KEPT_STREAM, REJECTS_STREAM = "kept.stream.jsonl", "rejects.stream.jsonl"
CACHE_ROWS = 200_000  # per worker: templates of dropped copies' rows (~1 KB each), kept for the next copies
SURVIVOR = -1  # outcome code of a record that every map op kept

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

def _hash_shard(i: int) -> int:
    """Worker: physical line number and xxh3-128 of every record line of shard i (blank lines
    are not records, as in RowSource). Over-long lines are marked so they are never collapsed."""
    ctx = local._CTX
    sh: local.Shard = ctx["shards"][i]
    recipe = ctx["recipe"]
    limit = recipe.inputs[sh.input_index].read_options(recipe.validation).max_record_bytes
    data = _read_shard(ctx, sh)
    arr = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(arr == 10)
    if len(data) and data[-1] != 10:
        ends = np.append(ends, len(data))
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64) if len(ends) else ends.astype(np.int64)
    lineno = np.arange(sh.first_line, sh.first_line + len(starts), dtype=np.int64)
    # blank lines are not records (as in RowSource); a record line almost always starts with "{"
    odd = np.flatnonzero((starts == ends) | (arr[np.minimum(starts, max(len(arr) - 1, 0))] != 123))
    blank = [j for j in odd.tolist() if not bytes(data[starts[j]:ends[j]]).strip()]
    keep = np.ones(len(starts), dtype=bool)
    keep[blank] = False
    starts, ends, pos = starts[keep], ends[keep], lineno[keep]
    big = np.flatnonzero(ends - starts >= limit)
    hashes = b"".join(map(xxhash.xxh3_128_digest, map(data.__getitem__, map(slice, starts.tolist(), ends.tolist()))))
    d = ctx["work"] / "lines"
    local.save_array(d / f"{i:05d}.pos.npy", pos)
    local.save_array(d / f"{i:05d}.hash.npy", np.frombuffer(hashes, dtype=np.uint64).reshape(-1, 2))
    local.save_array(d / f"{i:05d}.big.npy", big.astype(np.int64))
    return i


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


def _line_offsets(work: Path, n_shards: int) -> np.ndarray:
    """Where each shard's record lines start in the global line numbering (n_shards + 1 values)."""
    counts = [len(np.load(work / "lines" / f"{i:05d}.pos.npy", mmap_mode="r")) for i in range(n_shards)]
    return np.concatenate(([0], np.cumsum(counts))).astype(np.int64)


def _canon(work: Path, shards: list[local.Shard], offsets: np.ndarray) -> np.ndarray:
    """For every record line (all shards, in order), the global index of its first identical
    copy in the same input; over-long lines are their own."""
    d = work / "lines"
    canon = np.arange(offsets[-1], dtype=np.int64)
    for ii in sorted({sh.input_index for sh in shards}):
        members = [i for i, sh in enumerate(shards) if sh.input_index == ii]
        glob = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in members])
        if not len(glob):
            continue
        h = np.concatenate([np.load(d / f"{i:05d}.hash.npy") for i in members])
        canon[glob] = glob[_first_copies(h)]
    for i in range(len(shards)):
        big = np.load(d / f"{i:05d}.big.npy") + offsets[i]
        canon[big] = big
    return canon


def _first_copies(h: np.ndarray) -> np.ndarray:
    """For rows of 128-bit hashes (n, 2), the index of each row's first equal row. Grouped on
    the high half (a fast integer sort), then checked on the low half: rows whose low half
    differs from their group's first are grouped on both halves (practically never)."""
    _, first, inverse = np.unique(h[:, 0], return_index=True, return_inverse=True)
    out = first[inverse.ravel()]
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
    and at least four per worker (copies cluster: all first copies may sit in a few shards).
    Saved, so a resumed run cuts the same jobs whatever its worker count."""
    path = work / "lines" / "jobs.npy"
    if path.exists():
        return np.load(path)
    per_shard = [int(firsts[line_off[i]:line_off[i + 1]].sum()) for i in range(len(line_off) - 1)]
    size = max(1, -(-sum(per_shard) // (4 * n_workers)))
    jobs = [(i, lo, min(lo + size, n)) for i, n in enumerate(per_shard) for lo in range(0, n, size)]
    arr = np.array(jobs, dtype=np.int64).reshape(-1, 3)
    local.save_array(path, arr)
    return arr


def _job_meta(work: Path, jobs: np.ndarray, i: int, n_ops: int) -> dict:
    """Shard i's decode figures: its jobs' summed, in order."""
    meta = {"seconds": [0.0] * n_ops, "keys_seconds": 0.0, "contamination": {}}
    for j in np.flatnonzero(jobs[:, 0] == i).tolist():
        m = orjson.loads((work / "seg0" / f"{j:05d}.canon.json").read_bytes())
        meta["seconds"] = [a + b for a, b in zip(meta["seconds"], m["seconds"])]
        meta["keys_seconds"] += m["keys_seconds"]
        for item, ids in m["contamination"].items():
            meta["contamination"].setdefault(item, []).extend(ids)
    return meta


def _decode_shard(args: tuple[int, int, np.ndarray]) -> int:
    """Worker, job j: read shard i's first copies `wanted` only, run the map ops and the global
    op's keys, and keep each outcome's bytes: the record for a survivor, the reject row otherwise."""
    j, i, wanted = args
    gc.disable()
    ctx = local._CTX
    recipe = ctx["recipe"]
    seg: local.Segment = ctx["segments"][0]
    sh: local.Shard = ctx["shards"][i]
    d = ctx["work"] / "seg0"
    reader = RecordReader(sh.path, recipe.inputs[sh.input_index].read_options(recipe.validation), byte_range=sh.byte_range,
                          first_line=sh.first_line, detected=ctx["formats"].get(sh.path), alias=sh.alias,
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

    def emit(pos: int, code: int, data: bytes, own: bool, sa: int = 0, sb: int = 0) -> None:
        start = len(blob)
        blob.extend(data)
        entries.append((pos, code, start, len(blob), own, sa, sb))

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
            data = dumps(rec.to_dict())
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
    local.commit_file(d / f"{j:05d}.canon.bin", lambda f: f.write(blob))
    local.save_array(d / f"{j:05d}.canon.npy", np.array(entries, dtype=_ENTRY))
    for name in (keys_parts[0] if keys_parts else {}):
        local.save_array(d / f"{j:05d}.canon.key.{name}.npy", np.concatenate([p[name] for p in keys_parts]))
    meta = {"codes": [[k, r] for (k, r) in codes], "seconds": seconds, "keys_seconds": keys_seconds, "contamination": contamination}
    local.commit_file(d / f"{j:05d}.canon.json", lambda f: f.write(dumps(meta)))  # commit marker: written last
    return j


class Table:
    """Every first copy's outcome, indexed by canonical number; `canon` maps each global line
    to its first copy's canonical number. Arrays, so workers map them without a copy."""

    NAMES = ("canon", "first", "job", "start", "end", "code", "own", "sa", "sb", "surv")

    def __init__(self, arrays: dict[str, np.ndarray], codes: list[tuple[int, str]], jobs: np.ndarray) -> None:
        self.arrays = arrays
        self.codes = codes
        self.jobs = jobs  # (shard, lo, hi) per decode job; the "job" column names the outcome file

    def save(self, d: Path) -> None:
        for name in self.NAMES:
            local.save_array(d / f"table.{name}.npy", self.arrays[name])
        local.commit_file(d / "table.json", lambda f: f.write(orjson.dumps({"codes": self.codes})))

    @classmethod
    def load(cls, d: Path) -> "Table":
        codes = [tuple(c) for c in orjson.loads((d / "table.json").read_bytes())["codes"]]
        return cls({n: np.load(d / f"table.{n}.npy", mmap_mode="r") for n in cls.NAMES}, codes, np.load(d / "jobs.npy"))


def _build_table(work: Path, jobs: np.ndarray, canon: np.ndarray, offsets: np.ndarray) -> tuple[Table, dict[str, np.ndarray]]:
    """Join the shards' decode outputs into one table; return it with the survivors' keys
    expanded to every surviving line in input order."""
    d = work / "seg0"
    lines = work / "lines"
    firsts = np.flatnonzero(canon == np.arange(len(canon)))
    number = np.full(len(canon), -1, dtype=np.int64)
    number[firsts] = np.arange(len(firsts))
    n = len(firsts)
    arr = {"first": firsts, "job": np.zeros(n, np.int32), "start": np.zeros(n, np.int64), "end": np.zeros(n, np.int64),
           "code": np.zeros(n, np.int32), "own": np.zeros(n, bool), "sa": np.zeros(n, np.int64), "sb": np.zeros(n, np.int64),
           "surv": np.full(n, -1, np.int64)}
    code_index: dict[tuple[int, str], int] = {}  # (op index or -1, reason) -> code, over all shards
    keys: dict[str, list[np.ndarray]] = {}
    n_surv = 0
    for j, i in enumerate(jobs[:, 0].tolist()):  # in shard order, and in line order within a shard
        meta = orjson.loads((d / f"{j:05d}.canon.json").read_bytes())
        remap = np.array([code_index.setdefault((k, r), len(code_index)) for k, r in meta["codes"]] or [0], dtype=np.int32)
        e = np.load(d / f"{j:05d}.canon.npy")
        pos = np.load(lines / f"{i:05d}.pos.npy")
        c = number[offsets[i] + np.searchsorted(pos, e["pos"])]
        arr["job"][c] = j
        arr["start"][c], arr["end"][c], arr["own"][c] = e["start"], e["end"], e["own"]
        arr["sa"][c], arr["sb"][c] = e["start"] + e["sa"], e["start"] + e["sb"]
        surv = e["code"] == SURVIVOR
        arr["code"][c] = np.where(surv, SURVIVOR, remap[np.where(surv, 0, e["code"])])
        arr["surv"][c[surv]] = np.arange(n_surv, n_surv + int(surv.sum()))
        n_surv += int(surv.sum())
        for p in sorted(d.glob(f"{j:05d}.canon.key.*.npy")):
            keys.setdefault(p.name.split(".")[3], []).append(np.load(p))
    cnum = number[canon]
    table = Table({"canon": cnum, **arr}, list(code_index), jobs)
    rows = arr["surv"][cnum]
    return table, expand_keys({k: np.concatenate(v) for k, v in keys.items()}, rows[rows >= 0])


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

def _write_shard(args: tuple[int, int, int]) -> tuple[dict, dict | None]:
    """Worker: every line of shard i gets its first copy's outcome, with its own source spliced
    in; appends what the segment-by-segment plan writes for this shard to the output streams."""
    i, line_off, surv_off = args
    gc.disable()
    ctx = local._CTX
    work: Path = ctx["work"]
    segments: list[local.Segment] = ctx["segments"]
    sh: local.Shard = ctx["shards"][i]
    seg0 = segments[0]
    g_op = seg0.global_op
    t = _worker_table(ctx).arrays
    pos = np.load(work / "lines" / f"{i:05d}.pos.npy")
    n = len(pos)
    c = np.asarray(t["canon"][line_off:line_off + n])
    code = t["code"][c]
    surv = np.flatnonzero(code == SURVIVOR)  # lines whose record every map op kept
    d_pos, d_reason, d_detail, d_copy = local.shard_drop_arrays(work, 0, surv_off, len(surv)) if g_op is not None else ([], [], [], [])
    dropped = np.zeros(n, dtype=bool)
    dropped[surv[d_pos]] = True
    col = {k: t[k][c] for k in ("job", "start", "end", "sa", "sb")}
    whole = (t["first"][c] == np.arange(line_off, line_off + n)) | t["own"][c]
    maps = _Blobs(work)
    name = Path(sh.alias).name
    sp = orjson.dumps(name)[:-1] + b":"  # a source value up to the line number
    hist = local._Hist()
    read_rejects: Counter = Counter()
    op_drops: list[Counter] = [Counter() for _ in seg0.map_ops]
    rej0: list[bytes] = []
    kept: list[bytes] = []
    loads, join = orjson.loads, b"".join
    # the segment-by-segment plan writes a read reject as it meets it, and an op's drops when the
    # batch the record is in is full: order this shard's rejects the same way
    read_rej = np.zeros(n, dtype=bool)
    rej_codes = np.unique(code[code != SURVIVOR]).tolist()
    for cd in rej_codes:
        if _worker_table(ctx).codes[cd][0] < 0:
            read_rej |= code == cd
    batch_of = ((np.cumsum(~read_rej) - ~read_rej) // ctx["recipe"].batch_size).tolist()
    rej0_keys: list[tuple[int, int, int]] = []
    rest = np.flatnonzero(~dropped)  # read/op rejects and kept records: a plain loop
    for j, cd, p, w, s, a, b, sa, sb in zip(rest.tolist(), code[rest].tolist(), pos[rest].tolist(), whole[rest].tolist(),
                                            *(col[k][rest].tolist() for k in ("job", "start", "end", "sa", "sb"))):
        m = maps[s]
        if cd != SURVIVOR:
            op_k, reason = _worker_table(ctx).codes[cd]
            (read_rejects if op_k < 0 else op_drops[op_k])[reason] += 1
            row = m[a:b]
            rej0.append(row if w else _respliced_reject(row, op_k, str(sh.alias), p, f"{name}:{p}"))
            rej0_keys.append((batch_of[j], op_k, j))
            continue
        line = m[a:b] if w else join((m[a:sa], sp, b'%d"' % p, m[sb:b]))
        kept.append(line)
        hist.add(loads(line))
    if rej0_keys:
        rej0 = [rej0[k] for k in sorted(range(len(rej0)), key=rej0_keys.__getitem__)]
    rej1 = _drop_rows(ctx, g_op, maps, sp, pos, col, c, np.flatnonzero(dropped), d_reason, d_detail, d_copy, t["own"][c]) if len(d_pos) else b""
    maps.close()
    return _commit_shard(i, work, segments, n, len(surv), read_rejects, op_drops, Counter(d_reason), hist, rej0, kept, rej1)


def _drop_rows(ctx: dict, g_op, maps: "_Blobs", sp: bytes, pos: np.ndarray, col: dict, c: np.ndarray, lines: np.ndarray,
               reasons: list[str], details: list[bytes], copies: list[bool], own: np.ndarray) -> bytes:
    """The global op's reject rows for the dropped lines, in order, as one block of JSONL: each
    is its first copy's record with this line's source spliced in twice, or, for a copy of the
    record kept, a reference row with the source once. The parts between the sources are a
    template per (first copy, reason, detail, copy, file), built once per worker and kept for
    the next copies it meets; rows are joined by C-level map/zip/chain, as a Python loop here
    cost more than all the rest of the step."""
    dumps = orjson.dumps
    if own[lines].any():  # rows that carried their own source: nothing to splice (rare: native input)
        return _drop_rows_own(g_op, maps, sp, pos, col, lines, reasons, details, copies, own)
    cache: dict = ctx.setdefault("copies_rows", {})
    keys = list(zip(c[lines].tolist(), reasons, details, copies, repeat(sp)))
    tl = list(map(cache.get, keys))
    if None in tl:
        miss = [j for j, tpl in enumerate(tl) if tpl is None]
        heads = {r: b'",' + dumps(g_op.name).join((b'"op":', b',"reason":')) + dumps(r) + b',"detail":' for r in set(reasons)}
        views = maps.views()
        for copy in (True, False):
            part = [j for j in miss if copies[j] == copy]
            if not part:
                continue
            sel = lines[part]
            mm = list(map(views.__getitem__, col["job"][sel].tolist()))
            a, b, sa, sb = (col[k][sel].tolist() for k in ("start", "end", "sa", "sb"))
            if copy:  # a reference row: only the id is needed
                rids = list(map(bytes, map(getitem, mm, map(slice, [x + 6 for x in a], [x + 40 for x in a]))))
                pre = post = repeat(b"")
            else:
                pre = list(map(bytes, map(getitem, mm, map(slice, a, sa))))
                post = list(map(bytes, map(getitem, mm, map(slice, sb, b))))
                rids = [pr[6:40] for pr in pre]
            for j, rid, pr, po in zip(part, rids, pre, post):
                _, reason, detail, _, _ = keys[j]
                det = b'"' + detail + b'"' if _NEEDS_ESCAPE.search(detail) is None else dumps(detail.decode())
                if copy:
                    tl[j] = (b"".join((heads[reason], det, b',"id":', rid, b',"copy_of":', rid, b"}\n")), b"")
                else:
                    tl[j] = (b"".join((heads[reason], det, b',"id":', rid, b',"record":', pr, sp)), b'"' + po + b"}\n")
        if len(cache) < CACHE_ROWS:
            cache.update((keys[j], tl[j]) for j in miss)
    ps = list(map(b"%d".__mod__, pos[lines].tolist()))
    ps2 = list(map(mul, ps, map(not_, copies)))  # the second source: none in a reference row
    return b"".join(chain.from_iterable(zip(repeat(b'{"source":' + sp), ps, map(itemgetter(0), tl), ps2, map(itemgetter(1), tl))))


def _drop_rows_own(g_op, maps: "_Blobs", sp: bytes, pos: np.ndarray, col: dict, lines: np.ndarray, reasons: list[str],
                   details: list[bytes], copies: list[bool], own: np.ndarray) -> bytes:
    """The slow path of `_drop_rows`, one row at a time, for shards with rows that carried their own source."""
    out = []
    for line, reason, detail, copy in zip(lines.tolist(), reasons, details, copies):
        m = maps.views()[int(col["job"][line])]
        a, b = int(col["start"][line]), int(col["end"][line])
        src = None
        if own[line]:
            rec = bytes(m[a:b])
        else:
            src = sp + b'%d"' % int(pos[line])
            rec = bytes(m[a:int(col["sa"][line])]) + src + bytes(m[int(col["sb"][line]):b])
        out.append(local.reject_row_bytes(rec, g_op.name, reason, detail.decode(), src, copy))
    return b"".join(out)


class _Blobs:
    """The decode step's outcome files, one per job, mapped on first use."""

    def __init__(self, work: Path) -> None:
        self.work, self.maps, self._views = work, {}, None

    def __getitem__(self, s: int):
        m = self.maps.get(s)
        if m is None:
            with open(self.work / "seg0" / f"{s:05d}.canon.bin", "rb") as f:
                m = self.maps[s] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(f.fileno()).st_size else b""
        return m

    def views(self) -> dict[int, memoryview]:
        """Every shard's outcome file as a memoryview (slicing one copies nothing)."""
        if self._views is None:
            d = self.work / "seg0"
            self._views = {int(p.name[:5]): memoryview(self[int(p.name[:5])]) for p in d.glob("*.canon.bin")}
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
                  op_drops: list[Counter], g_drops: Counter, hist: "local._Hist", rej0: list[bytes], kept: list[bytes],
                  rej1: bytes) -> tuple[dict, dict | None]:
    """Write shard i's files and stats as the segment-by-segment plan does (stats file last)."""
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
    d0, d1 = work / "seg0", work / f"seg{len(segments) - 1}"
    stats1 = None
    if g_op is None:
        stats0.update(hist.as_dict())
    else:
        stats0.update({"hist": {}, "langs": {}, "flags": {}, "kinds": {}}, keys_seconds=meta["keys_seconds"])
        kept_n = len(kept)
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
        for path, parts in ((work / KEPT_STREAM, (kept,)), (work / REJECTS_STREAM, (rej0, rej1))):
            with open(path, "ab") as f:
                for rows in parts:
                    if isinstance(rows, bytes):
                        f.write(rows)
                    elif rows:
                        f.write(b"\n".join(rows))
                        f.write(b"\n")
                ends.append(f.tell())
        marker = stats0 if stats1 is None else stats1
        marker["stream"] = ends
        if stats1 is not None:
            local.commit_file(d0 / f"{i:05d}.stats.json", lambda f: f.write(orjson.dumps(stats0)))
        local.commit_file(d1 / f"{i:05d}.stats.json", lambda f: f.write(orjson.dumps(marker)))  # commit marker: written last
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
    (work / "lines").mkdir(exist_ok=True)
    for s in segments:
        (work / f"seg{s.index}").mkdir(exist_ok=True)
    with _Workers(state, n_workers) as pool:
        todo = [i for i in range(len(shards)) if not (work / "lines" / f"{i:05d}.big.npy").exists()]
        for _ in _progress(pool.map(_hash_shard, todo), progress, "lines: hashing", len(shards), len(shards) - len(todo)):
            pass
        line_off = _line_offsets(work, len(shards))
        if (work / "lines" / "table.json").exists():
            table = Table.load(work / "lines")
        else:
            canon = _canon(work, shards, line_off)
            firsts = canon == np.arange(len(canon))
            if not force and len(canon) and 1 - firsts.mean() < MIN_COPY_SHARE:
                return None
            d = work / "seg0"
            jobs = _decode_jobs(work, firsts, line_off, n_workers)
            todo_a = []
            for j, (i, lo, hi) in enumerate(jobs.tolist()):
                if not (d / f"{j:05d}.canon.json").exists():
                    todo_a.append((j, i, np.load(work / "lines" / f"{i:05d}.pos.npy")[firsts[line_off[i]:line_off[i + 1]]][lo:hi]))
            label = f"distinct lines: {', '.join(op.name for op in segments[0].map_ops) or 'read'}"
            for _ in _progress(pool.map(_decode_shard, todo_a), progress, label, len(jobs), len(jobs) - len(todo_a)):
                pass
            table, keys = _build_table(work, jobs, canon, line_off)
            seg = segments[0]
            if seg.global_op is not None and not (work / "seg0" / "decision.json").exists():
                local.commit_decision(seg, work, keys, state["recipe"].output.copies_by_reference)
            del keys
            table.save(work / "lines")
        code = np.asarray(table.arrays["code"])[np.asarray(table.arrays["canon"])]
        surv_cum = np.concatenate(([0], np.cumsum(code == SURVIVOR)))
        last = work / f"seg{len(segments) - 1}"
        jobs = [(i, int(line_off[i]), int(surv_cum[line_off[i]])) for i in range(len(shards))]
        stats0, stats1, ends = _written_prefix(work, last, len(shards), len(segments) > 1)
        resumed = len(stats1 if len(segments) > 1 else stats0)
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
    g = segments[0].global_op
    if g is not None:
        seg_stats.append([stats1[i] for i in range(len(shards))])
        global_reports[g.name] = orjson.loads((work / "seg0" / "decision.json").read_bytes())["report"]
        global_seconds[g.name] = sum(s.get("keys_seconds", 0.0) for s in seg_stats[0])
    return seg_stats, global_reports, global_seconds, resumed, (work / KEPT_STREAM, work / REJECTS_STREAM)


def _written_prefix(work: Path, last: Path, n: int, two: bool) -> tuple[dict, dict, list[int]]:
    """The shards already appended to the streams (always a prefix: appends go in shard order),
    their stats, and the stream lengths to cut back to (bytes of a shard cut off mid-append)."""
    stats0: dict[int, dict] = {}
    stats1: dict[int, dict] = {}
    ends = [0, 0]
    have = [(work / name).stat().st_size if (work / name).exists() else -1 for name in (KEPT_STREAM, REJECTS_STREAM)]
    for i in range(n):
        p = last / f"{i:05d}.stats.json"
        if not p.exists():
            break
        marker = orjson.loads(p.read_bytes())
        if "stream" not in marker or any(e > h for e, h in zip(marker["stream"], have)):
            break
        ends = marker["stream"]
        if two:
            stats0[i], stats1[i] = orjson.loads((work / "seg0" / f"{i:05d}.stats.json").read_bytes()), marker
        else:
            stats0[i] = marker
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
