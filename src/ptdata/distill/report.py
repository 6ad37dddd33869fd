"""Calibration: precision of kept labels and coverage against the confidence threshold, from
every decision whose prompt has a reference; and the training set's growth per round."""
from __future__ import annotations

from pathlib import Path

from ..report.html import hbar_chart, line_chart, page
from .confidence import Combiner

GRID = [round(i / 20, 2) for i in range(21)]


def calibration(decisions: list[dict], combiner: Combiner) -> dict:
    """For each threshold t: coverage = share of referenced prompts whose confidence >= t,
    precision = share of those whose majority answer equals the reference."""
    rows = [d for d in decisions if d.get("correct") is not None or (d.get("reference") is not None and "confidence" in d)]
    scored = [(d.get("confidence", 0.0), bool(d.get("correct"))) for d in rows]
    table = []
    for t in GRID:
        kept = [c for s, c in scored if s >= t]
        table.append({"threshold": t, "kept": len(kept), "correct": sum(kept),
                      "coverage": round(len(kept) / len(scored), 6) if scored else None,
                      "precision": round(sum(kept) / len(kept), 6) if kept else None})
    return {"with_reference": len(scored), "table": table}


def write_calibration(summary: dict, path: Path) -> Path:
    cal = summary["calibration"]
    t = cal["table"]
    parts = [f"<h1>ptdata distill</h1><p class='big'>{summary['prompts_in']:,} prompts → <b>{summary['labeled']:,} labeled</b>"
             f" · {summary['rejected']:,} without a label (reasons in <code>rejects.jsonl</code>) · training set "
             f"{summary['train_size']:,} records</p>", "<h2>Calibration</h2>"]
    if cal["with_reference"]:
        parts.append(f"<p>{cal['with_reference']:,} decisions on prompts with a reference answer.</p>")
        parts.append(line_chart("precision and coverage of kept labels against the threshold",
                                [r["threshold"] for r in t], {"precision": [r["precision"] for r in t],
                                                              "coverage": [r["coverage"] for r in t]}, "confidence threshold"))
        fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
        rows = "".join(f"<tr><td>{r['threshold']:g}</td><td>{r['kept']:,}</td><td>{r['correct']:,}</td>"
                       f"<td>{fmt(r['coverage'])}</td><td>{fmt(r['precision'])}</td></tr>" for r in t)
        parts.append("<table><tr><th>threshold</th><th>kept</th><th>correct</th><th>coverage</th><th>precision</th></tr>"
                     f"{rows}</table>")
    else:
        parts.append("<p class='muted'>no prompt has a reference answer: no calibration.</p>")
    g = summary["growth"]
    parts.append("<h2>Training set per round</h2>")
    parts.append(hbar_chart("training set size after each round", [f"round {r['round']}" for r in g],
                            [r["train_after"] for r in g], [f"(+{r['added']:,})" for r in g], color="#54A24B"))
    rows = "".join(f"<tr><td>{r['round']}</td><td>{r['train_before']:,}</td><td>{r['labels']:,}</td><td>{r['added']:,}</td>"
                   f"<td>{r['replaced']:,}</td><td>{r['duplicates']:,}</td><td>{r['human_kept']:,}</td>"
                   f"<td>{r['low_confidence']:,}</td><td>{r['train_after']:,}</td></tr>" for r in g)
    parts.append("<table><tr><th>round</th><th>before</th><th>labels</th><th>added</th><th>replaced</th><th>duplicates</th>"
                 f"<th>human kept</th><th>not confident</th><th>after</th></tr>{rows}</table>")
    path.write_text(page("ptdata distill", "".join(parts), summary), encoding="utf-8")
    return path


__all__ = ["calibration", "write_calibration"]
