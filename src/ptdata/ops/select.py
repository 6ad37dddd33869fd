"""The `select` op: keep the best N records, by score or by an embedding-based method, with the
baselines in the report.

Methods (ptdata.selection.methods): `score` ranks by a score and greedily skips a candidate
whose MinHash similarity to a selected record is >= diversity_threshold (Deita-style);
`kcenter` and `facility` pick for coverage and representativeness on sentence embeddings;
`target` keeps the records nearest a user's example prompts (RDS+); `random` and `longest` are
there to be compared with. Whatever the method, the report says what random and longest-response
selection would have kept (overlap, mean length and score of the kept records) and the score's
rank correlation with response length, so a selector is never read without its baselines.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from ..params import Count, Positive, Share
from ..records import Record
from ..selection import methods as M
from ..selection.report import EMBEDDING_METHODS, pick
from ..text import prompt_text, record_text, response_text
from .base import Decision, GlobalOp, param, register
from .filters import TextField

Method = Literal["score", "kcenter", "facility", "target", "random", "longest"]


@register
@dataclass
class Select(GlobalOp):
    """Keep the best records: top N or a fraction, by score (with a MinHash diversity check) or by
    k-center, facility location or nearness to target prompts on embeddings; the report adds what
    random and longest-response selection would keep."""

    name: ClassVar[str] = "select"
    score: str = param("quality", "score to rank by (higher is better)")
    top_n: Count = param(0, "number of records to keep (0: use fraction)")
    fraction: Share = param(0.0, "share of records to keep when top_n is 0")
    method: Method = param("score", "score (Deita-style), kcenter, facility, target (nearest to `targets`), random, longest")
    diversity_threshold: Share = param(0.7, "method score: skip candidates at least this similar (Jaccard) to a kept record; 1 disables")
    num_perm: Positive = param(64, "MinHash permutations for the similarity")
    bands: Positive = param(16, "LSH bands used to find similar kept records")
    targets: str = param("", "method target: a file of example prompts (any format ptdata reads)")
    embed_model: str = param("use", "embedding methods: use, minilm, e5, or a sentence-transformers folder")
    embed_field: TextField = param("prompt", "embedding methods: text to embed")
    cache_dir: str = param(".ptdata-cache", "embedding cache folder (shared with the dedup and decontamination ops)")
    seed: Count = param(0, "method random (and the random baseline): the seed")

    def rules(self) -> None:
        if not self.top_n and not self.fraction:
            raise ValueError("select needs top_n > 0 or 0 < fraction <= 1")
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")
        if self.method == "target" and not self.targets:
            raise ValueError("method target needs targets: a file of example prompts")

    def __post_init__(self) -> None:
        from ..embed import Embeddings

        self._embed = Embeddings(self.embed_model, self.cache_dir)

    def keys(self, batch: list[Record]) -> dict[str, np.ndarray]:
        from .dedup import NearDedup, _id_keys, _score_keys

        out = {"score": _score_keys(batch, self.score), "length": np.array([len(response_text(r)) for r in batch], dtype=np.float64),
               **_id_keys(batch)}
        if self.method == "score":
            out["sig"] = NearDedup(num_perm=self.num_perm, bands=self.bands).signatures(
                [response_text(r) + "\n" + prompt_text(r) for r in batch])
        if self.method in EMBEDDING_METHODS:
            out["emb"] = self._embed([record_text(r, self.embed_field) for r in batch])
        return out

    def _target_embeddings(self) -> np.ndarray:
        from ..errors import InputError
        from ..reader import ReadOptions, read_records

        recs = [r for r, _ in read_records(self.targets, ReadOptions(validate=False)) if r is not None]
        if not recs:
            raise InputError(f"select: targets {self.targets}: no records")
        return self._embed([record_text(r, self.embed_field) for r in recs])

    @property
    def staged(self) -> bool:  # type: ignore[override]
        """method score decides in two phases on the workers (pipeline/staged_select.py)."""
        return self.method == "score"

    def target_size(self, n: int) -> int:
        return min(n, self.top_n or int(round(self.fraction * n)))

    def decide(self, keys: dict[str, np.ndarray]) -> Decision:
        from .dedup import _id_at

        scores, lengths = keys["score"], keys["length"]
        n = len(scores)
        target = self.target_size(n)
        too_close: dict[int, tuple[int, float]] = {}
        if self.method == "score":  # the ranking with the MinHash diversity check
            kept, too_close = diverse_greedy(keys["sig"], M.by_score(scores, n), target, self.diversity_threshold, self.bands)
        else:  # the same choice select-report makes
            kept = pick(self.method, target, scores=scores, lengths=lengths, emb=lambda: keys["emb"],
                        targets=self._target_embeddings, seed=self.seed).tolist()
        keep = np.zeros(n, dtype=bool)
        keep[kept] = True
        drop = np.nonzero(~keep)[0]
        cutoff = float(scores[kept[-1]]) if kept and self.method == "score" else float("nan")
        too_close_ids = {i: (_id_at(keys, j), sim) for i, (j, sim) in too_close.items()}
        reasons, details = drop_details(self.method, self.score, drop, scores[drop], too_close_ids, cutoff, target)
        rnd, lng = M.random_pick(n, target, self.seed), M.longest(lengths, target)
        picks = {name: (idx, scores[idx], lengths[idx]) for name, idx in
                 ((self.method, np.asarray(kept, dtype=np.int64)), ("random", rnd), ("longest", lng))}
        report = {"method": self.method, "selected": len(kept), "too_similar": len(too_close), "cutoff": cutoff,
                  **self.baselines(picks, M.spearman(scores, lengths))}
        return Decision(drop, reasons, details, report)

    def baselines(self, picks: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], rho: float | None) -> dict:
        """What random and longest-response selection of the same size keep, beside the method:
        `picks` holds, for the method, random and longest, the positions kept with their scores
        and response lengths."""
        mine = set(np.asarray(picks[self.method][0]).tolist())

        def figures(idx, s, length) -> dict:
            idx = set(np.asarray(idx).tolist())
            s = np.asarray(s, dtype=np.float64) if len(idx) else np.array([np.nan])
            return {"mean_length": round(float(np.asarray(length, dtype=np.float64).mean()), 1) if len(idx) else None,
                    f"mean_{self.score}": None if np.isnan(s).all() else round(float(np.nanmean(s)), 4),
                    "overlap": round(len(mine & idx) / max(1, len(mine | idx)), 3)}

        return {"baselines": {name: figures(*picks[name]) for name in (self.method, "random", "longest")},
                "spearman_score_length": None if rho is None else round(rho, 4)}


def drop_details(method: str, score: str, drop: np.ndarray, drop_scores: np.ndarray, too_close: dict[int, tuple[str, float]],
                 cutoff: float, target: int) -> tuple[list[str], list[str]]:
    """Reason and detail of each record not kept (`too_close`: position -> the id of the selected
    record it is too similar to, and the similarity)."""
    reasons, details = [], []
    for i, sc in zip(drop.tolist(), drop_scores.tolist()):
        if i in too_close:
            j, sim = too_close[i]
            reasons.append("too_similar")
            details.append(f"J~{sim:.2f} to selected {j}")
        elif method == "score":
            reasons.append("not_selected")
            details.append(f"{score} {sc:.3f} below the selection cutoff {cutoff:.3f}")
        else:
            reasons.append("not_selected")
            details.append(f"not among the {target:,} chosen by {method}")
    return reasons, details


def diverse_greedy(sig: np.ndarray, order: np.ndarray, target: int, threshold: float, bands: int,
                   limit: int | None = None) -> tuple[list[int], dict[int, tuple[int, float]]]:
    """Deita-style: the rows of `sig` in `order`, each kept unless its MinHash similarity to a
    kept one (found through LSH buckets) is >= threshold, until `target` are kept or the first
    `limit` of `order` are seen. (kept rows in order, skipped row -> (the kept row, similarity))."""
    from .dedup import _band_hashes

    band = _band_hashes(sig, bands)
    buckets: dict[tuple[int, int], list[int]] = {}
    kept: list[int] = []
    too_close: dict[int, tuple[int, float]] = {}
    check = threshold < 1
    for i in order.tolist()[:limit]:
        if len(kept) >= target:
            break
        if check:
            near = None
            for b, h in enumerate(band[i].tolist()):
                for j in buckets.get((b, h), ()):
                    sim = float((sig[i] == sig[j]).mean())
                    if sim >= threshold:
                        near = (j, sim)
                        break
                if near:
                    break
            if near:
                too_close[i] = near
                continue
            for b, h in enumerate(band[i].tolist()):
                buckets.setdefault((b, h), []).append(i)
        kept.append(i)
    return kept, too_close
