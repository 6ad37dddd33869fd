"""Agreement on a queue: per aspect, Krippendorff's alpha (ordinal, all reviewers) and Cohen's
kappa (per pair of reviewers); the same for the accept/reject decision, pair choices and labels
(nominal); where the records carry judge scores, the judge-vs-human agreement beside the
human-human one (the judge taken as one more rater, paired with each reviewer); the position
bias of pair choices (the share of picks of the left side); per-reviewer progress. Reviewer
names and labels come from people: every value on the page is HTML-escaped."""
from __future__ import annotations

import html
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from ..report.html import hbar_chart, page
from .agreement import cohen_kappa, judge_calibration, krippendorff_alpha, pairwise_kappas, units_of
from .rubric import Rubric
from .store import ReviewStore


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def _agreement(ratings: dict[str, dict], level: str) -> dict[str, Any]:
    """alpha over all raters, kappa per pair (`kappa`: the one pair's, or the mean of the pairs)."""
    units = units_of(ratings)
    pairable = [u for u in units if len([v for v in u if v is not None]) >= 2]
    pairs = pairwise_kappas(ratings)
    ks = [p["kappa"] for p in pairs if p["kappa"] is not None]
    agree = [len(set(u)) == 1 for u in pairable]
    return {"alpha": _r(krippendorff_alpha(units, level)), "kappa": pairs[0]["kappa"] if len(pairs) == 1 else _r(sum(ks) / len(ks)) if ks else None,
            "kappa_pairs": pairs, "units": len(pairable), "values": sum(len(u) for u in pairable),
            "percent_agreement": _r(sum(agree) / len(agree)) if agree else None}


def _judge_vs_human(judge: dict, human: dict[str, dict], level: str) -> dict[str, Any] | None:
    """The judge as one more rater: each (unit, reviewer) rating paired with the judge's (ordinal
    aspects through agreement.judge_calibration, the computation `ptdata judge-calibrate` runs)."""
    pairs = [(judge[u], v) for per in human.values() for u, v in per.items() if u in judge]
    if not pairs:
        return None
    j, h = [p[0] for p in pairs], [p[1] for p in pairs]
    if level == "ordinal" and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in j + h):
        c = judge_calibration(j, h)
        return {k: c[k] for k in ("alpha", "kappa", "pairs", "percent_agreement", "spearman")}
    return {"alpha": _r(krippendorff_alpha([[a, b] for a, b in pairs], level)),
            "kappa": _r(cohen_kappa(j, h)), "pairs": len(pairs),
            "percent_agreement": _r(sum(a == b for a, b in pairs) / len(pairs))}


def _judge_choice(scores: dict, aspects: list[str]) -> str | None:
    if isinstance(scores.get("judge.agrees"), (int, float)):
        return "chosen" if scores["judge.agrees"] >= 0.5 else "rejected"
    c = [scores[f"chosen.{a}"] for a in aspects if isinstance(scores.get(f"chosen.{a}"), (int, float))]
    r = [scores[f"rejected.{a}"] for a in aspects if isinstance(scores.get(f"rejected.{a}"), (int, float))]
    if not c or not r:
        return None
    m = sum(c) / len(c) - sum(r) / len(r)
    return "chosen" if m > 0 else "rejected" if m < 0 else "tie"


def queue_stats(store: ReviewStore, name: str) -> dict[str, Any]:
    q = store.queue(name)
    if q is None:
        raise KeyError(name)
    rubric = Rubric.model_validate({k: v for k, v in q["rubric"].items() if k != "version"})
    rows = store.answers_of(q["id"])
    seqs = sorted({a["item_seq"] for a in rows})
    item = {it["seq"]: it for it in store.items_of(q["id"], seqs)} if seqs else {}
    aspects = rubric.aspects
    ratings: dict[str, dict[str, dict]] = {a: defaultdict(dict) for a in aspects}
    judge: dict[str, dict] = {a: {} for a in aspects}
    decision, choice, labels = defaultdict(dict), defaultdict(dict), defaultdict(lambda: defaultdict(dict))
    judge_choice: dict[int, str] = {}
    left = defaultdict(lambda: [0, 0])  # reviewer -> [left picks, non-tie choices]
    seconds, decisions = [], Counter()
    for a in rows:
        it, ans, who = item[a["item_seq"]], a["answer"], a["reviewer"]
        scores = (it["record"] or {}).get("scores") or {}
        pair = it["kind"] == "preference"
        for key, v in (ans.get("ratings") or {}).items():
            side, _, asp = key.partition(".") if pair else ("", "", key)
            if asp in ratings:
                unit = f"{a['item_seq']}:{side}" if pair else str(a["item_seq"])
                ratings[asp][who][unit] = v
                js = scores.get(f"{side}.{asp}" if pair else asp)
                if isinstance(js, (int, float)) and not isinstance(js, bool):
                    judge[asp][unit] = js
        if ans.get("decision"):
            decision[who][a["item_seq"]] = ans["decision"]
            decisions[ans["decision"]] += 1
        for qid, picked in (ans.get("labels") or {}).items():
            for o in next((qq.options for qq in rubric.of("labels") if qq.id == qid), []):
                labels[f"{qid}:{o}"][who][a["item_seq"]] = o in picked
        if pair and ans.get("choice"):
            choice[who][a["item_seq"]] = ans["choice"]
            jc = _judge_choice(scores, aspects)
            if jc is not None:
                judge_choice[a["item_seq"]] = jc
            if ans["choice"] != "tie":
                picked_left = (ans["choice"] == "chosen") != bool(a["swap"])
                left[who][0] += picked_left
                left[who][1] += 1
        if isinstance(ans.get("seconds"), (int, float)):
            seconds.append(ans["seconds"])
    per_aspect = {}
    for asp in aspects:
        per_aspect[asp] = {"human": _agreement(ratings[asp], "ordinal"),
                           "judge": _judge_vs_human(judge[asp], ratings[asp], "ordinal") if judge[asp] else None}
    tot_left, tot = sum(v[0] for v in left.values()), sum(v[1] for v in left.values())
    out = {"queue": name, "items": q["items"], "overlap": q["overlap"], "rubric_version": q["rubric_version"],
           "answers": len(rows), "items_answered": len(seqs),
           "progress": [{"reviewer": p["name"], "done": p["done"], "total": p["total"]} for p in store.progress(q["id"])],
           "aspects": per_aspect,
           "decision": _agreement(decision, "nominal") if decision else None, "decisions": dict(decisions),
           "choice": _agreement(choice, "nominal") if choice else None,
           "judge_choice": _judge_vs_human(judge_choice, choice, "nominal") if judge_choice else None,
           "labels": {k: _agreement(v, "nominal") for k, v in sorted(labels.items())},
           "position_bias": {"left_share": _r(tot_left / tot) if tot else None, "choices": tot,
                             "per_reviewer": {w: {"left_share": _r(v[0] / v[1]) if v[1] else None, "choices": v[1]}
                                              for w, v in sorted(left.items())}},
           "median_seconds": _r(sorted(seconds)[len(seconds) // 2]) if seconds else None}
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _table(head: list[str], rows: list[list[Any]], cls: str = "") -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='{cls}'><tr>{th}</tr>{body}</table>"


def stats_html(s: dict[str, Any]) -> str:
    """The agreement page's body (the app's agreement page and `ptdata review report`)."""
    e = html.escape
    parts = [f"<h1>Agreement: {e(s['queue'])}</h1>",
             f"<p class='big'>{s['items_answered']:,} of {s['items']:,} records answered ({s['answers']:,} answers, overlap "
             f"{s['overlap']}); rubric {e(s['rubric_version'])}</p>",
             "<h2>Per aspect (ordinal)</h2>",
             _table(["aspect", "human alpha", "human kappa", "units", "agreement", "judge alpha", "judge kappa", "judge pairs"],
                    [[a, v["human"]["alpha"], v["human"]["kappa"], v["human"]["units"], v["human"]["percent_agreement"],
                      (v["judge"] or {}).get("alpha"), (v["judge"] or {}).get("kappa"), (v["judge"] or {}).get("pairs")]
                     for a, v in s["aspects"].items()], "agreement")]
    names = list(s["aspects"])
    def bars(title: str, got: list[dict | None], color: str) -> str:
        vals = [(g or {}).get("alpha") for g in got]
        notes = ["(no scores)" if g is None else "(undefined: no variation)" if v is None else "(below 0)" if v < 0 else ""
                 for g, v in zip(got, vals)]
        return hbar_chart(title, names, [max(0.0, v or 0.0) for v in vals], notes, color=color)

    parts.append(bars("Krippendorff's alpha between reviewers, per aspect (1 is full agreement, 0 chance)",
                      [s["aspects"][a]["human"] for a in names], "#4C78A8"))
    if any(s["aspects"][a]["judge"] for a in names):
        parts.append(bars("Krippendorff's alpha, judge vs reviewers, per aspect",
                          [s["aspects"][a]["judge"] for a in names], "#F58518"))
    other = [[n, v["alpha"], v["kappa"], v["units"], v["percent_agreement"]] for n, v in
             (("decision (accept/reject)", s["decision"]), ("pair choice", s["choice"])) if v]
    if s.get("judge_choice"):
        j = s["judge_choice"]
        other.append(["pair choice: judge vs reviewers", j["alpha"], j["kappa"], j["pairs"], j["percent_agreement"]])
    other += [[f"label {k}", v["alpha"], v["kappa"], v["units"], v["percent_agreement"]] for k, v in s["labels"].items()]
    if other:
        parts += ["<h2>Decisions, choices, labels (nominal)</h2>", _table(["question", "alpha", "kappa", "units", "agreement"], other)]
    kp = [[a, " · ".join(p["raters"]), p["items"], p["kappa"]] for a in names for p in s["aspects"][a]["human"]["kappa_pairs"]]
    if kp:
        parts += ["<h3>Cohen's kappa per pair of reviewers</h3>", _table(["aspect", "reviewers", "items", "kappa"], kp)]
    pb = s["position_bias"]
    parts += ["<h2>Position bias of pair choices</h2>",
              f"<p>share of picks of the left side: <b>{e(_fmt(pb['left_share']))}</b> over {pb['choices']:,} choices "
              "(0.5 is none; sides are swapped for every other reviewer of a pair)</p>",
              _table(["reviewer", "left share", "choices"], [[w, v["left_share"], v["choices"]] for w, v in pb["per_reviewer"].items()])]
    parts += ["<h2>Progress</h2>", _table(["reviewer", "done", "assigned"], [[p["reviewer"], p["done"], p["total"]] for p in s["progress"]])]
    return "".join(parts)


def write_report(store: ReviewStore, name: str, path: Path) -> dict:
    s = queue_stats(store, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(f"ptdata review: {name}", stats_html(s), s), encoding="utf-8")
    return s
