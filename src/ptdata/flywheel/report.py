"""`ptdata flywheel report`: the loop turning, per model version and per ISO week (UTC):
interactions, feedback rate, satisfaction (thumbs-up share, mean rating), correction rate and
records mined (counted by the model version and week of the interaction a record came from),
the dataset version each model version was trained on (`flywheel deploy`), the evaluations
between consecutive model versions (`flywheel eval`), and the records per dataset version.
Model-version labels come from any client with a write key: every value is HTML-escaped (the
embedded JSON too), and no prompt or answer text is in the report."""
from __future__ import annotations

import html
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from ..report.html import hbar_chart, page
from .mine import list_versions
from .store import Store, version_records


def _acc() -> dict:
    return {"interactions": 0, "with_feedback": 0, "thumbs_up": 0, "thumbs_down": 0, "ratings": [], "corrections": 0,
            "errors": 0, "first": None, "last": None, "records_mined": 0}


def _rates(p: dict) -> dict:
    thumbs = p["thumbs_up"] + p["thumbs_down"]
    return {"interactions": p["interactions"], "errors": p["errors"],
            "feedback_rate": round(p["with_feedback"] / p["interactions"], 4) if p["interactions"] else None,
            "thumbs_up_share": round(p["thumbs_up"] / thumbs, 4) if thumbs else None,
            "mean_rating": round(sum(p["ratings"]) / len(p["ratings"]), 4) if p["ratings"] else None,
            "correction_rate": round(p["corrections"] / p["interactions"], 4) if p["interactions"] else None,
            "records_mined": p["records_mined"]}


def iso_week(t: float) -> str:
    y, w, _ = datetime.fromtimestamp(t, timezone.utc).isocalendar()
    return f"{y}-W{w:02d}"


EVAL_FIELDS = ("id", "created_at", "eval_set", "candidate_version", "current_version", "judge_model", "n", "wins", "ties",
               "losses", "win_rate", "ci_low", "ci_high", "gate", "passed")  # never the stored prompts and answers


def loop_stats(store: Store) -> dict:
    rows = list(store.interactions())
    events = store.feedback_for()
    model_of = {r["id"]: r.get("model_version") or "(none)" for r in rows}
    week_of = {r["id"]: iso_week(r["created_at"]) for r in rows}
    per: dict[str, dict] = defaultdict(_acc)
    weekly: dict[tuple[str, str], dict] = defaultdict(_acc)
    fb_by: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        fb_by[e["interaction_id"]].append(e)
    for r in rows:
        for p in (per[model_of[r["id"]]], weekly[(model_of[r["id"]], week_of[r["id"]])]):
            p["interactions"] += 1
            p["errors"] += r["status"] != 200
            p["first"] = r["created_at"] if p["first"] is None else min(p["first"], r["created_at"])
            p["last"] = r["created_at"] if p["last"] is None else max(p["last"], r["created_at"])
            evs = fb_by.get(r["id"], [])
            p["with_feedback"] += bool(evs)
            for e in evs:
                if e["kind"] == "thumbs":
                    p["thumbs_up" if e["value"] == "up" else "thumbs_down"] += 1
                elif e["kind"] == "rating":
                    p["ratings"].append(e["value"])
                elif e["kind"] == "correction":
                    p["corrections"] += 1
    # records mined, by the model version and week of the (first) interaction each record came from
    with store.engine.connect() as c:
        for (ids,) in c.execute(sa.select(version_records.c.interaction_ids)):
            iid = ids[0] if isinstance(ids, list) and ids else None
            if iid in model_of:
                per[model_of[iid]]["records_mined"] += 1
                weekly[(model_of[iid], week_of[iid])]["records_mined"] += 1
    trained_on = {d["model_version"]: d["trained_on"] for d in store.deployments()}
    out = {}
    for mv, p in sorted(per.items(), key=lambda kv: (kv[1]["first"], kv[0])):  # in the order they were deployed
        out[mv] = {**_rates(p), "first_seen": p["first"], "last_seen": p["last"], "trained_on": trained_on.get(mv)}
    first = {mv: m["first_seen"] for mv, m in out.items()}
    week_rows = [{"model_version": mv, "week": wk, **_rates(p)}
                 for (mv, wk), p in sorted(weekly.items(), key=lambda kv: (first[kv[0][0]], kv[0][0], kv[0][1]))]
    evals = [{k: e[k] for k in EVAL_FIELDS} for e in store.evaluations()]
    # model versions in order: as first served, then those only deployed or evaluated so far
    order = list(out)
    for e in sorted([(d["created_at"], d["model_version"]) for d in store.deployments()] +
                    [(e["created_at"], e["candidate_version"]) for e in evals]):
        if e[1] not in order:
            order.append(e[1])
    steps = []
    for prev, nxt in zip(order, order[1:]):
        hit = [e for e in evals if e["candidate_version"] == nxt and e["current_version"] == prev]
        steps.append({"from": prev, "to": nxt, "trained_on": trained_on.get(nxt), "evaluation": hit[-1] if hit else None})
    return {"model_versions": out, "weekly": week_rows, "deployments": store.deployments(), "evaluations": evals,
            "consecutive": steps, "dataset_versions": [
                {"name": v["name"], "parent": v["parent"], "created_at": v["created_at"], "sft": v["counts"].get("sft", 0),
                 "pairs": v["counts"].get("pairs", 0), "eval": v["counts"].get("eval", 0),
                 "interactions": v["counts"].get("interactions", 0)} for v in list_versions(store)]}


def _cells(values: list) -> str:
    return "<tr>" + "".join(f"<td>{html.escape('-' if c is None else str(c))}</td>" for c in values) + "</tr>"


def _rate(e: dict | None) -> str:
    if not e or e.get("win_rate") is None:
        return "-"
    return f"{e['win_rate']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]"


def _gate(e: dict | None) -> str:
    if not e or e.get("gate") is None:
        return "-"
    return f"{'pass' if e['passed'] else 'FAIL'} (gate {e['gate']:g})"


def _eval_cells(e: dict | None) -> list:
    """eval set, n, wins / ties / losses, win rate [CI], gate."""
    if not e:
        return ["-", "-", "-", "-", "-"]
    return [e["eval_set"], e["n"], f"{e['wins']} / {e['ties']} / {e['losses']}", _rate(e), _gate(e)]


def write_report(store: Store, path: Path) -> dict:
    s = loop_stats(store)
    mv = s["model_versions"]
    names = list(mv)
    pct = lambda v: 0.0 if v is None else v * 100  # noqa: E731
    parts = ["<h1>ptdata flywheel</h1>",
             f"<p class='big'>{sum(m['interactions'] for m in mv.values()):,} interactions over {len(mv)} model version(s); "
             f"{len(s['dataset_versions'])} dataset version(s) mined</p>",
             "<h2>Per model version, in the order they were deployed</h2>",
             hbar_chart("interactions", names, [mv[n]["interactions"] for n in names]),
             hbar_chart("feedback rate (% of interactions with feedback)", names, [pct(mv[n]["feedback_rate"]) for n in names],
                        color="#72B7B2"),
             hbar_chart("satisfaction: thumbs-up share (%)", names, [pct(mv[n]["thumbs_up_share"]) for n in names], color="#54A24B"),
             hbar_chart("mean rating (1-5)", names, [mv[n]["mean_rating"] or 0 for n in names], color="#F58518"),
             hbar_chart("correction rate (%)", names, [pct(mv[n]["correction_rate"]) for n in names], color="#E45756")]
    day = lambda t: "" if t is None else datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M")  # noqa: E731
    cells = lambda n, m: [n, f"{day(m['first_seen'])} – {day(m['last_seen'])}", f"{m['interactions']:,}",  # noqa: E731
                          f"{m['errors']:,}", m["feedback_rate"], m["thumbs_up_share"], m["mean_rating"], m["correction_rate"],
                          f"{m['records_mined']:,}", m["trained_on"]]
    rows = "".join(_cells(cells(n, m)) for n, m in mv.items())
    parts.append("<table id='models'><tr><th>model version</th><th>served (UTC)</th><th>interactions</th><th>errors</th>"
                 "<th>feedback rate</th><th>thumbs-up share</th><th>mean rating</th><th>correction rate</th>"
                 f"<th>records mined</th><th>trained on</th></tr>{rows}</table>")
    parts.append("<h2>Per model version and ISO week</h2>")
    rows = "".join(_cells([w["model_version"], w["week"], f"{w['interactions']:,}", w["feedback_rate"], w["thumbs_up_share"],
                           w["mean_rating"], w["correction_rate"], f"{w['records_mined']:,}"]) for w in s["weekly"])
    parts.append("<table id='weekly'><tr><th>model version</th><th>week</th><th>interactions</th><th>feedback rate</th>"
                 "<th>thumbs-up share</th><th>mean rating</th><th>correction rate</th><th>records mined</th></tr>"
                 f"{rows}</table>")
    parts.append("<h2>Evaluations between consecutive model versions</h2>"
                 "<p class='muted'>Held-out prompts, judged in both orders (a win only when both agree); "
                 "win rate (wins + ties/2)/n with a 95% Wilson interval.</p>")
    if s["consecutive"]:
        rows = "".join(_cells([st["from"], st["to"], st["trained_on"], *_eval_cells(st["evaluation"])])
                       for st in s["consecutive"])
        parts.append("<table id='consecutive'><tr><th>from</th><th>to</th><th>to: trained on</th><th>eval set</th><th>n</th>"
                     f"<th>wins / ties / losses</th><th>win rate [95% CI]</th><th>gate</th></tr>{rows}</table>")
    else:
        parts.append("<p class='muted'>one model version so far</p>")
    if s["evaluations"]:
        rows = "".join(_cells([day(e["created_at"]), e["candidate_version"], e["current_version"], e["judge_model"],
                               *_eval_cells(e)]) for e in s["evaluations"])
        parts.append("<h3>Every evaluation</h3><table id='evaluations'><tr><th>when (UTC)</th><th>candidate</th>"
                     "<th>against</th><th>judge</th><th>eval set</th><th>n</th><th>wins / ties / losses</th>"
                     f"<th>win rate [95% CI]</th><th>gate</th></tr>{rows}</table>")
    dv = s["dataset_versions"]
    parts.append("<h2>Dataset versions mined</h2>")
    parts.append(hbar_chart("records per dataset version (SFT + pairs)", [d["name"] for d in dv],
                            [d["sft"] + d["pairs"] for d in dv], [f"({d['sft']} sft, {d['pairs']} pairs)" for d in dv],
                            color="#4C78A8"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page("ptdata flywheel report", "".join(parts), s), encoding="utf-8")
    return s
