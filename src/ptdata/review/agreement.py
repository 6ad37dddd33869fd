"""Agreement between raters: Cohen's kappa (two raters) and Krippendorff's alpha (any number of
raters, missing values allowed; nominal, ordinal or interval). Plain functions on plain lists.

Krippendorff's alpha follows "Computing Krippendorff's Alpha-Reliability" (Krippendorff, 2011):
a coincidence matrix over pairable values (units with at least two values), alpha = 1 - D_o / D_e,
with the ordinal metric delta(c, k) = (sum of n_g for g from c to k - (n_c + n_k) / 2)^2.
An undefined coefficient (no pairable values, or no variation at all) is None.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from itertools import combinations
from typing import Hashable, Iterable, Sequence


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable], weights: str | None = None) -> float | None:
    """Cohen's kappa of two raters over the same items (a[i] and b[i] rate item i). `weights`:
    None (every disagreement counts the same), "linear" or "quadratic" (ordered numeric values)."""
    if len(a) != len(b):
        raise ValueError("both raters must rate the same items")
    n = len(a)
    if n == 0:
        return None
    cats = sorted(set(a) | set(b))
    if weights is None:
        w = lambda x, y: 0.0 if x == y else 1.0  # noqa: E731
    else:
        span = (max(cats) - min(cats)) or 1
        p = {"linear": 1, "quadratic": 2}[weights]
        w = lambda x, y: (abs(x - y) / span) ** p  # noqa: E731
    pa, pb = Counter(a), Counter(b)
    observed = sum(w(x, y) for x, y in zip(a, b)) / n
    expected = sum(pa[x] * pb[y] * w(x, y) for x in cats for y in cats) / (n * n)
    if expected == 0:
        return None  # both raters used one and the same value throughout: chance explains everything
    return 1.0 - observed / expected


def coincidences(units: Iterable[Sequence[Hashable | None]]) -> dict[tuple, float]:
    """The coincidence matrix o[c, k] of the pairable values (None is a missing value)."""
    o: dict[tuple, float] = defaultdict(float)
    for unit in units:
        vals = [v for v in unit if v is not None]
        m = len(vals)
        if m < 2:
            continue
        for i, j in combinations(range(m), 2):  # every ordered pair of distinct raters, both ways
            o[vals[i], vals[j]] += 1.0 / (m - 1)
            o[vals[j], vals[i]] += 1.0 / (m - 1)
    return o


def krippendorff_alpha(units: Iterable[Sequence[Hashable | None]], level: str = "ordinal") -> float | None:
    """Krippendorff's alpha. `units`: one sequence per item with each rater's value or None.
    `level`: nominal, ordinal or interval."""
    o = coincidences(units)
    if not o:
        return None
    nc: dict = defaultdict(float)
    for (c, _), v in o.items():
        nc[c] += v
    n = sum(nc.values())
    values = sorted(nc)
    if level == "nominal":
        d = lambda c, k: 0.0 if c == k else 1.0  # noqa: E731
    elif level == "interval":
        d = lambda c, k: float(c - k) ** 2  # noqa: E731
    elif level == "ordinal":
        rank = {v: i for i, v in enumerate(values)}
        cum = [0.0]
        for v in values:
            cum.append(cum[-1] + nc[v])

        def d(c, k):  # noqa: ANN001
            lo, hi = sorted((rank[c], rank[k]))
            return (cum[hi + 1] - cum[lo] - (nc[c] + nc[k]) / 2) ** 2
    else:
        raise ValueError(f"level must be nominal, ordinal or interval, not {level!r}")
    observed = sum(v * d(c, k) for (c, k), v in o.items())
    expected = sum(nc[c] * nc[k] * d(c, k) for c in values for k in values)
    if expected == 0:
        return None
    return 1.0 - (n - 1) * observed / expected


def pairwise_kappas(ratings: dict[str, dict[Hashable, Hashable]], min_items: int = 2) -> list[dict]:
    """Cohen's kappa for every pair of raters on the items both rated. `ratings`: rater ->
    {item: value}."""
    out = []
    for r1, r2 in combinations(sorted(ratings), 2):
        common = sorted(set(ratings[r1]) & set(ratings[r2]), key=str)
        if len(common) < min_items:
            continue
        k = cohen_kappa([ratings[r1][i] for i in common], [ratings[r2][i] for i in common])
        out.append({"raters": [r1, r2], "items": len(common), "kappa": None if k is None else round(k, 4)})
    return out


def units_of(ratings: dict[str, dict[Hashable, Hashable]]) -> list[list]:
    """Rater -> {item: value} as alpha's units: one list of values per item."""
    by_item: dict = defaultdict(list)
    for per in ratings.values():
        for item, v in per.items():
            by_item[item].append(v)
    return list(by_item.values())


def judge_calibration(judge: Sequence[float], human: Sequence[float], keep: Sequence[bool] | None = None) -> dict:
    """How far a judge's ratings can be trusted, against people rating the same items (judge[i]
    and human[i] rate item i): Krippendorff's alpha (ordinal), Cohen's kappa (on the rounded
    ratings; unweighted and quadratic), Spearman, and, given the people's keep/drop decision, the
    judge threshold (keep when judge >= t) that best reproduces it (highest kappa of the
    decisions, then accuracy, then the lowest t), with its accuracy, precision and recall.
    The review report's judge-vs-reviewer figures are this computation."""
    from ..selection.methods import spearman

    if len(judge) != len(human) or (keep is not None and len(keep) != len(judge)):
        raise ValueError("judge, human (and keep) must rate the same items")
    n = len(judge)
    if n == 0:
        return {"pairs": 0}
    rj, rh = [int(round(x)) for x in judge], [int(round(x)) for x in human]
    kq = cohen_kappa(rj, rh, "quadratic") if len(set(rj) | set(rh)) > 1 else None
    out = {"pairs": n, "alpha": _round(krippendorff_alpha([[a, b] for a, b in zip(judge, human)], "ordinal")),
           "kappa": _round(cohen_kappa(rj, rh)), "kappa_quadratic": _round(kq),
           "spearman": _round(spearman(list(judge), list(human))),
           "percent_agreement": _round(sum(a == b for a, b in zip(rj, rh)) / n)}
    if keep is not None:
        best = None
        for t in sorted(set(judge)):
            pred = [x >= t for x in judge]
            k = cohen_kappa(pred, list(keep))
            acc = sum(p == h for p, h in zip(pred, keep)) / n
            key = (-1.0 if k is None else k, acc, -t)
            if best is None or key > best[0]:
                best = (key, t, pred, k, acc)
        _, t, pred, k, acc = best
        tp = sum(p and h for p, h in zip(pred, keep))
        out["threshold"] = {"keep_if_at_least": t, "kappa": _round(k), "accuracy": _round(acc),
                            "precision": _round(tp / sum(pred)) if sum(pred) else None,
                            "recall": _round(tp / sum(keep)) if sum(keep) else None,
                            "human_keep_rate": _round(sum(keep) / n), "judge_keep_rate": _round(sum(pred) / n)}
    return out


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)
