"""Deduplication: exact (normalized text), near (MinHash LSH), semantic (embeddings).

All three are global ops: a parallel `keys` phase turns each record into compact arrays
(a 64-bit hash, a MinHash signature, an embedding), and one `decide` phase finds the
duplicates. Within a group the record with the best score is kept (ties: the earliest).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import xxhash

from ..records import Record
from ..text import normalize_for_match, record_text, shingles
from .base import Drop, GlobalOp, param, register


def _id_keys(batch: list[Record]) -> dict[str, np.ndarray]:
    ids = [r.id for r in batch]
    return {"id_hi": np.array([int(i[:16], 16) for i in ids], dtype=np.uint64),
            "id_lo": np.array([int(i[16:], 16) for i in ids], dtype=np.uint64)}


def _id_at(keys: dict[str, np.ndarray], i: int) -> str:
    return f"{int(keys['id_hi'][i]):016x}{int(keys['id_lo'][i]):016x}"


def _score_keys(batch: list[Record], score: str) -> np.ndarray:
    return np.array([float(r.scores.get(score, np.nan)) for r in batch], dtype=np.float64)


def keepers(groups: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """For each record, the index of its group's keeper: best score (NaN lowest), then earliest."""
    n = len(groups)
    s = np.where(np.isnan(scores), -np.inf, scores)
    order = np.lexsort((np.arange(n), -s, groups))  # by group, best score first, then position
    g_sorted = groups[order]
    first = np.ones(n, dtype=bool)
    first[1:] = g_sorted[1:] != g_sorted[:-1]
    keeper_of_group = {}
    heads = order[first]
    keeper = np.empty(n, dtype=np.int64)
    # map each group to its head (vectorized via the sorted run starts)
    run_id = np.cumsum(first) - 1
    keeper[order] = heads[run_id]
    del keeper_of_group
    return keeper


@register
@dataclass
class ExactDedup(GlobalOp):
    """Drop records whose normalized text (lowercase, punctuation and spacing ignored) was seen."""

    name: ClassVar[str] = "exact_dedup"
    field: str = param("all", "text to compare: all, prompt or response")
    keep: str = param("best", "best (highest `score`, then earliest) or first")
    score: str = param("quality", "score used by keep=best")

    def keys(self, batch: list[Record]) -> dict[str, np.ndarray]:
        h = np.array([xxhash.xxh3_64_intdigest(normalize_for_match(record_text(r, self.field)).encode()) for r in batch], dtype=np.uint64)
        return {"hash": h, "score": _score_keys(batch, self.score), **_id_keys(batch)}

    def decide(self, keys: dict[str, np.ndarray]):
        _, groups = np.unique(keys["hash"], return_inverse=True)
        scores = keys["score"] if self.keep == "best" else np.full(len(groups), np.nan)
        keeper = keepers(groups.astype(np.int64), scores)
        drop = np.nonzero(keeper != np.arange(len(keeper)))[0]
        drops = [Drop("exact_duplicate", f"same text as {_id_at(keys, keeper[i])}") for i in drop]
        sizes = np.bincount(groups)
        return drop, drops, {"groups_with_duplicates": int((sizes > 1).sum()), "duplicates": int(len(drop)),
                             "group_sizes": _size_hist(sizes)}


def _size_hist(sizes: np.ndarray) -> dict[str, int]:
    vals, counts = np.unique(sizes[sizes > 1], return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(vals, counts)}


def _band_hashes(sig: np.ndarray, bands: int) -> np.ndarray:
    """(n, bands) uint64: one hash per band of rows (polynomial, wrapping arithmetic)."""
    n, p = sig.shape
    rows = p // bands
    x = sig[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    h = np.zeros((n, bands), dtype=np.uint64)
    mult = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        for r in range(rows):
            h = (h * mult) ^ x[:, :, r]
        h ^= np.arange(bands, dtype=np.uint64) * np.uint64(0xD6E8FEB86659FD93)
    return h


def candidate_pairs(band_keys: np.ndarray) -> np.ndarray:
    """Unique (i, j), i < j, of records sharing a band bucket: each bucket member paired with its first."""
    n, bands = band_keys.shape
    out = []
    idx = np.arange(n, dtype=np.int64)
    for b in range(bands):
        k = band_keys[:, b]
        order = np.argsort(k, kind="stable")
        ks = k[order]
        same = np.zeros(n, dtype=bool)
        same[1:] = ks[1:] == ks[:-1]
        if not same.any():
            continue
        run_start = np.maximum.accumulate(np.where(~same, idx, 0))
        members = np.nonzero(same)[0]
        a, c = order[run_start[members]], order[members]
        out.append(np.minimum(a, c) * n + np.maximum(a, c))  # one int64 per pair: cheap to deduplicate
    if not out:
        return np.empty((0, 2), dtype=np.int64)
    codes = np.unique(np.concatenate(out))
    return np.stack([codes // n, codes % n], axis=1)


def estimated_jaccard(sig: np.ndarray, pairs: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    out = np.empty(len(pairs), dtype=np.float32)
    for s in range(0, len(pairs), chunk):
        p = pairs[s:s + chunk]
        out[s:s + chunk] = (sig[p[:, 0]] == sig[p[:, 1]]).mean(axis=1)
    return out


def components(n: int, edges: np.ndarray) -> np.ndarray:
    """Connected-component label (smallest member index) per node; vectorized label propagation."""
    labels = np.arange(n, dtype=np.int64)
    if len(edges) == 0:
        return labels
    a, b = edges[:, 0], edges[:, 1]
    while True:
        m = np.minimum(labels[a], labels[b])
        new = labels.copy()
        np.minimum.at(new, a, m)
        np.minimum.at(new, b, m)
        new = new[new]  # pointer jumping
        if np.array_equal(new, labels):
            return labels
        labels = new


@register
@dataclass
class NearDedup(GlobalOp):
    """MinHash LSH near-duplicates: word shingles (character shingles for CJK), banded buckets,
    candidates verified by estimated Jaccard >= threshold; the best-scored record of each cluster stays."""

    name: ClassVar[str] = "near_dedup"
    threshold: float = param(0.8, "Jaccard similarity at which two records are duplicates")
    num_perm: int = param(128, "MinHash permutations")
    bands: int = param(16, "LSH bands (num_perm / bands rows each)")
    word_ngram: int = param(5, "shingle size in words for space-delimited text")
    char_ngram: int = param(5, "shingle size in characters for CJK text")
    field: str = param("all", "text to compare: all, prompt or response")
    keep: str = param("best", "best (highest `score`, then earliest) or first")
    score: str = param("quality", "score used by keep=best")
    seed: int = param(42, "MinHash seed")

    def __post_init__(self) -> None:
        if self.num_perm % self.bands:
            raise ValueError("num_perm must be a multiple of bands")

    def signatures(self, texts: list[str]) -> np.ndarray:
        import rensa

        sets = [shingles(t, self.word_ngram, self.char_ngram) or [""] for t in texts]
        m = rensa.RMinHash.digest_matrix_from_token_sets(sets, self.num_perm, self.seed)
        return np.array(m.to_rows(), dtype=np.uint32).reshape(len(texts), self.num_perm)

    def keys(self, batch: list[Record]) -> dict[str, np.ndarray]:
        sig = self.signatures([record_text(r, self.field) for r in batch])
        return {"sig": sig, "score": _score_keys(batch, self.score), **_id_keys(batch)}

    def pairs(self, sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Verified near-duplicate pairs and their estimated Jaccard.

        Identical signatures (exact copies, common in real data) are collapsed first: each copy
        is paired with its first occurrence at J=1, and only distinct signatures are banded.
        """
        n = len(sig)
        whole = _band_hashes(sig, 1)[:, 0]
        _, first, inverse = np.unique(whole, return_index=True, return_inverse=True)
        rep = first[inverse.ravel()]
        copies = np.nonzero(rep != np.arange(n))[0]
        copy_pairs = np.stack([rep[copies], copies], axis=1)
        uniq = np.sort(first)
        cand = candidate_pairs(_band_hashes(sig[uniq], self.bands))
        cand = uniq[cand] if len(cand) else cand
        est = estimated_jaccard(sig, cand)
        ok = est >= self.threshold
        return (np.concatenate([copy_pairs, cand[ok]]), np.concatenate([np.ones(len(copies), dtype=np.float32), est[ok]]))

    def decide(self, keys: dict[str, np.ndarray]):
        sig = keys["sig"]
        n = len(sig)
        pairs, est = self.pairs(sig)
        groups = components(n, pairs)
        scores = keys["score"] if self.keep == "best" else np.full(n, np.nan)
        keeper = keepers(groups, scores)
        drop = np.nonzero(keeper != np.arange(n))[0]
        # the similarity to the keeper, where the pair was verified directly
        sim = {}
        for (i, j), e in zip(pairs.tolist(), est.tolist()):
            sim[(i, j)] = e
        drops = []
        for i in drop.tolist():
            k = int(keeper[i])
            e = sim.get((min(i, k), max(i, k)))
            drops.append(Drop("near_duplicate", f"similar to {_id_at(keys, k)}" + (f" (J~{e:.2f})" if e is not None else " (same cluster)")))
        sizes = np.bincount(groups)
        return drop, drops, {"pairs": int(len(pairs)), "clusters": int((sizes > 1).sum()), "duplicates": int(len(drop)),
                             "cluster_sizes": _size_hist(sizes)}
