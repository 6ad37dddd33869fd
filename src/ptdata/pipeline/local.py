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
import multiprocessing
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import orjson

from .. import __version__
from ..convert import _concat
from ..errors import InputError
from ..formats import get_format
from ..io import RowWriter, reject_row, split_name, split_ranges, count_newlines, with_first_lines
from ..ops.base import Drop, GlobalOp, MapOp, Op
from ..reader import RecordReader
from ..records import Record
from ..text import response_text
from .recipe import Recipe

SHARD_BYTES = 4 << 20  # input shard size for plain JSONL: small enough to balance, large enough to amortize

Progress = Callable[[str, int, int], None]  # (stage label, done, total)


@dataclass
class Shard:
    """One unit of work of segment 0: a file, or a line-aligned range of a plain JSONL file."""

    path: str
    alias: str
    input_index: int
    byte_range: tuple[int, int] | None = None
    first_line: int = 1


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


# --- worker side -----------------------------------------------------------------------------

_CTX: dict[str, Any] = {}  # set in the parent before forking: recipe, segments, read options


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


def _process_shard(args: tuple[int, int, int]) -> dict:
    """Worker: segment `si`, shard `shard_no`; `offset` = global index of this shard's first record
    in the previous global op's numbering. Returns the shard's stats (also written to disk)."""
    si, shard_no, offset = args
    gc.disable()
    work: Path = _CTX["work"]
    seg: Segment = _CTX["segments"][si]
    shards: list[Shard] = _CTX["shards"]
    out_dir = work / f"seg{si}"
    drop_map: dict[int, Drop] = {}
    prev_global = _CTX["segments"][si - 1].global_op if si > 0 else None
    if prev_global is not None:
        drop_map = _CTX["decisions"][si - 1]
    stats = {"shard": shard_no, "in": 0, "kept": 0, "ops": {}, "read_rejects": Counter(), "hist": {}, "langs": Counter(),
             "contamination": {}, "flags": Counter(), "kinds": Counter()}
    op_stats = {type(op).name: {"in": 0, "kept": 0, "dropped": Counter(), "seconds": 0.0} for op in seg.map_ops}
    if prev_global is not None:
        op_stats = {prev_global.name: {"in": 0, "kept": 0, "dropped": Counter(), "seconds": 0.0}, **op_stats}
    keys_parts: list[dict[str, np.ndarray]] = []
    is_last = si == len(_CTX["segments"]) - 1
    hist = _Hist() if is_last else None
    batch_size = _CTX["recipe"].batch_size
    tmp_out = out_dir / f".{shard_no:05d}.jsonl.partial"
    tmp_rej = out_dir / f".{shard_no:05d}.rejects.jsonl.partial"
    src_label = "read"
    with open(tmp_out, "wb") as out, open(tmp_rej, "wb") as rej:
        batch: list[Record] = []
        index = offset

        def flush(batch: list[Record]) -> None:
            for op in seg.map_ops:
                st = op_stats[op.name]
                st["in"] += len(batch)
                t = time.perf_counter()
                batch, dropped = op.process(batch)
                st["seconds"] += time.perf_counter() - t
                st["kept"] += len(batch)
                for rec, d in dropped:
                    st["dropped"][d.reason] += 1
                    rej.write(orjson.dumps(_reject(rec, op.name, d)) + b"\n")
                    if d.reason == "contaminated":
                        for item in rec.meta.get("contamination", ()):
                            stats["contamination"].setdefault(item, []).append(rec.id)
            if seg.global_op is not None and batch:
                t = time.perf_counter()
                keys_parts.append(seg.global_op.keys(batch))
                stats["keys_seconds"] = stats.get("keys_seconds", 0.0) + time.perf_counter() - t
            for rec in batch:
                out.write(orjson.dumps(rec.to_dict()) + b"\n")
                if hist is not None:
                    hist.add(rec)
            stats["kept"] += len(batch)

        for rec, bad in _source_records(seg, shard_no, work, shards):
            stats["in"] += 1
            if rec is None:
                stats["read_rejects"][bad["reason"]] += 1
                rej.write(orjson.dumps(bad) + b"\n")
                continue
            if prev_global is not None:
                st = op_stats[prev_global.name]
                st["in"] += 1
                d = drop_map.get(index)
                index += 1
                if d is not None:
                    st["dropped"][d.reason] += 1
                    rej.write(orjson.dumps(_reject(rec, prev_global.name, d)) + b"\n")
                    continue
                st["kept"] += 1
            batch.append(rec)
            if len(batch) >= batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    if seg.global_op is not None:
        keys = {k: np.concatenate([p[k] for p in keys_parts]) for k in keys_parts[0]} if keys_parts else {}
        tmp_keys = out_dir / f".{shard_no:05d}.keys.npz.partial"
        with open(tmp_keys, "wb") as f:
            np.savez(f, **keys)
        os.replace(tmp_keys, out_dir / f"{shard_no:05d}.keys.npz")
    os.replace(tmp_out, out_dir / f"{shard_no:05d}.jsonl")
    os.replace(tmp_rej, out_dir / f"{shard_no:05d}.rejects.jsonl")
    stats["ops"] = {k: {**v, "dropped": dict(v["dropped"])} for k, v in op_stats.items()}
    stats["read_rejects"] = dict(stats["read_rejects"])
    if hist is not None:
        stats["hist"], stats["langs"], stats["flags"], stats["kinds"] = hist.as_dict(), dict(hist.langs), dict(hist.flags), dict(hist.kinds)
    else:
        stats["langs"], stats["flags"], stats["kinds"] = {}, {}, {}
    tmp_stats = out_dir / f".{shard_no:05d}.stats.json.partial"
    tmp_stats.write_bytes(orjson.dumps(stats))
    os.replace(tmp_stats, out_dir / f"{shard_no:05d}.stats.json")  # commit marker: written last
    return stats


def _reject(rec: Record, op: str, d: Drop) -> dict:
    src = rec.meta.get("source", "")
    return {"source": src, "op": op, "reason": d.reason, "detail": d.detail, "id": rec.id, "record": rec.to_dict()}


class _Hist:
    """Fixed-bin histograms of lengths and scores, summed across shards for the report."""

    LEN_BINS = [0, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 10**9]
    UNIT_BINS = [i / 20 for i in range(21)]

    def __init__(self) -> None:
        self.len_resp: list[int] = []
        self.scores: dict[str, list[float]] = {}
        self.langs: Counter = Counter()
        self.flags: Counter = Counter()
        self.kinds: Counter = Counter()

    def add(self, rec: Record) -> None:
        self.len_resp.append(len(response_text(rec)) if rec.kind != "prompt" else len(rec.messages[-1]["content"]))
        for k, v in rec.scores.items():
            if isinstance(v, (int, float)):
                self.scores.setdefault(k, []).append(float(v))
        self.langs[rec.meta.get("lang", "?")] += 1
        self.kinds[rec.kind] += 1
        for f in rec.meta.get("flags", ()):
            self.flags[f] += 1

    def as_dict(self) -> dict:
        out = {"length": np.histogram(self.len_resp, bins=self.LEN_BINS)[0].tolist()}
        for k, vals in self.scores.items():
            a = np.asarray(vals)
            if k.startswith("tokens.") or a.max(initial=0) > 1 or a.min(initial=0) < 0:
                out[f"score:{k}"] = {"bins": self.LEN_BINS, "counts": np.histogram(a, bins=self.LEN_BINS)[0].tolist()}
            else:
                out[f"score:{k}"] = {"bins": self.UNIT_BINS, "counts": np.histogram(a, bins=self.UNIT_BINS)[0].tolist()}
        return out


# --- parent side -----------------------------------------------------------------------------

def _manifest(recipe: Recipe, files: list[list[Path]]) -> bytes:
    inputs = [[str(p), p.stat().st_size, int(p.stat().st_mtime)] for group in files for p in group]
    return orjson.dumps({"ptdata": __version__, "recipe": orjson.loads(recipe.fingerprint()), "inputs": inputs},
                        option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)


def _make_shards(recipe: Recipe, files: list[list[Path]], work: Path) -> list[Shard]:
    """Cut inputs into shards; gzipped JSONL is inflated once into the work dir so it can be split."""
    shards: list[Shard] = []
    for ii, group in enumerate(files):
        for path in group:
            container, gz = split_name(path)
            src = path
            if gz and container == "jsonl":
                plain = work / "inputs" / f"{ii}-{path.name[:-3]}"
                if not plain.exists():
                    plain.parent.mkdir(parents=True, exist_ok=True)
                    part = plain.with_name(plain.name + ".partial")
                    with gzip.open(path, "rb") as g, open(part, "wb") as f:
                        shutil.copyfileobj(g, f, 8 << 20)
                    os.replace(part, plain)
                src, container, gz = plain, "jsonl", False
            if container == "jsonl" and not gz and src.stat().st_size > SHARD_BYTES:
                ranges = split_ranges(src, max(1, src.stat().st_size // SHARD_BYTES))
                firsts = with_first_lines(ranges, [count_newlines(src, r) for r in ranges])
                shards.extend(Shard(str(src), str(path), ii, (a, b), line) for a, b, line in firsts)
            else:
                shards.append(Shard(str(src), str(path), ii))
    return shards


def _load_decision(work: Path, si: int) -> dict[int, Drop] | None:
    d = work / f"seg{si}" / "decision.json"
    if not d.exists():
        return None
    data = orjson.loads(d.read_bytes())
    return {int(i): Drop(r, t) for i, r, t in data["drops"]}


def run(recipe: Recipe, workers: int | None = None, progress: Progress | None = None) -> RunResult:
    """Run a recipe locally; resumes from the work dir when the recipe and inputs are unchanged."""
    out_dir = recipe.out_dir()
    work = out_dir / ".work"
    files = [inp.files(recipe.base_dir) for inp in recipe.inputs]
    manifest = _manifest(recipe, files)
    mpath = work / "manifest.json"
    if mpath.exists() and mpath.read_bytes() != manifest:
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
    for op in recipe.ops:
        op.setup()  # built once here, inherited by the forked workers
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(shards)))
    _CTX.update(recipe=recipe, segments=segments, shards=shards, work=work, formats=formats, decisions={})
    resumed = 0
    global_reports: dict[str, dict] = {}
    global_seconds: dict[str, float] = {}
    seg_stats: list[list[dict]] = []
    ctx = multiprocessing.get_context("fork")
    for seg in segments:
        seg_dir = work / f"seg{seg.index}"
        seg_dir.mkdir(exist_ok=True)
        offsets = _offsets(seg_stats[-1]) if seg_stats else [0] * len(shards)
        todo, done = [], {}
        for i in range(len(shards)):
            sp = seg_dir / f"{i:05d}.stats.json"
            if sp.exists():
                done[i] = orjson.loads(sp.read_bytes())
            else:
                todo.append((seg.index, i, offsets[i]))
        resumed += len(done)
        names = [op.name for op in seg.map_ops] + ([seg.global_op.name] if seg.global_op else [])
        label = f"segment {seg.index + 1}/{len(segments)}: {', '.join(names) or 'apply decisions'}"
        if progress:
            progress(label, len(done), len(shards))
        if todo:
            # a fresh pool per segment: forked after the previous global decision is in _CTX
            with ctx.Pool(min(n_workers, len(todo))) as pool:
                for st in pool.imap_unordered(_process_shard, todo):
                    done[st["shard"]] = st
                    if progress:
                        progress(label, len(done), len(shards))
        seg_stats.append([done[i] for i in range(len(shards))])
        if seg.global_op is not None:
            t = time.perf_counter()
            decision = _load_decision(work, seg.index)
            if decision is None:
                decision = _decide(seg, work, len(shards))
            global_seconds[seg.global_op.name] = time.perf_counter() - t + sum(x.get("keys_seconds", 0.0) for x in seg_stats[-1])
            global_reports[seg.global_op.name] = orjson.loads((seg_dir / "decision.json").read_bytes())["report"]
            _CTX["decisions"][seg.index] = decision
    return _finish(recipe, segments, seg_stats, global_reports, global_seconds, work, out_dir, resumed)


def _offsets(stats: list[dict]) -> list[int]:
    out, n = [], 0
    for st in stats:
        out.append(n)
        n += st["kept"]
    return out


def _decide(seg: Segment, work: Path, n_shards: int) -> dict[int, Drop]:
    parts = []
    for i in range(n_shards):
        with np.load(work / f"seg{seg.index}" / f"{i:05d}.keys.npz") as z:
            if z.files:
                parts.append({k: z[k] for k in z.files})
    keys = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    if keys:
        drop, drops, report = seg.global_op.decide(keys)
    else:
        drop, drops, report = np.empty(0, dtype=np.int64), [], {}
    data = {"drops": [[int(i), d.reason, d.detail] for i, d in zip(drop.tolist(), drops)], "report": report}
    path = work / f"seg{seg.index}" / "decision.json"
    tmp = path.with_name(".decision.json.partial")
    tmp.write_bytes(orjson.dumps(data))
    os.replace(tmp, path)
    return {int(i): d for i, d in zip(drop.tolist(), drops)}


def _finish(recipe: Recipe, segments: list[Segment], seg_stats: list[list[dict]], global_reports: dict, global_seconds: dict,
            work: Path, out_dir: Path, resumed: int) -> RunResult:
    last = segments[-1].index
    n_shards = len(seg_stats[0])
    kept_path = out_dir / recipe.output.file
    rejects_path = out_dir / "rejects.jsonl"
    parts = [work / f"seg{last}" / f"{i:05d}.jsonl" for i in range(n_shards)]
    if recipe.output.format == "ptdata" and split_name(kept_path) == ("jsonl", False):
        _concat(parts, kept_path)
    else:
        write = get_format(recipe.output.format).write
        with RowWriter(kept_path, recipe.output.format, recipe.output.options) as w:
            for p in parts:
                with open(p, "rb") as f:
                    for line in f:
                        w.write_many(write(Record.from_trusted(orjson.loads(line)), recipe.output.options))
    _concat([work / f"seg{s.index}" / f"{i:05d}.rejects.jsonl" for s in segments for i in range(n_shards)], rejects_path)
    stats = _merge_stats(recipe, segments, seg_stats, global_reports, global_seconds)
    stats_path = out_dir / "stats.json"
    stats_path.write_bytes(orjson.dumps(stats, option=orjson.OPT_INDENT_2))
    report_path = None
    if recipe.output.report:
        from ..report.html import write_report

        report_path = write_report(stats, out_dir / "report.html")
    return RunResult(out_dir, kept_path, rejects_path, stats_path, report_path, stats, resumed)


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
                acc = ops.setdefault(name, {"in": 0, "kept": 0, "dropped": Counter(), "seconds": 0.0})
                acc["in"] += o["in"]
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
        o = ops.get(name, {"in": 0, "kept": 0, "dropped": Counter(), "seconds": 0.0})
        funnel.append({"op": name, "in": o["in"], "kept": o["kept"], "dropped": dict(o["dropped"]), "seconds": round(o["seconds"], 3),
                       **({"report": global_reports[name]} if name in global_reports else {})})
    assert records_in == kept + rejected, f"record accounting broke: {records_in} != {kept} + {rejected}"
    return {
        "recipe": recipe.name,
        "records_in": records_in, "kept": kept, "rejected": rejected,
        "ops": funnel,
        "kept_kinds": dict(kinds), "kept_languages": dict(langs.most_common()), "kept_flags": dict(flags),
        "histograms": {"bins_length": _Hist.LEN_BINS, **hist},
        "contamination": {k: sorted(set(v)) for k, v in sorted(contamination.items())},
    }
