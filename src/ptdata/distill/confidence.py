"""Confidence estimators for teacher labels, each a value in [0, 1], and how they combine.

- consistency: the share of samples whose final answer is the majority answer;
- logprob: the chosen sample's geometric-mean token probability, exp(mean log-prob)
  (its minimum token log-prob is recorded too);
- judge: a judge's quality score of the chosen sample, (q - 1) / 5 on Deita's 1-6 scale;
- verifier: 1 if the chosen answer matches the reference (or a user callable says so), else 0.

The kept label is the best sample of the majority answer (`best_sample`), whatever the order
the samples came in: the highest mean log-prob when every such sample has one; else, with the
judge estimator, the highest judge score; else the consensus sample, the one whose words agree
most with the other samples of that answer (mean Jaccard of their word/CJK-character sets; a
minimum-Bayes-risk choice: a sample that reaches the majority answer by odd reasoning shares
little with the rest). Ties go to the consensus order, then the shorter text, then the earlier.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import InputError
from ..text import tokens

ESTIMATORS = ("consistency", "logprob", "judge", "verifier")


@dataclass
class Vote:
    answers: list[str | None]
    majority: str | None
    share: float
    chosen: int | None  # index of the kept sample
    members: list[int] = field(default_factory=list)  # the samples of the majority answer, consensus order first
    chosen_by: str | None = None  # only | logprob | judge | consensus


def vote(samples: list[dict], answers: list[str | None]) -> Vote:
    """The majority answer (a sample without an answer, such as a truncated one, counts against
    it) and its best sample by log-prob or consensus; `best_sample` again with judge scores."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return Vote(answers, None, 0.0, None)
    # ties: the answer that appears first among the samples wins, so the result is deterministic
    top = max(counts.values())
    majority = next(a for a in answers if a is not None and counts[a] == top)
    members = consensus_order(samples, [i for i, a in enumerate(answers) if a == majority])
    chosen, by = best_sample(samples, members)
    return Vote(answers, majority, top / len(samples), chosen, members, by)


def consensus_order(samples: list[dict], idx: list[int]) -> list[int]:
    """`idx` from the sample agreeing most with the others (mean Jaccard of word sets) to the
    least; ties: the shorter text, then the earlier sample."""
    if len(idx) < 2:
        return list(idx)
    texts = [samples[i].get("text") or "" for i in idx]
    sets = [set(tokens(t)) for t in texts]
    agree = []
    for a, sa in enumerate(sets):
        sims = [len(sa & sb) / (len(sa | sb) or 1) for b, sb in enumerate(sets) if b != a]
        agree.append(sum(sims) / len(sims))
    order = sorted(range(len(idx)), key=lambda a: (-round(agree[a], 12), len(texts[a]), idx[a]))
    return [idx[a] for a in order]


def best_sample(samples: list[dict], members: list[int], judged: dict[int, float] | None = None) -> tuple[int, str]:
    """(index, rule) of the label among the majority's samples, given in consensus order."""
    if len(members) == 1:
        return members[0], "only"
    lps = [samples[i].get("mean_logprob") for i in members]
    if all(x is not None for x in lps):
        return members[max(range(len(members)), key=lambda j: (lps[j], -j))], "logprob"
    if judged and all(judged.get(i) is not None for i in members):
        return members[max(range(len(members)), key=lambda j: (judged[members[j]], -j))], "judge"
    return members[0], "consensus"


@dataclass
class Combiner:
    """`all`: every estimator must reach its threshold; `weighted`: the weighted mean must."""

    estimators: list[str]
    threshold: float | dict[str, float] = 0.5
    mode: str = "all"
    weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = [e for e in self.estimators if e not in ESTIMATORS]
        if bad or not self.estimators:
            raise InputError(f"estimators must be some of {ESTIMATORS}, got {self.estimators}")
        if self.mode not in ("all", "weighted"):
            raise InputError(f"combine must be all or weighted, got {self.mode!r}")
        if isinstance(self.threshold, dict) and self.mode == "weighted":
            raise InputError("a weighted combination takes one threshold, not one per estimator")

    def score(self, values: dict[str, float | None]) -> float:
        """One number per label for calibration: the minimum (all-of) or the weighted mean."""
        vs = [values.get(e) for e in self.estimators]
        if any(v is None for v in vs):
            return 0.0
        if self.mode == "all":
            if isinstance(self.threshold, dict):  # distance above each estimator's own threshold
                return min(v - self.threshold.get(e, 0.5) for e, v in zip(self.estimators, vs)) + 0.5
            return min(vs)
        w = [self.weights.get(e, 1.0) for e in self.estimators]
        return sum(a * b for a, b in zip(w, vs)) / sum(w)

    def keep(self, values: dict[str, float | None]) -> bool:
        if self.mode == "all" and isinstance(self.threshold, dict):
            return all(values.get(e) is not None and values[e] >= self.threshold.get(e, 0.5) for e in self.estimators)
        return self.score(values) >= float(self.threshold)  # type: ignore[arg-type]


def logprob_confidence(sample: dict) -> float | None:
    m = sample.get("mean_logprob")
    return math.exp(m) if m is not None else None


def verify(answer: str | None, reference: str | None, record: Any = None,
           user: Callable[[Any, str | None], Any] | None = None) -> float | None:
    if user is not None:
        return float(bool(user(record, answer)))
    if reference is None:
        return None
    return float(answer is not None and answer == reference)
