"""Dedup decided in stages on the run's workers (a process pool, or Ray actors on a cluster), so
that no process holds every record's keys and the parent holds only counts and the report.
Near dedup (MinHash) in three stages and a final job:

A. copies: records partitioned by whole-signature hash; the first record of each signature is
   its representative, the others are copies (J = 1).
B. buckets: (band, band hash) entries of the representatives partitioned by hash; in each
   bucket every member is paired with the bucket's first; the pair codes go to Q files by code.
C. verification: each of the Q pair partitions deduplicated, estimated from the signatures and
   checked by exact Jaccard of the shingle sets, reading only the records it needs.
D. final: one job reads only the edges (copies and verified pairs: O(duplicates)) and the
   scores and ids of their records, finds the clusters and keepers, and commits the drops (as
   datatrove's cluster step, one task over all edges).
Semantic dedup in one stage and a final job: the exact pair search's blocks (rows against each
later block of rows, `SemanticDedup.pairs`' grid) dealt round-robin to the jobs, each reading
only the embeddings of the two blocks it compares; then the same final step on its edges.
Stages hand over through files in the segment's work directory (shared storage on a cluster).
The edges, clusters, keepers and details are those of the op's `decide` on all keys (tested)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..ops.base import Decision
from .shards import COPY_KEY, bundle_arrays, load_bundle, read_array, save_bundle

BAND_ENTRIES = 2_000_000  # (band, hash) entries a bucket job holds at most (about 50 MB of them)


class KeyStore:
    """A segment's keys by record position, through the shards' mapped bundles: a process reads
    only the rows (and the pages) it asks for."""

    def __init__(self, seg_dir: Path, stats: list[dict]) -> None:
        self.seg_dir = seg_dir
        kept = np.array([st["kept"] for st in stats], dtype=np.int64)
        self.ends = np.cumsum(kept)
        self.offsets = self.ends - kept
        self.total = int(self.ends[-1]) if len(kept) else 0
        self.has_keys = [bool(st.get("keys")) for st in stats]
        self._bundles: dict[int, dict[str, np.ndarray]] = {}
        self._starts: dict[int, np.ndarray] = {}

    def shards(self) -> list[int]:
        return [i for i, h in enumerate(self.has_keys) if h]

    def bundle(self, i: int) -> dict[str, np.ndarray]:
        if i not in self._bundles:
            self._bundles[i] = load_bundle(self.seg_dir / f"{i:05d}.keys.bin")[0]
        return self._bundles[i]

    def release(self) -> None:
        """Unmap the pages this process touched (they stay in the page cache, to be mapped again
        on the next access): a job's resident size stays that of one chunk of its work."""
        import mmap

        seen = set()
        for arrays in self._bundles.values():
            for a in arrays.values():
                b = a
                while isinstance(getattr(b, "base", None), np.ndarray):
                    b = b.base
                mm = getattr(getattr(b, "base", None), "obj", None)
                if isinstance(mm, mmap.mmap) and id(mm) not in seen and hasattr(mm, "madvise"):
                    seen.add(id(mm))
                    mm.madvise(mmap.MADV_DONTNEED)

    def column(self, i: int, name: str) -> np.ndarray:
        """Shard i's whole column, read (not mapped)."""
        path = self.seg_dir / f"{i:05d}.keys.bin"
        return read_array(path, bundle_arrays(path)[name])

    def _by_shard(self, positions: np.ndarray):
        shard = np.searchsorted(self.ends, positions, side="right")
        for i in np.unique(shard).tolist():
            at = np.flatnonzero(shard == i)
            yield i, at, positions[at] - self.offsets[i]

    def rows(self, name: str, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        out = None
        for i, at, local in self._by_shard(positions):
            arr = self.bundle(i)[name]
            if out is None:
                out = np.empty((len(positions), *arr.shape[1:]), dtype=arr.dtype)
            out[at] = arr[local]
        return out if out is not None else np.empty(0)

    def sets(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flat shingle hashes, counts) of these records, in the order given."""
        from ..ops.dedup import _gather

        positions = np.asarray(positions, dtype=np.int64)
        n = np.zeros(len(positions), dtype=np.int64)
        starts = np.zeros(len(positions), dtype=np.int64)
        shard_of = np.zeros(len(positions), dtype=np.int64)
        for i, at, local in self._by_shard(positions):
            if i not in self._starts:
                sh_n = self.bundle(i)["sh_n"]
                self._starts[i] = np.cumsum(sh_n) - sh_n
            n[at] = self.bundle(i)["sh_n"][local]
            starts[at] = self._starts[i][local]
            shard_of[at] = i
        flat = np.empty(int(n.sum()), dtype=np.uint32)
        ends = np.cumsum(n)
        for i in np.unique(shard_of).tolist():
            at = np.flatnonzero(shard_of == i)
            vals, owner = _gather(self.bundle(i)["sh"], starts[at], n[at])
            pos = np.repeat(ends[at] - n[at], n[at]) + (np.arange(len(vals)) - np.repeat(np.cumsum(n[at]) - n[at], n[at]))
            flat[pos] = vals
        return flat, n


# ---- stage jobs (module-level: they run in pool workers and Ray actors) ----------------------

def copies_part(seg_dir: str, stats: list[dict], part: int, parts: int) -> int:
    """Stage A: the copy positions and their representatives for the signatures of this
    partition, to near.A{part}.bin; returns how many."""
    pos, rep = _copies(KeyStore(Path(seg_dir), stats), part, parts)
    save_bundle(Path(seg_dir) / f"near.A{part}.bin", {"pos": pos, "rep": rep})
    return len(pos)


def _load_copies(seg_dir: Path, parts: int) -> tuple[np.ndarray, np.ndarray]:
    """Stage A's (copy positions, representatives) of every partition, sorted by position."""
    got = [load_bundle(seg_dir / f"near.A{p}.bin")[0] for p in range(parts)]
    pos = np.concatenate([g["pos"] for g in got]) if got else np.empty(0, np.int64)
    rep = np.concatenate([g["rep"] for g in got]) if got else np.empty(0, np.int64)
    order = np.argsort(pos)
    return pos[order], rep[order]


def _copies(ks: KeyStore, part: int, parts: int) -> tuple[np.ndarray, np.ndarray]:
    wh, pos = [], []
    for i in ks.shards():
        w = ks.column(i, "whole")
        sel = np.flatnonzero(w % np.uint64(parts) == np.uint64(part))
        wh.append(w[sel])
        pos.append(ks.offsets[i] + sel)
    if not wh:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    w, p = np.concatenate(wh), np.concatenate(pos).astype(np.int64)
    order = np.lexsort((p, w))
    w, p = w[order], p[order]
    first = np.ones(len(w), dtype=bool)
    first[1:] = w[1:] != w[:-1]
    rep = p[first][np.cumsum(first) - 1]
    copy = ~first
    return p[copy], rep[copy]


def buckets_part(seg_dir: str, stats: list[dict], part: int, parts: int, a_parts: int, out_parts: int) -> int:
    """Stage B: candidate pair codes of the band buckets whose hash falls in this partition,
    among representatives, written to one bundle sorted by destination partition."""
    ks = KeyStore(Path(seg_dir), stats)
    copies = _load_copies(ks.seg_dir, a_parts)[0]
    n = np.int64(ks.total)
    bands, keys, poss = [], [], []
    for i in ks.shards():
        band = ks.column(i, "band")
        pos = ks.offsets[i] + np.arange(len(band), dtype=np.int64)
        lo, hi = np.searchsorted(copies, [ks.offsets[i], ks.ends[i]])
        rep = np.ones(len(band), dtype=bool)
        rep[copies[lo:hi] - ks.offsets[i]] = False
        r, b = np.nonzero((band % np.uint64(parts) == np.uint64(part)) & rep[:, None])
        bands.append(b.astype(np.int16))
        keys.append(band[r, b])
        poss.append(pos[r])
    codes = np.empty(0, np.int64)
    if keys:
        bb, k, p = np.concatenate(bands), np.concatenate(keys), np.concatenate(poss)
        order = np.lexsort((p, k, bb))  # by band, then bucket, then position
        bb, k, p = bb[order], k[order], p[order]
        same = np.zeros(len(k), dtype=bool)
        same[1:] = (k[1:] == k[:-1]) & (bb[1:] == bb[:-1])
        if same.any():
            idx = np.arange(len(k), dtype=np.int64)
            run_start = np.maximum.accumulate(np.where(~same, idx, 0))
            m = np.nonzero(same)[0]
            codes = np.unique(p[run_start[m]] * n + p[m])  # the first member has the smallest position
    dest = codes % out_parts
    order = np.argsort(dest, kind="stable")
    codes = codes[order]
    bounds = np.searchsorted(dest[order], np.arange(out_parts + 1))
    save_bundle(ks.seg_dir / f"near.B{part}.bin", {"codes": codes, "bounds": bounds.astype(np.int64)})
    return len(codes)


def verify_part(seg_dir: str, stats: list[dict], part: int, in_parts: int, threshold: float, slack: float,
                exact: bool) -> int:
    """Stage C: the verified near-duplicate pairs of this partition (codes, similarity), to
    near.C{part}.bin; returns how many."""
    codes, sims = _verified(KeyStore(Path(seg_dir), stats), part, in_parts, threshold, slack, exact)
    save_bundle(Path(seg_dir) / f"near.C{part}.bin", {"codes": codes, "sims": sims})
    return len(codes)


def _verified(ks: KeyStore, part: int, in_parts: int, threshold: float, slack: float, exact: bool,
              chunk: int = 5_000) -> tuple[np.ndarray, np.ndarray]:
    from ..ops.dedup import exact_jaccard

    n = np.int64(ks.total)
    got = []
    for b in range(in_parts):
        arr = load_bundle(ks.seg_dir / f"near.B{b}.bin")[0]
        lo, hi = arr["bounds"][part], arr["bounds"][part + 1]
        got.append(np.array(arr["codes"][lo:hi]))
    codes = np.unique(np.concatenate(got)) if got else np.empty(0, np.int64)
    out_c, out_s = [], []
    for s in range(0, len(codes), chunk):
        c = codes[s:s + chunk]
        a, b = c // n, c % n
        nodes, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
        sig = ks.rows("sig", nodes)
        la, lb = inv[:len(a)], inv[len(a):]
        est = (sig[la] == sig[lb]).mean(axis=1).astype(np.float32)
        if not exact:
            ok = est >= threshold
            out_c.append(c[ok])
            out_s.append(est[ok])
            continue
        pre = est >= threshold - slack
        c, la, lb = c[pre], la[pre], lb[pre]
        flat, cnt = ks.sets(nodes)
        sim = exact_jaccard(flat, cnt, np.stack([la, lb], axis=1)) if len(c) else np.empty(0, np.float32)
        ok = sim >= threshold
        out_c.append(c[ok])
        out_s.append(sim[ok])
        ks.release()
    if not out_c:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(out_c), np.concatenate(out_s)


# ---- the parent -------------------------------------------------------------------------------

def near_dedup_staged(op, seg_dir: Path, stats: list[dict], parts: int, run_jobs: Callable[[str, list[tuple]], list],
                      copies_by_reference: bool) -> dict:
    """Run the three stages and the final job (`near_final`) by `run_jobs(stage, jobs)`; the
    parent holds only counts and the report."""
    d = str(seg_dir)
    run_jobs("copies", [(d, stats, p, parts) for p in range(parts)])
    # buckets and pairs in partitions of at most BAND_ENTRIES (band, hash) entries each
    total = int(sum(st["kept"] for st in stats))
    bparts = max(parts, -(-total * op.bands // BAND_ENTRIES))
    run_jobs("buckets", [(d, stats, p, bparts, parts, bparts) for p in range(bparts)])
    run_jobs("verify", [(d, stats, q, bparts, op.threshold, op.slack, op.verify == "exact") for q in range(bparts)])
    [report] = run_jobs("near_final", [(d, stats, parts, bparts, op.keep, copies_by_reference)])
    return {"parts": 1, "report": report}


def near_final(seg_dir: str, stats: list[dict], a_parts: int, c_parts: int, keep: str, copies_by_reference: bool) -> dict:
    """The last job: the edges (copies and verified pairs, O(duplicates)) and the scores and
    ids of their records only; clusters, keepers and details, committed as the decision's one
    part. Returns the report."""
    from ..ops.dedup import _dup_report, similarity_details

    ks = KeyStore(Path(seg_dir), stats)
    n = ks.total
    copy_pos, copy_rep = _load_copies(ks.seg_dir, a_parts)
    got = [load_bundle(ks.seg_dir / f"near.C{q}.bin")[0] for q in range(c_parts)]
    codes = np.concatenate([g["codes"] for g in got]) if got else np.empty(0, np.int64)
    sims = np.concatenate([g["sims"] for g in got]) if got else np.empty(0, np.float32)
    order = np.argsort(codes)
    codes, sims = codes[order], sims[order]
    edges = np.concatenate([np.stack([copy_rep, copy_pos], axis=1), np.stack([codes // n, codes % n], axis=1)])
    nodes, drop, kept_for, sizes = clustered(ks, edges, keep)
    a, b = drop.copy(), kept_for.copy()  # each one's representative: itself unless it is a copy
    if len(copy_pos):
        for arr in (a, b):
            at = np.minimum(np.searchsorted(copy_pos, arr), len(copy_pos) - 1)
            hit = copy_pos[at] == arr
            arr[hit] = copy_rep[at[hit]]
    detail = similarity_details(a, b, codes, sims, n, keeper_ids(ks, kept_for))
    report = {"pairs": len(copy_pos) + len(codes), **_dup_report(sizes, "clusters", "cluster_sizes")}
    _commit(ks, Decision(drop, "near_duplicate", detail, report, kept_for), copies_by_reference)
    for f in [*(ks.seg_dir / f"near.A{p}.bin" for p in range(a_parts)),
              *(ks.seg_dir / f"near.{x}{q}.bin" for q in range(c_parts) for x in "BC")]:
        f.unlink(missing_ok=True)
    return report


def _commit(ks: KeyStore, dec: Decision, copies_by_reference: bool) -> None:
    from .decision import save_part

    copy = copy_flags(ks, dec.drop, dec.kept_for) if copies_by_reference else np.zeros(len(dec.drop), dtype=bool)
    save_part(ks.seg_dir, 0, dec, dec.drop, copy)


def semantic_dedup_staged(op, seg_dir: Path, stats: list[dict], parts: int, run_jobs: Callable[[str, list[tuple]], list],
                          copies_by_reference: bool) -> dict:
    """The pair search in `parts` jobs, then the final job (`semantic_final`); as `near_dedup_staged`."""
    d = str(seg_dir)
    run_jobs("close", [(d, stats, p, parts, op.threshold) for p in range(parts)])
    [report] = run_jobs("semantic_final", [(d, stats, parts, op.keep, copies_by_reference)])
    return {"parts": 1, "report": report}


def semantic_final(seg_dir: str, stats: list[dict], parts: int, keep: str, copies_by_reference: bool) -> dict:
    from ..ops.dedup import _dup_report

    ks = KeyStore(Path(seg_dir), stats)
    files = [ks.seg_dir / f"semantic.C{p}.bin" for p in range(parts)]
    edges = np.concatenate([load_bundle(f)[0]["pairs"] for f in files]) if files else np.empty((0, 2), np.int64)
    edges = edges[np.lexsort((edges[:, 1], edges[:, 0]))] if len(edges) else edges.reshape(0, 2)
    nodes, drop, kept_for, sizes = clustered(ks, edges, keep)
    detail = ["semantically close to " + h for h in keeper_ids(ks, kept_for)]
    report = {"pairs": len(edges), **_dup_report(sizes, "clusters", "cluster_sizes")}
    _commit(ks, Decision(drop, "semantic_duplicate", detail, report, kept_for), copies_by_reference)
    for f in files:
        f.unlink(missing_ok=True)
    return report


def clustered(ks: KeyStore, edges: np.ndarray, keep: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(records on an edge, the drops, the record kept for each, cluster sizes): connected
    components of the edges, the best-scored (keep=best), then earliest, record of each kept;
    only the scores of records on an edge are read."""
    from ..ops.dedup import components, keepers

    nodes, inv = np.unique(edges.ravel(), return_inverse=True)
    groups = components(len(nodes), inv.reshape(-1, 2))
    scores = ks.rows("score", nodes) if keep == "best" and len(nodes) else np.full(len(nodes), np.nan)
    keeper = keepers(groups, scores)
    is_drop = keeper != np.arange(len(nodes))
    sizes = np.bincount(groups) if len(nodes) else np.empty(0, np.int64)
    return nodes, nodes[is_drop], nodes[keeper[is_drop]], sizes


def keeper_ids(ks: KeyStore, kept_for: np.ndarray) -> list[str]:
    from ..ops.dedup import ids_hex

    if not len(kept_for):
        return []
    return ids_hex({"id_hi": ks.rows("id_hi", kept_for), "id_lo": ks.rows("id_lo", kept_for)}, np.arange(len(kept_for)))


def copy_flags(ks: KeyStore, drop: np.ndarray, kept_for: np.ndarray) -> np.ndarray:
    """Which drops are byte copies of their keeper (all but meta.source), by their fingerprints."""
    copy = np.zeros(len(drop), dtype=bool)
    if len(drop) and ks.shards() and COPY_KEY in ks.bundle(ks.shards()[0]):
        fd, fk = ks.rows(COPY_KEY, drop), ks.rows(COPY_KEY, kept_for)
        copy = (fd == fk) & (fd != 0)
    return copy


def close_part(seg_dir: str, stats: list[dict], part: int, parts: int, threshold: float, block: int = 2048) -> int:
    """Semantic stage: the (i, j) pairs of the row blocks part, part + parts, ... against each
    later block, with cosine >= threshold, to semantic.C{part}.bin; returns how many."""
    from ..ops.dedup import close_pairs

    ks = KeyStore(Path(seg_dir), stats)
    n, out = ks.total, []
    for r in range(part * block, n, parts * block):
        rows = ks.rows("emb", np.arange(r, min(r + block, n)))
        for c in range(r, n, block):
            i, j, _ = close_pairs(rows, ks.rows("emb", np.arange(c, min(c + block, n))), r, c, threshold)
            out.append(np.stack([i, j], axis=1))
        ks.release()
    pairs = np.concatenate(out) if out else np.empty((0, 2), np.int64)
    save_bundle(ks.seg_dir / f"semantic.C{part}.bin", {"pairs": pairs})
    return len(pairs)


def _select_staged(*args):
    from .staged_select import select_staged

    return select_staged(*args)


def _select_job(stage: str):
    def job(*args):
        from . import staged_select

        return getattr(staged_select, stage)(*args)
    return job


STAGES = {"copies": copies_part, "buckets": buckets_part, "verify": verify_part, "near_final": near_final,
          "close": close_part, "semantic_final": semantic_final,
          "top": _select_job("top_part"), "select_baseline": _select_job("baseline_part"),
          "select_drops": _select_job("drops_part")}
# op name -> its staged decision: (op, segment dir, stats, partitions, run_jobs, copies_by_reference)
# -> {"parts", "report"}; its jobs commit the parts
STAGED = {"near_dedup": near_dedup_staged, "semantic_dedup": semantic_dedup_staged, "select": _select_staged}
