"""Selection methods over a pool: plain functions from arrays to the chosen positions, in order.

Score and length rankings, seeded random (the baselines every selector must beat: Zhao et al.
ICML 2024 found the 1,000 longest responses beat LIMA and AlpaGasus), and three methods on
sentence embeddings (unit-length rows): k-center greedy (coverage: each pick is the record
farthest from those picked), facility location (representativeness: each pick adds the most to
the sum over the pool of every record's similarity to its nearest pick, on a k-nearest-neighbour
graph, lazy greedy), and nearest to a target set (RDS+: the records closest to a user's own
example prompts, taken round-robin over the targets so one target cannot take every slot).
Every tie breaks on position, so a selection is reproducible.
"""
from __future__ import annotations

import heapq

import numpy as np


def by_score(scores: np.ndarray, k: int) -> np.ndarray:
    """The k highest scores (a missing score, NaN, ranks last), ties by position."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    return np.lexsort((np.arange(len(s)), -s))[:k]


def longest(lengths: np.ndarray, k: int) -> np.ndarray:
    """The k longest responses, ties by position."""
    return np.lexsort((np.arange(len(lengths)), -np.asarray(lengths)))[:k]


def random_pick(n: int, k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n)[:k]


def _blocks(n: int, rows: int):
    for s in range(0, n, rows):
        yield s, min(n, s + rows)


def kcenter_greedy(emb: np.ndarray, k: int, first: int = 0) -> np.ndarray:
    """Farthest-first traversal (Gonzalez; Sener & Savarese's core-set): start at `first`, then
    repeatedly pick the record whose cosine distance to its nearest pick is largest."""
    n = len(emb)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    picked = [first]
    dist = 1.0 - emb @ emb[first]
    dist[first] = -np.inf
    for _ in range(k - 1):
        j = int(np.argmax(dist))
        picked.append(j)
        np.minimum(dist, 1.0 - emb @ emb[j], out=dist)
        dist[j] = -np.inf
    return np.asarray(picked, dtype=np.int64)


def knn_graph(emb: np.ndarray, neighbours: int = 16, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(indices, similarities), both (n, neighbours): each record's nearest others by cosine, exact,
    in blocks of rows so memory stays at block x n."""
    n = len(emb)
    m = min(neighbours, max(n - 1, 0))
    idx = np.zeros((n, m), dtype=np.int64)
    sim = np.zeros((n, m), dtype=np.float32)
    if m == 0:
        return idx, sim
    for s, e in _blocks(n, block):
        part = emb[s:e] @ emb.T
        part[np.arange(e - s), np.arange(s, e)] = -np.inf  # not its own neighbour
        top = np.argpartition(-part, m - 1, axis=1)[:, :m]
        vals = np.take_along_axis(part, top, axis=1)
        order = np.lexsort((top, -vals), axis=1)
        idx[s:e] = np.take_along_axis(top, order, axis=1)
        sim[s:e] = np.take_along_axis(vals, order, axis=1)
    return idx, sim


def facility_location(emb: np.ndarray, k: int, neighbours: int = 16) -> np.ndarray:
    """Lazy greedy facility location on the kNN graph: maximize sum_i max(0, max_{j in S} sim(i, j)),
    each record covering itself with similarity 1. Gains only shrink as picks are added
    (submodularity), so a stale gain that still tops the heap is the true best."""
    n = len(emb)
    k = min(k, n)
    idx, sim = knn_graph(emb, neighbours)
    # who each candidate covers: itself (similarity 1) and every record that has it as a neighbour
    rows = np.concatenate([np.arange(n), np.repeat(np.arange(n), idx.shape[1])])
    cols = np.concatenate([np.arange(n), idx.ravel()])
    vals = np.concatenate([np.ones(n, np.float32), np.maximum(sim.ravel(), 0)])
    order = np.argsort(cols, kind="stable")
    rows, vals = rows[order], vals[order]
    start = np.searchsorted(cols[order], np.arange(n + 1))
    cover = np.zeros(n, dtype=np.float32)

    def gain(c: int) -> float:
        r, v = rows[start[c]:start[c + 1]], vals[start[c]:start[c + 1]]
        return float(np.maximum(v - cover[r], 0).sum())

    heap = [(-gain(c), c) for c in range(n)]
    heapq.heapify(heap)
    picked: list[int] = []
    chosen = np.zeros(n, dtype=bool)
    while heap and len(picked) < k:
        neg, c = heapq.heappop(heap)
        if chosen[c]:
            continue
        g = gain(c)
        if heap and g < -heap[0][0] - 1e-9 and g < -neg - 1e-9:
            heapq.heappush(heap, (-g, c))
            continue
        picked.append(c)
        chosen[c] = True
        r, v = rows[start[c]:start[c + 1]], vals[start[c]:start[c + 1]]
        np.maximum.at(cover, r, v)
    return np.asarray(picked, dtype=np.int64)


def nearest_to_targets(emb: np.ndarray, targets: np.ndarray, k: int, block: int = 4096) -> np.ndarray:
    """RDS+-style: rank the pool by cosine to each target; take the targets' best records in turn
    (round-robin), skipping records already taken, until k are chosen."""
    n, t = len(emb), len(targets)
    k = min(k, n)
    if k <= 0 or t == 0:
        return np.zeros(0, dtype=np.int64)
    per = min(n, -(-k // t) + k)  # enough of each target's ranking for the round-robin to fill k
    ranks = np.zeros((t, per), dtype=np.int64)
    for s, e in _blocks(t, block):
        sims = targets[s:e] @ emb.T
        top = np.argpartition(-sims, per - 1, axis=1)[:, :per] if per < n else np.tile(np.arange(n), (e - s, 1))
        vals = np.take_along_axis(sims, top, axis=1)
        order = np.lexsort((top, -vals), axis=1)
        ranks[s:e] = np.take_along_axis(top, order, axis=1)
    taken = np.zeros(n, dtype=bool)
    out: list[int] = []
    pos = np.zeros(t, dtype=np.int64)
    while len(out) < k:
        progressed = False
        for j in range(t):
            while pos[j] < per and taken[ranks[j, pos[j]]]:
                pos[j] += 1
            if pos[j] < per:
                c = int(ranks[j, pos[j]])
                taken[c] = True
                out.append(c)
                progressed = True
                if len(out) == k:
                    break
        if not progressed:
            break
    return np.asarray(out, dtype=np.int64)


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation (average ranks for ties), on the pairs where both are present."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = ~(np.isnan(a) | np.isnan(b))
    if ok.sum() < 3:
        return None
    ra, rb = _ranks(a[ok]), _ranks(b[ok])
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    ranks = np.empty(len(x), dtype=float)
    ranks[np.argsort(x, kind="stable")] = np.arange(1, len(x) + 1)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    return np.bincount(inv, weights=ranks)[inv] / counts[inv]
