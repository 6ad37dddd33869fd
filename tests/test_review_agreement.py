"""Cohen's kappa and Krippendorff's alpha against textbook worked examples and an independent
implementation (the `krippendorff` package, and a kappa written out here from the definition)."""
from __future__ import annotations

import random

import pytest

from ptdata.review.agreement import cohen_kappa, coincidences, krippendorff_alpha, pairwise_kappas, units_of

N = None
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the 4 observers x 12 units
# example with missing values: alpha nominal 0.743, ordinal 0.815, interval 0.849.
KRIPP = [[1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
         [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
         [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
         [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N]]


def units(obs: list[list]) -> list[list]:
    return [list(u) for u in zip(*obs)]


@pytest.mark.parametrize("level,published", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_alpha_matches_krippendorffs_published_example(level, published):
    assert krippendorff_alpha(units(KRIPP), level) == pytest.approx(published, abs=5e-4)


def test_alpha_coincidences_of_the_published_example():
    o = coincidences(units(KRIPP))
    # 40 pairable values (unit 12 has one value only); margins counted by hand from the table
    assert sum(o.values()) == pytest.approx(40)
    n_c = {c: sum(v for (a, _), v in o.items() if a == c) for c in range(1, 6)}
    assert n_c == pytest.approx({1: 9, 2: 13, 3: 10, 4: 5, 5: 3})
    # unit 1 (1, 1, 1) gives o(1,1) 3 x 2 / 2 = 3; unit 8 (1, 2, 1, 1): 3 x 2 / 3 = 2; unit 11 (1, 1): 2
    assert o[1, 1] == pytest.approx(7.0)


def test_kappa_textbook_examples():
    # 50 items: both yes 20, A yes B no 5, A no B yes 10, both no 15 -> p_o 0.7, p_e 0.5, kappa 0.4
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    # perfect agreement is 1, systematic disagreement below 0, one shared constant undefined
    assert cohen_kappa([1, 2, 3], [1, 2, 3]) == 1.0
    assert cohen_kappa([1, 2, 1, 2], [2, 1, 2, 1]) == pytest.approx(-1.0)
    assert cohen_kappa([3, 3], [3, 3]) is None and cohen_kappa([], []) is None


def kappa_by_definition(a: list, b: list) -> float:
    cats = sorted(set(a) | set(b))
    n = len(a)
    table = [[sum(1 for x, y in zip(a, b) if x == ci and y == cj) for cj in cats] for ci in cats]
    po = sum(table[i][i] for i in range(len(cats))) / n
    pe = sum(sum(table[i]) * sum(row[i] for row in table) for i in range(len(cats))) / n / n
    return (po - pe) / (1 - pe)


def test_against_independent_implementations_on_random_ratings():
    krippendorff = pytest.importorskip("krippendorff")
    import numpy as np

    rng = random.Random(7)
    for trial in range(40):
        raters, items = rng.randint(2, 5), rng.randint(5, 60)
        truth = [rng.randint(1, 5) for _ in range(items)]
        obs = [[(min(5, max(1, t + rng.choice((-1, 0, 0, 1)))) if rng.random() > 0.15 else None) for t in truth]
               for _ in range(raters)]
        ref = np.array([[np.nan if v is None else v for v in row] for row in obs], dtype=float)
        for level in ("nominal", "ordinal", "interval"):
            ours = krippendorff_alpha(units(obs), level)
            try:
                theirs = krippendorff.alpha(reliability_data=ref, level_of_measurement=level)
            except (ValueError, ZeroDivisionError):
                continue
            if ours is None:
                assert not np.isfinite(theirs)
                continue
            assert ours == pytest.approx(theirs, abs=1e-9), (trial, level)
        both = [(x, y) for x, y in zip(obs[0], obs[1]) if x is not None and y is not None]
        if len({v for p in both for v in p}) > 1:
            assert cohen_kappa([x for x, _ in both], [y for _, y in both]) == pytest.approx(
                kappa_by_definition([x for x, _ in both], [y for _, y in both]))


def test_weighted_kappa_and_helpers():
    # quadratic weights: near misses count less than far ones
    a, b = [1, 2, 3, 4, 5, 1, 2, 3], [1, 2, 3, 4, 5, 2, 3, 4]
    far = [1, 2, 3, 4, 5, 5, 5, 5]
    assert cohen_kappa(a, b, "quadratic") > cohen_kappa(a, far, "quadratic")
    ratings = {"x": {1: 3, 2: 4, 3: 5}, "y": {1: 3, 2: 4, 3: 4}, "z": {2: 4}}
    pairs = pairwise_kappas(ratings)
    assert [p["raters"] for p in pairs] == [["x", "y"]] and pairs[0]["items"] == 3
    assert sorted(map(sorted, units_of(ratings))) == [[3, 3], [4, 4, 4], [4, 5]]
    assert krippendorff_alpha([[1], [2, None]]) is None  # nothing pairable
    with pytest.raises(ValueError):
        krippendorff_alpha([[1, 2]], "ratio")
