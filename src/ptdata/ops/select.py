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

    def decide(self, keys: dict[str, np.ndarray]) -> Decision:
        from .dedup import _id_at

        scores, lengths = keys["score"], keys["length"]
        n = len(scores)
        target = min(n, self.top_n or int(round(self.fraction * n)))
        too_close: dict[int, tuple[int, float]] = {}
        if self.method == "score":  # the ranking with the MinHash diversity check
            kept = self._diverse_top(keys, target, too_close)
        else:  # the same choice select-report makes
            kept = pick(self.method, target, scores=scores, lengths=lengths, emb=lambda: keys["emb"],
                        targets=self._target_embeddings, seed=self.seed).tolist()
        keep = np.zeros(n, dtype=bool)
        keep[kept] = True
        drop = np.nonzero(~keep)[0]
        cutoff = float(scores[kept[-1]]) if kept and self.method == "score" else float("nan")
        reasons, details = [], []
        for i in drop.tolist():
            if i in too_close:
                j, sim = too_close[i]
                reasons.append("too_similar")
                details.append(f"J~{sim:.2f} to selected {_id_at(keys, j)}")
            elif self.method == "score":
                reasons.append("not_selected")
                details.append(f"{self.score} {scores[i]:.3f} below the selection cutoff {cutoff:.3f}")
            else:
                reasons.append("not_selected")
                details.append(f"not among the {target:,} chosen by {self.method}")
        return Decision(drop, reasons, details, {"method": self.method, "selected": len(kept), "too_similar": len(too_close),
                                                 "cutoff": cutoff, **self._baselines(kept, scores, lengths, target)})

    def _baselines(self, kept: list[int], scores: np.ndarray, lengths: np.ndarray, k: int) -> dict:
        """What random and longest-response selection of the same size keep, beside the method."""
        mine = set(kept)

        def figures(idx) -> dict:
            idx = np.asarray(idx, dtype=np.int64)
            s = scores[idx] if len(idx) else np.array([np.nan])
            return {"mean_length": round(float(lengths[idx].mean()), 1) if len(idx) else None,
                    f"mean_{self.score}": None if np.isnan(s).all() else round(float(np.nanmean(s)), 4),
                    "overlap": round(len(mine & set(idx.tolist())) / max(1, len(mine | set(idx.tolist()))), 3)}

        rho = M.spearman(scores, lengths)
        return {"baselines": {self.method: figures(kept), "random": figures(M.random_pick(len(scores), k, self.seed)),
                              "longest": figures(M.longest(lengths, k))},
                "spearman_score_length": None if rho is None else round(rho, 4)}

    def _diverse_top(self, keys: dict[str, np.ndarray], target: int, too_close: dict) -> list[int]:
        from .dedup import _band_hashes

        sig, scores = keys["sig"], keys["score"]
        order = M.by_score(scores, len(scores))
        bands = _band_hashes(sig, self.bands)
        buckets: dict[tuple[int, int], list[int]] = {}
        kept: list[int] = []
        check = self.diversity_threshold < 1
        for i in order.tolist():
            if len(kept) >= target:
                break
            if check:
                near = None
                for b, h in enumerate(bands[i].tolist()):
                    for j in buckets.get((b, h), ()):
                        sim = float((sig[i] == sig[j]).mean())
                        if sim >= self.diversity_threshold:
                            near = (j, sim)
                            break
                    if near:
                        break
                if near:
                    too_close[i] = near
                    continue
                for b, h in enumerate(bands[i].tolist()):
                    buckets.setdefault((b, h), []).append(i)
            kept.append(i)
        return kept
