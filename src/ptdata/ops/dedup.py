"""Deduplication: exact (normalized text), near (MinHash LSH), semantic (embeddings).

All three are global ops: a parallel `keys` phase turns each record into compact arrays
(a 64-bit hash, a MinHash signature, an embedding), and one `decide` phase finds the
duplicates. Within a group the record with the best score is kept (ties: the earliest).
"""
from __future__ import annotations

import array
import itertools
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import numpy as np
from annotated_types import Interval

from ..parallel import map_threads
from ..params import Positive, Share
from ..records import Record
from ..text import match_hashes, record_text, shingle_hash_arrays
from .base import Decision, GlobalOp, param, register
from .filters import TextField

Keep = Literal["best", "first"]


_LOW64 = (1 << 64) - 1


def _id_keys(batch: list[Record]) -> dict[str, np.ndarray]:
    """Record ids as two uint64 columns, so a decision can name the record it kept."""
    ids = [int(r.id, 16) for r in batch]
    return {"id_hi": np.array([i >> 64 for i in ids], dtype=np.uint64),
            "id_lo": np.array([i & _LOW64 for i in ids], dtype=np.uint64)}


def _id_at(keys: dict[str, np.ndarray], i: int) -> str:
    return f"{int(keys['id_hi'][i]):016x}{int(keys['id_lo'][i]):016x}"


def ids_hex(keys: dict[str, np.ndarray], idx: np.ndarray) -> list[str]:
    """Hex ids of many records at once (one C-level hex conversion, then slicing)."""
    h = _hex_rows(keys, idx).tobytes().decode()
    return [h[i:i + 32] for i in range(0, len(h), 32)]


def _hex_rows(keys: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
    """(n, 32) uint8: the hex ids of records idx, as ASCII digits."""
    both = np.empty((len(idx), 2), dtype=">u8")
    both[:, 0], both[:, 1] = keys["id_hi"][idx], keys["id_lo"][idx]
    return np.frombuffer(both.tobytes().hex().encode(), dtype=np.uint8).reshape(len(idx), 32)


def details_with_ids(prefix: str, keys: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
    """prefix + hex id of each record idx, as a bytes array (no per-record Python work)."""
    p = np.frombuffer(prefix.encode(), dtype=np.uint8)
    out = np.empty((len(idx), len(p) + 32), dtype=np.uint8)
    out[:, :len(p)] = p
    # many drops share a keeper: hex each keeper once (indices are < n: a lookup table, no sort)
    at = np.full(len(keys["id_hi"]), -1, dtype=np.int64)
    at[idx] = 0
    uniq = np.flatnonzero(at == 0)
    at[uniq] = np.arange(len(uniq))
    out[:, len(p):] = _hex_rows(keys, uniq)[at[idx]]
    return out.view(f"S{len(p) + 32}").ravel()


def _score_keys(batch: list[Record], score: str) -> np.ndarray:
    return np.array([float(r.scores.get(score, np.nan)) for r in batch], dtype=np.float64)


def keepers(groups: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """For each record, the index of its group's keeper: best score (NaN lowest), then earliest."""
    n = len(groups)
    if np.isnan(scores).all():  # no scores: the earliest, without sorting
        first = np.full(int(groups.max()) + 1 if n else 0, n, dtype=np.int64)
        np.minimum.at(first, groups, np.arange(n, dtype=np.int64))
        return first[groups]
    s = np.where(np.isnan(scores), -np.inf, scores)
    order = np.lexsort((np.arange(n), -s, groups))  # by group, best score first, then position
    g_sorted = groups[order]
    first = np.ones(n, dtype=bool)
    first[1:] = g_sorted[1:] != g_sorted[:-1]
    heads = order[first]  # the keeper of each group, in group order
    keeper = np.empty(n, dtype=np.int64)
    run_id = np.cumsum(first) - 1
    keeper[order] = heads[run_id]
    return keeper


def resolve_groups(groups: np.ndarray, keys: dict[str, np.ndarray], keep: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keeper per record, sorted positions to drop, group sizes): the part every dedup decides alike."""
    n = len(groups)
    keeper = keepers(groups, keys["score"] if keep == "best" else np.full(n, np.nan))
    drop = np.nonzero(keeper != np.arange(n))[0]
    return keeper, drop, np.bincount(groups)


def _dup_report(sizes: np.ndarray, groups_name: str, sizes_name: str) -> dict:
    """Groups with copies or near copies, records dropped (all but one per group), size histogram."""
    return {groups_name: int((sizes > 1).sum()), "duplicates": int(sizes.sum() - (sizes > 0).sum()), sizes_name: _size_hist(sizes)}


@register
@dataclass
class ExactDedup(GlobalOp):
    """Drop records whose normalized text (lowercase, punctuation and spacing ignored) was seen."""

    name: ClassVar[str] = "exact_dedup"
    partition_key: ClassVar[str | None] = "hash"  # a group of copies shares its hash
    field: TextField = param("all", "text to compare: all, prompt or response")
    keep: Keep = param("best", "best (highest `score`, then earliest) or first")
    score: str = param("quality", "score used by keep=best")

    def keys(self, batch: list[Record]) -> dict[str, np.ndarray]:
        h = match_hashes([record_text(r, self.field) for r in batch])
        return {"hash": h, "score": _score_keys(batch, self.score), **_id_keys(batch)}

    def decide(self, keys: dict[str, np.ndarray]):
        _, groups = np.unique(keys["hash"], return_inverse=True)
        keeper, drop, sizes = resolve_groups(groups.astype(np.int64).ravel(), keys, self.keep)
        detail = details_with_ids("same text as ", keys, keeper[drop])
        return Decision(drop, "exact_duplicate", detail, _dup_report(sizes, "groups_with_duplicates", "group_sizes"), keeper[drop])


def _size_hist(sizes: np.ndarray) -> dict[str, int]:
    vals, counts = np.unique(sizes[sizes > 1], return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(vals, counts)}


def _band_hashes(sig: np.ndarray, bands: int) -> np.ndarray:
    """(n, bands) uint64: one hash per band of rows (polynomial, wrapping arithmetic)."""
    n, p = sig.shape
    rows = p // bands
    h = np.zeros((n, bands), dtype=np.uint64)
    mult = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        for r in range(rows):  # column r of every band; no uint64 copy of the whole matrix
            h = (h * mult) ^ sig[:, r:bands * rows:rows].astype(np.uint64)
        h ^= np.arange(bands, dtype=np.uint64) * np.uint64(0xD6E8FEB86659FD93)
    return h


def _band_pair_codes(shared: dict, bands: list[int]) -> np.ndarray:
    """Pair codes (i * n + j, i < j) of records sharing a bucket in any of these bands: each
    bucket member paired with its first."""
    band_keys = shared["band_keys"]
    n = len(band_keys)
    out = []
    idx = np.arange(n, dtype=np.int64)
    for b in bands:
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
    return np.unique(np.concatenate(out)) if out else np.empty(0, dtype=np.int64)


def candidate_pairs(band_keys: np.ndarray, workers: int = 1) -> np.ndarray:
    """Unique (i, j), i < j, of records sharing a band bucket; the bands split across `workers`."""
    n, bands = band_keys.shape
    groups = [list(range(bands))[w::workers] for w in range(min(workers, bands))] if workers > 1 else [list(range(bands))]
    parts = [p for p in map_threads(_band_pair_codes, {"band_keys": band_keys}, groups, workers) if len(p)]
    if not parts:
        return np.empty((0, 2), dtype=np.int64)
    codes = np.unique(np.concatenate(parts)) if len(parts) > 1 else parts[0]
    return np.stack([codes // n, codes % n], axis=1)


def _estimate_part(shared: dict, span: tuple[int, int]) -> np.ndarray:
    sig, p = shared["sig"], shared["pairs"][span[0]:span[1]]
    return (sig[p[:, 0]] == sig[p[:, 1]]).mean(axis=1).astype(np.float32)


def _spans(n: int, parts: int, chunk: int) -> list[tuple[int, int]]:
    """[start, end) ranges of at most `chunk` items, at least `parts` of them when n allows."""
    step = max(1, min(chunk, -(-n // max(parts, 1))))
    return [(s, min(s + step, n)) for s in range(0, n, step)] or [(0, 0)]


def estimated_jaccard(sig: np.ndarray, pairs: np.ndarray, workers: int = 1, chunk: int = 25_000) -> np.ndarray:
    """The share of equal MinHash values of each pair, `chunk` pairs at a time on `workers` threads."""
    parts = _spans(len(pairs), workers, chunk)
    return np.concatenate(map_threads(_estimate_part, {"sig": sig, "pairs": pairs}, parts, workers))


def shingle_hashes(flat: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Each record's sorted, unique 32-bit shingle keys (the high half of its 64-bit shingle
    hashes, `text.shingle_hash_arrays`), flattened, with per-record counts: one sort of the whole
    batch by (record, key)."""
    key = np.sort((np.repeat(np.arange(len(counts), dtype=np.uint64), counts) << np.uint64(32)) | (flat >> np.uint64(32)))
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    key = key[first]
    return {"sh": (key & np.uint64(0xFFFFFFFF)).astype(np.uint32),
            "sh_n": np.bincount((key >> np.uint64(32)).astype(np.int64), minlength=len(counts)).astype(np.int64)}


def _gather(values: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """values[starts[k]:starts[k] + lens[k]] for every k, concatenated, and the k of each element."""
    owner = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
    ends = np.cumsum(lens)
    pos = np.arange(int(ends[-1]) if len(ends) else 0, dtype=np.int64) - np.repeat(ends - lens, lens)
    return values[np.repeat(starts, lens) + pos], owner


def _jaccard_part(shared: dict, span: tuple[int, int], chunk: int = 5_000) -> np.ndarray:
    """Intersections counted without a Python loop: both sides of `chunk` pairs are tagged with
    their pair's number, each side is then sorted by (pair, hash), and a stable sort of the two
    merges them in one pass; an intersection is a (pair, hash) seen twice (each set is unique)."""
    sh, ends, starts = shared["sh"], shared["ends"], shared["starts"]
    pairs = shared["pairs"][span[0]:span[1]]
    out = np.empty(len(pairs), dtype=np.float32)
    for s in range(0, len(pairs), chunk):
        a, b = pairs[s:s + chunk, 0], pairs[s:s + chunk, 1]
        na, nb = ends[a] - starts[a], ends[b] - starts[b]
        xa, ka = _gather(sh, starts[a], na)
        xb, kb = _gather(sh, starts[b], nb)
        tagged = np.concatenate([(ka.astype(np.uint64) << np.uint64(32)) | xa.astype(np.uint64),
                                 (kb.astype(np.uint64) << np.uint64(32)) | xb.astype(np.uint64)])
        tagged.sort(kind="stable")  # two sorted runs: one merge
        twice = tagged[1:][tagged[1:] == tagged[:-1]]
        inter = np.bincount((twice >> np.uint64(32)).astype(np.int64), minlength=len(a))
        union = na + nb - inter
        out[s:s + chunk] = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return out


def exact_jaccard(sh: np.ndarray, sh_n: np.ndarray, pairs: np.ndarray, workers: int = 1) -> np.ndarray:
    """Exact Jaccard of the shingle-hash sets of each pair, the pairs split across `workers` threads."""
    ends = np.cumsum(sh_n)
    shared = {"sh": sh, "ends": ends, "starts": ends - sh_n, "pairs": pairs}
    return np.concatenate(map_threads(_jaccard_part, shared, _spans(len(pairs), workers, 50_000), workers))


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


def similarity_details(a: np.ndarray, b: np.ndarray, pair_codes: np.ndarray, pair_sims: np.ndarray, n: int,
                       keeper_ids: list[str]) -> list[str]:
    """Each drop's detail: its similarity to its keeper where known. `a`, `b`: the first records
    with the drop's and the keeper's signature (equal: a copy, J = 1); `pair_codes` (i * n + j,
    sorted) and `pair_sims`: the verified pairs; a drop joined to its keeper only through others
    is `same cluster`."""
    codes = np.minimum(a, b) * n + np.maximum(a, b)
    pos = np.minimum(np.searchsorted(pair_codes, codes), max(len(pair_codes) - 1, 0))
    found = (pair_codes[pos] == codes) if len(pair_codes) else np.zeros(len(a), dtype=bool)
    sims = np.where(a == b, 1.0, pair_sims[pos] if len(pair_codes) else 0.0)
    found |= a == b
    return [f"similar to {h} (J={s:.2f})" if f else f"similar to {h} (same cluster)"
            for h, s, f in zip(keeper_ids, sims.tolist(), found.tolist())]


@register
@dataclass
class NearDedup(GlobalOp):
    """MinHash LSH near-duplicates: shingles of script units (each CJK character a unit, each word
    of other scripts a unit, so mixed Chinese/English text is compared character by character where it
    is Chinese), banded buckets, candidates verified by exact Jaccard >= threshold; the best-scored
    record of each cluster stays."""

    name: ClassVar[str] = "near_dedup"
    staged: ClassVar[bool] = True  # pipeline/staged.py: copies, buckets and verification on the workers
    threshold: Share = param(0.8, "Jaccard similarity at which two records are duplicates")
    num_perm: Annotated[int, Interval(ge=1, le=4096)] = param(128, "MinHash permutations")
    bands: Positive = param(16, "LSH bands (num_perm / bands rows each)")
    word_ngram: Annotated[int, Interval(ge=1, le=64)] = param(5, "shingle size in units for text that is mostly words")
    char_ngram: Annotated[int, Interval(ge=1, le=64)] = param(5, "shingle size in units for text that is mostly CJK characters")
    field: TextField = param("all", "text to compare: all, prompt or response")
    keep: Keep = param("best", "best (highest `score`, then earliest) or first")
    score: str = param("quality", "score used by keep=best")
    seed: Annotated[int, Interval(ge=0, le=2**64 - 1)] = param(42, "MinHash seed")
    verify: Literal["exact", "estimate"] = param(
        "exact", "exact: candidates are confirmed by exact Jaccard of their shingle sets; estimate: MinHash estimate only")
    slack: Share = param(0.1, "candidates whose MinHash estimate is at least threshold - slack get the exact check")

    def rules(self) -> None:
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")

    def shingled(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Each text's shingle hashes, flattened, and how many each has (`shingle_hash_arrays`)."""
        return shingle_hash_arrays(texts, self.word_ngram, self.char_ngram)

    def signatures(self, texts: list[str], shingled: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """(len(texts), num_perm) uint32 MinHash signatures of the texts' shingle hashes (rensa)."""
        import rensa

        flat, counts = shingled if shingled is not None else self.shingled(texts)
        offsets = np.zeros(len(counts) + 1, dtype=np.uint64)
        np.cumsum(counts, out=offsets[1:])
        m = rensa.RMinHash.digest_matrix_from_flat_token_hashes(flat, offsets, self.num_perm, self.seed)
        # rensa hands the matrix over as lists of ints only; array.array takes them fastest
        values = array.array("I", itertools.chain.from_iterable(m.to_rows()))
        return np.frombuffer(values, dtype=np.uint32).reshape(len(counts), self.num_perm)

    def keys(self, batch: list[Record]) -> dict[str, np.ndarray]:
        shingled = self.shingled([record_text(r, self.field) for r in batch])
        sig = self.signatures([], shingled)
        # the band hashes here, in the workers: the decision then only sorts them
        out = {"sig": sig, "band": _band_hashes(sig, self.bands), "whole": _band_hashes(sig, 1)[:, 0],
               "score": _score_keys(batch, self.score), **_id_keys(batch)}
        if self.verify == "exact":
            out.update(shingle_hashes(*shingled))
        return out

    def _graph(self, sig: np.ndarray, sh: np.ndarray | None, sh_n: np.ndarray | None,
               band: np.ndarray | None = None, whole: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rep, pairs, sim): each record's first record with the same signature, and the
        verified near-duplicate pairs (i < j) among those first records, with their similarity.

        Identical signatures (exact copies, common in real data) are collapsed first and only
        distinct signatures are banded. Candidates are confirmed by exact Jaccard when shingle
        hashes are given, else by the MinHash estimate. `band` and `whole` are the band and
        whole-signature hashes when the keys carry them (computed from `sig` otherwise)."""
        n = len(sig)
        whole = _band_hashes(sig, 1)[:, 0] if whole is None else whole
        _, first, inverse = np.unique(whole, return_index=True, return_inverse=True)
        rep = first[inverse.ravel()] if n else np.empty(0, dtype=np.int64)
        uniq = np.sort(first)
        cand = candidate_pairs(_band_hashes(sig[uniq], self.bands) if band is None else band[uniq], self.decide_workers)
        cand = uniq[cand] if len(cand) else cand
        est = estimated_jaccard(sig, cand, self.decide_workers)
        if sh is None:
            ok = est >= self.threshold
            return rep, cand[ok], est[ok]
        pre = est >= self.threshold - self.slack
        cand = cand[pre]
        sim = exact_jaccard(sh, sh_n, cand, self.decide_workers)
        ok = sim >= self.threshold
        return rep, cand[ok], sim[ok]

    @staticmethod
    def _copy_pairs(rep: np.ndarray) -> np.ndarray:
        """(first, copy) for each record whose signature an earlier record has."""
        copies = np.nonzero(rep != np.arange(len(rep)))[0]
        return np.stack([rep[copies], copies], axis=1)

    def pairs(self, sig: np.ndarray, sh: np.ndarray | None = None, sh_n: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Near-duplicate pairs (i < j) and their similarity: each copy (same signature) with its
        first occurrence at J=1, then the verified pairs among distinct signatures."""
        rep, cand, sim = self._graph(sig, sh, sh_n)
        copy_pairs = self._copy_pairs(rep)
        return (np.concatenate([copy_pairs, cand]),
                np.concatenate([np.ones(len(copy_pairs), dtype=np.float32), sim.astype(np.float32)]))

    def decide(self, keys: dict[str, np.ndarray]):
        sig = keys["sig"]
        n = len(sig)
        rep, cand, sim = self._graph(sig, keys.get("sh"), keys.get("sh_n"), keys.get("band"), keys.get("whole"))
        copy_pairs = self._copy_pairs(rep)
        keeper, drop, sizes = resolve_groups(components(n, np.concatenate([copy_pairs, cand])), keys, self.keep)
        # the similarity to the keeper, where known: 1 for the same signature, else that of the
        # verified pair between the two signatures' first records (so copies get the same detail)
        k = keeper[drop]
        pair_codes = cand[:, 0] * n + cand[:, 1]
        order = np.argsort(pair_codes)
        detail = similarity_details(rep[drop], rep[k], pair_codes[order], sim[order], n, ids_hex(keys, k))
        return Decision(drop, "near_duplicate", detail, {"pairs": len(copy_pairs) + len(cand),
                                                         **_dup_report(sizes, "clusters", "cluster_sizes")}, k)


def close_pairs(rows: np.ndarray, cols: np.ndarray, r0: int, c0: int, threshold: float,
                slack: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, cosine) of the pairs i < j with cosine >= threshold between rows r0.. and columns
    c0.. of unit vectors. float32 products find the candidates; each is then decided on its
    float64 dot product, which for float16-rounded vectors (what `embed` returns) is exact in
    any summation order, so a pair's fate does not depend on how the search was blocked."""
    sim = rows @ cols.T
    ii, jj = np.nonzero(sim >= threshold - slack)
    keep = jj + c0 > ii + r0
    ii, jj = ii[keep], jj[keep]
    exact = (rows[ii].astype(np.float64) * cols[jj].astype(np.float64)).sum(axis=1)
    ok = exact >= threshold
    return (ii[ok] + r0).astype(np.int64), (jj[ok] + c0).astype(np.int64), exact[ok]


@register
@dataclass
class SemanticDedup(GlobalOp):
    """Drop records whose sentence embedding (cosine) is within `threshold` of a better one.

    Exact search in blocks: fine up to a few hundred thousand records; catches paraphrases that
    MinHash cannot. The model is a package (see ptdata.embed): MiniLM by default; `model: use`
    shares the vectors the decontaminate op's semantic layer computes (one embedding cache per
    directory, so a recipe embeds each text once)."""

    name: ClassVar[str] = "semantic_dedup"
    staged: ClassVar[bool] = True  # pipeline/staged.py: blocks of the pair search on the workers
    threshold: Annotated[float, Interval(ge=-1, le=1)] = param(0.95, "cosine similarity at which two records are duplicates")
    field: TextField = param("prompt", "text to embed: prompt, response or all")
    model: str = param("minilm", "embedding model: use, minilm, e5 (packages) or a sentence-transformers folder")
    model_dir: str = param("", "a sentence-transformers folder (same as model: FOLDER)")
    cache_dir: str = param(".ptdata-cache", "embedding cache folder (shared with other ops); empty: no cache")
    keep: Keep = param("best", "best (highest `score`, then earliest) or first")
    score: str = param("quality", "score used by keep=best")
    batch: Positive = param(64, "texts per forward pass")

    def __post_init__(self) -> None:
        from ..embed import Embeddings

        self.embed = Embeddings(self.model_dir or self.model, self.cache_dir, self.batch)  # loads where it first embeds

    def rules(self) -> None:
        from pathlib import Path

        from ..embed import MODELS

        m = self.model_dir or self.model
        if m not in MODELS and not Path(m).is_dir():
            raise ValueError(f"model {m!r}: one of {', '.join(MODELS)}, or a sentence-transformers folder")

    def keys(self, batch: list[Record]) -> dict[str, np.ndarray]:
        return {"emb": self.embed([record_text(r, self.field) for r in batch]), "score": _score_keys(batch, self.score), **_id_keys(batch)}

    def pairs(self, emb: np.ndarray, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
        """All pairs (i < j) with cosine >= threshold: exact search, block by block of rows against
        each later block (the grid the staged decision splits across the workers)."""
        found = [close_pairs(emb[r:r + block], emb[c:c + block], r, c, self.threshold)
                 for r in range(0, len(emb), block) for c in range(r, len(emb), block)]
        if not found:
            return np.empty((0, 2), dtype=np.int64), np.empty(0, dtype=np.float64)
        return (np.stack([np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])], axis=1),
                np.concatenate([f[2] for f in found]))

    def decide(self, keys: dict[str, np.ndarray]) -> Decision:
        n = len(keys["emb"])
        pairs, sims = self.pairs(keys["emb"])
        keeper, drop, sizes = resolve_groups(components(n, pairs), keys, self.keep)
        detail = ["semantically close to " + h for h in ids_hex(keys, keeper[drop])]
        return Decision(drop, "semantic_duplicate", detail, {"pairs": len(pairs), **_dup_report(sizes, "clusters", "cluster_sizes")},
                        keeper[drop])
