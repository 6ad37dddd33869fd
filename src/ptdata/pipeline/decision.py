"""A global op's decision: all shards' keys gathered in record order, `decide` run once, and the
verdict committed (drops, reasons, details) for the next segment's workers to apply."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .plan import Segment
from .shards import COPY_KEY, bundle_arrays, load_bundle, read_into, save_bundle


def _offsets(stats: list[dict]) -> list[int]:
    out, n = [], 0
    for st in stats:
        out.append(n)
        n += st["kept"]
    return out


def _gather_keys(seg_dir: Path, n_shards: int, stats: list[dict]) -> dict[str, np.ndarray]:
    """All shards' keys in record order, each read once into one preallocated array (read, not
    mapped: the decision's peak memory is the keys once, not twice)."""
    names = next((list(st["keys"]) for st in stats if st.get("keys")), [])
    specs = {i: bundle_arrays(seg_dir / f"{i:05d}.keys.bin") for i in range(n_shards) if stats[i].get("keys")}
    out: dict[str, np.ndarray] = {}
    for name in names:
        parts = [(i, specs[i][name]) for i in range(n_shards) if stats[i].get("keys", {}).get(name)]
        dtype, shape, _ = parts[0][1]
        arr = np.empty((sum(sp[1][0] for _, sp in parts), *shape[1:]), dtype=dtype)
        pos = 0
        for i, (_, rows_shape, offset) in parts:
            rows = rows_shape[0]
            if rows:
                read_into(seg_dir / f"{i:05d}.keys.bin", offset, arr[pos:pos + rows])
            pos += rows
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
