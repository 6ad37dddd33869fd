"""`ptdata flywheel report`: the loop turning, per model version: interactions, feedback rate,
satisfaction (thumbs-up share, mean rating), correction rate, and records mined per version.
Model-version labels come from any client with a write key: every value is HTML-escaped."""
from __future__ import annotations

import html
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

from ..report.html import hbar_chart, page
from .mine import list_versions
from .store import Store


def loop_stats(store: Store) -> dict:
    rows = list(store.interactions())
    events = store.feedback_for()
    model_of = {r["id"]: r.get("model_version") or "(none)" for r in rows}
    per: dict[str, dict] = defaultdict(lambda: {"interactions": 0, "with_feedback": 0, "thumbs_up": 0, "thumbs_down": 0,
                                                "ratings": [], "corrections": 0, "errors": 0, "first": None, "last": None})
    fb_by: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        fb_by[e["interaction_id"]].append(e)
    for r in rows:
        p = per[model_of[r["id"]]]
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
    out = {}
    for mv, p in sorted(per.items(), key=lambda kv: (kv[1]["first"], kv[0])):  # in the order they were deployed
        thumbs = p["thumbs_up"] + p["thumbs_down"]
        out[mv] = {"interactions": p["interactions"], "errors": p["errors"], "first_seen": p["first"], "last_seen": p["last"],
                   "feedback_rate": round(p["with_feedback"] / p["interactions"], 4) if p["interactions"] else None,
                   "thumbs_up_share": round(p["thumbs_up"] / thumbs, 4) if thumbs else None,
                   "mean_rating": round(sum(p["ratings"]) / len(p["ratings"]), 4) if p["ratings"] else None,
                   "correction_rate": round(p["corrections"] / p["interactions"], 4) if p["interactions"] else None}
    return {"model_versions": out, "dataset_versions": [
        {"name": v["name"], "parent": v["parent"], "created_at": v["created_at"], "sft": v["counts"].get("sft", 0),
         "pairs": v["counts"].get("pairs", 0), "interactions": v["counts"].get("interactions", 0)} for v in list_versions(store)]}


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
                          f"{m['errors']:,}", m["feedback_rate"], m["thumbs_up_share"], m["mean_rating"], m["correction_rate"]]
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells(n, m)) + "</tr>" for n, m in mv.items())
    parts.append("<table><tr><th>model version</th><th>served (UTC)</th><th>interactions</th><th>errors</th><th>feedback rate</th>"
                 f"<th>thumbs-up share</th><th>mean rating</th><th>correction rate</th></tr>{rows}</table>")
    dv = s["dataset_versions"]
    parts.append("<h2>Dataset versions mined</h2>")
    parts.append(hbar_chart("records per dataset version (SFT + pairs)", [d["name"] for d in dv],
                            [d["sft"] + d["pairs"] for d in dv], [f"({d['sft']} sft, {d['pairs']} pairs)" for d in dv],
                            color="#4C78A8"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page("ptdata flywheel report", "".join(parts), s), encoding="utf-8")
    return s
