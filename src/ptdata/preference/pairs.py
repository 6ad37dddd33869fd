"""Build prompt/chosen/rejected pairs from candidates, validate them, and report their biases.

Sources: candidates rated by the aspect judge (`ratings`), candidates that came with a score
(the `rated` format: UltraFeedback-style files, existing rating fields), and pairwise
judgments (`meta.pairwise`, asked in both orders; only consistent verdicts count).
"""
from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from ..ops.base import Drop
from ..records import Record
from ..report.stats import numeric_summary

STRATEGIES = ("best_worst", "best_vs_rest", "pairwise")


def candidate_score(cand: dict, aspects: list[str] | None = None, weights: dict[str, float] | None = None) -> float | None:
    """A candidate's overall score: the weighted mean of its aspect ratings (all of them, or
    the named ones), else its own `score`; None when it has neither."""
    ratings = cand.get("ratings") or {}
    names = [a for a in (aspects or sorted(ratings)) if a in ratings]
    if aspects and len(names) < len(aspects):
        return None if cand.get("score") is None else float(cand["score"])
    if names:
        w = weights or {}
        total = sum(w.get(a, 1.0) for a in names)
        return sum(ratings[a] * w.get(a, 1.0) for a in names) / total
    return None if cand.get("score") is None else float(cand["score"])


def _side(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _pair(rec: Record, cands: list[dict], i: int, j: int, si: float | None, sj: float | None, strategy: str) -> Record:
    ci, cj = cands[i], cands[j]
    scores: dict[str, float] = {}
    for side, c in (("chosen", ci), ("rejected", cj)):
        for a, v in (c.get("ratings") or {}).items():
            scores[f"{side}.{a}"] = v
    if si is not None and sj is not None:
        scores.update({"chosen.score": round(si, 4), "rejected.score": round(sj, 4), "margin": round(si - sj, 4)})
    meta = {k: v for k, v in rec.meta.items() if k not in ("candidates", "pairwise", "rationales")}
    meta.update(prompt_id=rec.id, pair={"strategy": strategy, "chosen": i, "rejected": j,
                                        "chosen_model": ci.get("model"), "rejected_model": cj.get("model")})
    return Record("preference", rec.messages, _side(ci["text"]), _side(cj["text"]), scores=scores, meta=meta)


def build_pairs(rec: Record, strategy: str = "best_worst", min_margin: float = 1.0, aspects: list[str] | None = None,
                weights: dict[str, float] | None = None) -> tuple[list[Record], Drop | None]:
    """Pairs for one prompt record with candidates, or the reason there are none."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if rec.kind == "preference":
        return [rec], validate_pair(rec, min_margin if "margin" in rec.scores else None)
    cands = rec.meta.get("candidates") or []
    if strategy == "pairwise":
        return _from_pairwise(rec, cands)
    scored = [(k, s) for k, c in enumerate(cands) if (s := candidate_score(c, aspects, weights)) is not None]
    if len(scored) < 2:
        return [], Drop("too_few_rated", f"{len(scored)} rated candidate(s) of {len(cands)}; a pair needs two")
    # stable order: higher score first, then earlier candidate
    scored.sort(key=lambda t: (-t[1], t[0]))
    best, sb = scored[0]
    losers = [scored[-1]] if strategy == "best_worst" else scored[1:]
    pairs, why = [], None
    for k, s in losers:
        p = _pair(rec, cands, best, k, sb, s, strategy)
        d = validate_pair(p, min_margin)
        if d is None:
            pairs.append(p)
        elif why is None:
            why = d
    return (pairs, None) if pairs else ([], why)


def _from_pairwise(rec: Record, cands: list[dict]) -> tuple[list[Record], Drop | None]:
    verdicts = rec.meta.get("pairwise") or []
    if not verdicts:
        return [], Drop("no_judgments", "no pairwise judgments: run the pairwise judge first")
    decided = [v for v in verdicts if v["consistent"] and v["winner"] is not None]
    if not decided:
        inconsistent = sum(not v["consistent"] for v in verdicts)
        if inconsistent:
            return [], Drop("judge_position_inconsistent",
                            f"the judge changed its verdict with the order in {inconsistent} of {len(verdicts)} comparison(s)")
        return [], Drop("all_tied", "the judge called every comparison a tie")
    wins = Counter(v["winner"] for v in decided)
    # chosen: most wins; rejected: the candidate it beat that has the fewest wins
    best = max(range(len(cands)), key=lambda k: (wins[k], -k))
    beaten = [v["b"] if v["winner"] == v["a"] else v["a"] for v in decided if v["winner"] == best]
    if not beaten:
        return [], Drop("judge_position_inconsistent", "the candidate with the most wins has no consistent win")
    worst = min(beaten, key=lambda k: (wins[k], -k))
    p = _pair(rec, cands, best, worst, None, None, "pairwise")
    p.scores["margin"] = float(wins[best] - wins[worst])
    d = validate_pair(p, None)
    return ([p], None) if d is None else ([], d)


def validate_pair(rec: Record, min_margin: float | None) -> Drop | None:
    """The checks every pair passes: both sides present, different, from the same prompt,
    and (when scored) at least `min_margin` apart."""
    ch = "\n".join(m.get("content") or "" for m in rec.chosen or [])
    rj = "\n".join(m.get("content") or "" for m in rec.rejected or [])
    if not ch.strip() or not rj.strip():
        return Drop("empty_side", "chosen or rejected is empty")
    if ch.strip() == rj.strip():
        return Drop("chosen_equals_rejected", "chosen and rejected are the same text")
    pair = rec.meta.get("pair") or {}
    if pair.get("prompt_ids") and len(set(pair["prompt_ids"])) > 1:
        return Drop("prompt_mismatch", f"chosen and rejected answer different prompts {pair['prompt_ids']}")
    m = rec.scores.get("margin")
    if min_margin is not None and m is not None and m < min_margin:
        return Drop("margin_below_min", f"margin {m:g} < {min_margin:g}")
    return None


def bias_report(pairs: list[Record], judged: list[Record] | None = None) -> dict[str, Any]:
    """Checks for the biases that poison DPO data: is `chosen` just the longer answer? does the
    judge prefer a position? how are the ratings spread per aspect?"""
    ratios, longer = [], 0
    dist: dict[str, dict[str, Counter]] = {}
    for p in pairs:
        lc = sum(len(m.get("content") or "") for m in p.chosen or [])
        lr = sum(len(m.get("content") or "") for m in p.rejected or [])
        ratios.append(lc / max(lr, 1))
        longer += lc > lr
        for k, v in p.scores.items():
            side, _, aspect = k.partition(".")
            if side in ("chosen", "rejected") and aspect and aspect != "score":
                dist.setdefault(aspect, {"chosen": Counter(), "rejected": Counter()})[side][str(int(v)) if float(v).is_integer() else str(v)] += 1
    verdicts = [v for r in (judged or pairs) for v in r.meta.get("pairwise") or []]
    firsts = [w for v in verdicts for w in (v["ab"], v["ba"]) if w != "tie"]
    report: dict[str, Any] = {
        "pairs": len(pairs),
        "length": {
            "mean_ratio": round(statistics.fmean(ratios), 4) if ratios else None,
            "median_ratio": round(statistics.median(ratios), 4) if ratios else None,
            "chosen_longer_share": round(longer / len(pairs), 4) if pairs else None,
        },
        "ratings": {a: {s: dict(sorted(c.items())) for s, c in sides.items()} for a, sides in sorted(dist.items())},
        "margin": numeric_summary([p.scores["margin"] for p in pairs if "margin" in p.scores]),
    }
    if verdicts:
        report["judge_position"] = {
            "comparisons": len(verdicts),
            "first_position_share": round(sum(w == "A" for w in firsts) / len(firsts), 4) if firsts else None,
            "inconsistent_share": round(sum(not v["consistent"] for v in verdicts) / len(verdicts), 4),
            "tie_share": round(sum(v["winner"] is None and v["consistent"] for v in verdicts) / len(verdicts), 4),
        }
    warnings = []
    if pairs and report["length"]["chosen_longer_share"] > 0.8:
        warnings.append("chosen is the longer answer in more than 80% of pairs: a DPO model may learn length, not quality")
    jp = report.get("judge_position")
    if jp and jp["first_position_share"] is not None and abs(jp["first_position_share"] - 0.5) > 0.15:
        warnings.append(f"the judge picks the first position {jp['first_position_share']:.0%} of the time")
    if jp and jp["inconsistent_share"] > 0.2:
        warnings.append(f"{jp['inconsistent_share']:.0%} of the judge's verdicts flip with the order")
    report["warnings"] = warnings
    return report

