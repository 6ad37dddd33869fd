"""A global op's decision, committed for the next segment's workers to apply (drops, reasons,
details, which drops are copies of their keeper).

An op whose decision splits by one of its keys (`GlobalOp.partition_key`: records with
different values never interact, as exact dedup's text hash) is decided in partitions: each is
one job on the run's workers (a process pool, or Ray actors on a cluster) that reads only its
rows of every shard's keys and commits its own part; the parent holds only the merged report.
Any other op is one partition, decided in the parent from all keys. Either way the drops are
those of one `decide` on all keys, so the outputs do not depend on the number of partitions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from .plan import Segment
from .shards import COPY_KEY, bundle_arrays, commit_file, load_bundle, read_array, read_into, save_bundle

DECISION = "decision.json"  # a global op's committed decision: its parts and merged report (written last)
PARTITION_ROWS = 2_000_000  # records a partition holds at most (its keys in a worker's memory)


def _offsets(stats: list[dict]) -> list[int]:
    out, n = [], 0
    for st in stats:
        out.append(n)
        n += st["kept"]
    return out


def n_partitions(seg: Segment, stats: list[dict]) -> int:
    op = seg.global_op
    total = sum(st["kept"] for st in stats)
    if op is None or (op.partition_key is None and not op.staged) or total == 0:
        return 1
    return max(op.decide_workers, -(-total // PARTITION_ROWS))


def _part_of(values: np.ndarray, parts: int) -> np.ndarray:
    return (np.asarray(values).astype(np.uint64, copy=False) % np.uint64(parts)).astype(np.int64)


def gather_keys(seg_dir: Path, stats: list[dict], part: int = 0, parts: int = 1,
                key: str | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(keys, positions): the keys of every record whose `key` falls in partition `part` of
    `parts` (all records when parts is 1), in record order, each read into one preallocated
    array (read, not mapped: the peak is the keys once), and each record's position in the
    segment's numbering."""
    names = next((list(st["keys"]) for st in stats if st.get("keys")), [])
    offsets = _offsets(stats)
    have = [i for i, st in enumerate(stats) if st.get("keys")]
    specs = {i: bundle_arrays(seg_dir / f"{i:05d}.keys.bin") for i in have}
    rows: dict[int, np.ndarray | None] = {}
    for i in have:  # which rows of each shard are this partition's (None: all of them)
        if parts == 1:
            rows[i] = None
            continue
        col = read_array(seg_dir / f"{i:05d}.keys.bin", specs[i][key])
        rows[i] = np.flatnonzero(_part_of(col, parts) == part)
    count = {i: (stats[i]["kept"] if rows[i] is None else len(rows[i])) for i in have}
    positions = np.concatenate([offsets[i] + (np.arange(stats[i]["kept"]) if rows[i] is None else rows[i]) for i in have]
                               or [np.empty(0, np.int64)]).astype(np.int64)
    out: dict[str, np.ndarray] = {}
    for name in names:
        with_name = [i for i in have if stats[i]["keys"].get(name)]
        dtype, shape, _ = specs[with_name[0]][name]
        ragged = len(with_name) and shape[0] != stats[with_name[0]]["kept"]
        if parts > 1 and ragged:
            raise ValueError(f"key {name} is ragged: a partitioned decision needs one row per record")
        arr = np.empty((sum(specs[i][name][1][0] for i in with_name) if parts == 1 else sum(count[i] for i in with_name),
                        *shape[1:]), dtype=dtype)
        pos = 0
        for i in with_name:
            _, sh, offset = specs[i][name]
            if rows[i] is None:
                if sh[0]:
                    read_into(seg_dir / f"{i:05d}.keys.bin", offset, arr[pos:pos + sh[0]])
                pos += sh[0]
            else:
                arr[pos:pos + len(rows[i])] = read_array(seg_dir / f"{i:05d}.keys.bin", specs[i][name])[rows[i]]
                pos += len(rows[i])
        out[name] = arr
    return out, positions


def decide_part(seg: Segment, work: Path, stats: list[dict], part: int, parts: int, copies_by_reference: bool) -> dict:
    """Decide one partition and commit it; its report is returned (the parent merges them)."""
    keys, positions = gather_keys(work / f"seg{seg.index}", stats, part, parts, seg.global_op.partition_key)
    return commit_part(seg, work, keys, positions, part, copies_by_reference)


def commit_part(seg: Segment, work: Path, keys: dict[str, np.ndarray], positions: np.ndarray, part: int,
                copies_by_reference: bool) -> dict:
    """Decide on these records' keys (in record order) and commit the drops as part `part`, with
    which of them are copies of the record kept in their place (listed by reference when asked)."""
    fp = keys.pop(COPY_KEY, None)
    if keys and len(positions):
        dec = seg.global_op.decide(keys)
    else:
        from ..ops.base import Decision

        dec = Decision(np.empty(0, dtype=np.int64), [], [], {})
    del keys
    drop = np.asarray(dec.drop, dtype=np.int64)
    copy = np.zeros(len(drop), dtype=bool)
    if copies_by_reference and fp is not None and dec.kept_for is not None and len(drop):
        copy = (fp[drop] == fp[np.asarray(dec.kept_for, dtype=np.int64)]) & (fp[drop] != 0)
    write_part(seg, work, part, dec, positions[drop] if len(drop) else drop, copy)
    return dec.report


def write_part(seg: Segment, work: Path, part: int, dec, drop: np.ndarray, copy: np.ndarray) -> None:
    save_part(work / f"seg{seg.index}", part, dec, drop, copy)


def save_part(seg_dir: Path, part: int, dec, drop: np.ndarray, copy: np.ndarray) -> None:
    """Commit one part of a decision: its drops (positions in the segment), reasons, details, copies."""
    if isinstance(dec.reason, str):
        reasons, codes = [dec.reason], np.zeros(len(drop), dtype=np.int16)
    else:
        reasons = sorted(set(dec.reason))
        code = {r: i for i, r in enumerate(reasons)}
        codes = np.array([code[r] for r in dec.reason], dtype=np.int16)
    if isinstance(dec.detail, np.ndarray):
        details = dec.detail.astype(bytes)
    else:
        details = np.array([x.encode() for x in dec.detail], dtype=bytes) if len(dec.detail) else np.empty(0, dtype="S1")
    arrays = {"drop": np.asarray(drop, dtype=np.int64), "reason": codes, "detail": details, "copy": copy}
    save_bundle(seg_dir / f"decision.{part}.bin", arrays, {"reasons": reasons})


def commit_decision(seg: Segment, work: Path, parts: int, reports: list[dict], merged: dict | None = None) -> None:
    """The decision is whole once its parts are: name them and keep the merged report (last;
    `merged`: the report, when it is not the parts' reports added up)."""
    report = merged if merged is not None else reports[0] if parts == 1 else sum_reports(reports)
    commit_file(work / f"seg{seg.index}" / DECISION, lambda f: f.write(orjson.dumps({"parts": parts, "report": report})))


def decide_in_parent(seg: Segment, work: Path, stats: list[dict], copies_by_reference: bool) -> None:
    """One partition, from all keys, in this process."""
    keys, positions = gather_keys(work / f"seg{seg.index}", stats)
    commit_decision(seg, work, 1, [commit_part(seg, work, keys, positions, 0, copies_by_reference)])


def sum_reports(reports: list[dict]) -> dict:
    """Partitions' reports as one: numbers added, dicts merged key by key (a histogram keyed by
    numbers in their numeric order, as one decision writes it); what a partitioned op reports."""
    out: dict = {}
    for rep in reports:
        for k, v in rep.items():
            out[k] = sum_reports([out.get(k, {}), v]) if isinstance(v, dict) else out.get(k, 0) + v
    if out and all(k.isdigit() for k in out):
        out = dict(sorted(out.items(), key=lambda kv: int(kv[0])))
    return out


def decision_report(work: Path, si: int) -> dict:
    return orjson.loads((work / f"seg{si}" / DECISION).read_bytes())["report"]


def load_decision_parts(work: Path, si: int) -> list[tuple[dict[str, np.ndarray], dict]]:
    """(arrays, meta) of each committed part of segment si's decision; the arrays are mapped."""
    d = work / f"seg{si}"
    parts = orjson.loads((d / DECISION).read_bytes())["parts"]
    return [load_bundle(d / f"decision.{p}.bin") for p in range(parts)]
