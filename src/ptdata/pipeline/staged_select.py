"""`select` by score decided in two phases on the run's workers (a process pool, or Ray actors on
a cluster), so that no process holds every record's signatures:

1. top: each partition (a share of the shards) sends its best `m` records in the ranking's
   order (score, highest first, then position) with their signatures, and its `target` longest
   responses (the longest baseline).
2. The parent merges the candidates into the global order and runs the diversity greedy. The
   candidates are exactly the global order down to the worst record sent by a partition that
   holds more (the frontier); a greedy that reaches the frontier short of `target` records asks
   again with twice `m`.
3. select_drops: each partition commits its own part of the decision, the records it holds that
   were not kept, with their reasons and details.
The random baseline (a permutation of all positions) and the score-length rank correlation need
every record's score and length, 16 bytes a record: one job computes them. The parent holds the
candidates the greedy examines (the selected, and those it skips as too similar, both in the
report), and twice as many at most when it had to ask again. Kept set, drops, details and report are those of `Select.decide` on all
keys (tested)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..selection import methods as M
from .decision import save_part
from .shards import load_bundle, save_bundle
from .staged import KeyStore


def _columns(ks: KeyStore, shards: list[int], names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    """(positions, *columns) of these shards' records, in position order."""
    pos = [ks.offsets[i] + np.arange(ks.ends[i] - ks.offsets[i], dtype=np.int64) for i in shards]
    cols = [[ks.column(i, name) for i in shards] for name in names]
    return tuple(np.concatenate(c) if c else np.empty(0) for c in [pos, *cols])


def top_part(seg_dir: str, stats: list[dict], shards: list[int], m: int, target: int) -> dict:
    """Phase 1: this partition's m best records by score and its `target` longest responses."""
    ks = KeyStore(Path(seg_dir), stats)
    pos, score, length = _columns(ks, shards, ("score", "length"))
    best = M.by_score(score, m)  # ties by index: position order
    long = M.longest(length, target)
    return {"count": len(pos), "pos": pos[best], "score": score[best], "length": length[best], "sig": ks.rows("sig", pos[best]),
            "long_pos": pos[long], "long_length": length[long], "long_score": score[long]}


def baseline_part(seg_dir: str, stats: list[dict], target: int, seed: int) -> tuple:
    """The random baseline's positions with their scores and lengths, and Spearman(score, length)."""
    ks = KeyStore(Path(seg_dir), stats)
    _, score, length = _columns(ks, ks.shards(), ("score", "length"))
    rnd = M.random_pick(len(score), target, seed)
    return rnd, score[rnd], length[rnd], M.spearman(score, length)


def drops_part(seg_dir: str, stats: list[dict], shards: list[int], part: int, selection: str, score_name: str) -> int:
    """Phase 3: commit part `part` of the decision: these shards' records that were not kept."""
    from ..ops.base import Decision
    from ..ops.select import drop_details

    ks = KeyStore(Path(seg_dir), stats)
    sel, meta = load_bundle(Path(selection))
    pos, score = _columns(ks, shards, ("score",))
    kept = np.asarray(sel["kept"])
    at = np.minimum(np.searchsorted(kept, pos), max(len(kept) - 1, 0))
    is_kept = kept[at] == pos if len(kept) else np.zeros(len(pos), dtype=bool)
    drop, drop_score = pos[~is_kept], score[~is_kept]
    close = np.asarray(sel["close_pos"])
    at = np.minimum(np.searchsorted(close, drop), max(len(close) - 1, 0))
    hit = np.flatnonzero(close[at] == drop) if len(close) else np.empty(0, np.int64)
    too_close = {int(drop[k]): (sel["close_id"][at[k]].decode(), float(sel["close_sim"][at[k]])) for k in hit.tolist()}
    reasons, details = drop_details("score", score_name, drop, drop_score, too_close, float(sel["cutoff"][0]), meta["target"])
    save_part(Path(seg_dir), part, Decision(drop, reasons, details, {}), drop, np.zeros(len(drop), dtype=bool))
    return len(drop)


def _merge_top(res: list[dict]) -> tuple[dict[str, np.ndarray], int]:
    """The partitions' candidates in the global order, and how many of them lead it for sure:
    down to the frontier, the earliest-ranked last candidate of a partition that holds more."""
    cat = {k: np.concatenate([r[k] for r in res]) for k in ("pos", "score", "length", "sig")}
    s = np.where(np.isnan(cat["score"]), -np.inf, cat["score"])
    order = np.lexsort((cat["pos"], -s))
    cand = {k: v[order] for k, v in cat.items()}
    lasts = [r["pos"][-1] for r in res if r["count"] > len(r["pos"])]
    limit = int(np.flatnonzero(np.isin(cand["pos"], lasts)).min()) + 1 if lasts else len(order)
    return cand, limit


def select_staged(op, seg_dir: Path, stats: list[dict], parts: int, run_jobs: Callable[[str, list[tuple]], list],
                  copies_by_reference: bool = True) -> dict:
    """Decide `op` (a Select by score) in the phases above; returns {"parts", "report"}."""
    from ..ops.dedup import ids_hex
    from ..ops.select import diverse_greedy

    ks = KeyStore(seg_dir, stats)
    n = ks.total
    target = op.target_size(n)
    groups = [g for g in (ks.shards()[p::parts] for p in range(parts)) if g]
    [(rnd, rnd_score, rnd_length, rho)] = run_jobs("select_baseline", [(str(seg_dir), stats, target, op.seed)])
    m = max(1, -(-2 * target // len(groups)))
    while True:
        res = run_jobs("top", [(str(seg_dir), stats, g, m, target) for g in groups])
        cand, limit = _merge_top(res)
        kept, close = diverse_greedy(cand["sig"], np.arange(len(cand["pos"])), target, op.diversity_threshold,
                                     op.bands, limit)
        if len(kept) >= target or limit == len(cand["pos"]) == sum(r["count"] for r in res):
            break
        m *= 2  # the greedy reached the frontier short of target: more candidates from every partition
    kept_pos = cand["pos"][kept]
    cutoff = float(cand["score"][kept[-1]]) if kept else float("nan")
    long = {k: np.concatenate([r[f"long_{k}"] for r in res]) for k in ("pos", "length", "score")}
    lo = np.lexsort((long["pos"], -long["length"]))[:target]
    picks = {"score": (kept_pos, cand["score"][kept], cand["length"][kept]), "random": (rnd, rnd_score, rnd_length),
             "longest": (long["pos"][lo], long["score"][lo], long["length"][lo])}
    report = {"method": "score", "selected": len(kept), "too_similar": len(close), "cutoff": cutoff, **op.baselines(picks, rho)}
    # the selection, for the partitions to commit their drops from
    close_rows = np.array(sorted(close, key=lambda i: cand["pos"][i]), dtype=np.int64)
    close_pos = cand["pos"][close_rows] if len(close_rows) else np.empty(0, np.int64)
    keepers = cand["pos"][[close[i][0] for i in close_rows.tolist()]] if len(close_rows) else np.empty(0, np.int64)
    ids = ids_hex({"id_hi": ks.rows("id_hi", keepers), "id_lo": ks.rows("id_lo", keepers)}, np.arange(len(keepers))) \
        if len(keepers) else []
    selection = seg_dir / "select.selection.bin"
    save_bundle(selection, {"kept": np.sort(kept_pos), "close_pos": close_pos,
                            "close_sim": np.array([close[i][1] for i in close_rows.tolist()], dtype=np.float64),
                            "close_id": np.array([h.encode() for h in ids], dtype="S32"),
                            "cutoff": np.array([cutoff], dtype=np.float64)},  # an array: JSON has no NaN
                {"target": target})
    run_jobs("select_drops", [(str(seg_dir), stats, g, p, str(selection), op.score) for p, g in enumerate(groups)])
    selection.unlink()
    return {"parts": len(groups), "report": report}
