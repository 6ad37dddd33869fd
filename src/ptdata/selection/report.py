"""The selection report: methods side by side on one pool, next to the baselines.

Selectors often do no better than random or longest-response selection at scale (Xia et al.
EMNLP 2025; Ivison et al. 2025), so every method is shown beside those two: what each keeps,
how much the kept sets overlap, the kept records' response length and scores, each score's rank
correlation with response length (a score that mostly measures length is a length selector),
each score's distribution, and the top and bottom 3 records of each score.
"""
from __future__ import annotations

import html
from typing import Any, Callable

import numpy as np

from . import methods as M

EMBEDDING_METHODS = ("kcenter", "facility", "target")
METHODS = ("score", "random", "longest") + EMBEDDING_METHODS


def pick(method: str, k: int, *, scores: np.ndarray, lengths: np.ndarray, emb: Callable[[], np.ndarray] | None = None,
         targets: Callable[[], np.ndarray] | None = None, seed: int = 0) -> np.ndarray:
    """The positions `method` keeps from the pool, k of them, in the order chosen."""
    n = len(lengths)
    if method == "score":
        return M.by_score(scores, k)
    if method == "random":
        return M.random_pick(n, k, seed)
    if method == "longest":
        return M.longest(lengths, k)
    if emb is None:
        raise ValueError(f"method {method} needs embeddings")
    if method == "kcenter":
        first = int(M.by_score(scores, 1)[0]) if n and not np.isnan(scores).all() else 0
        return M.kcenter_greedy(emb(), k, first)
    if method == "facility":
        return M.facility_location(emb(), k)
    if method == "target":
        if targets is None:
            raise ValueError("method target needs a targets file (the example prompts to select toward)")
        return M.nearest_to_targets(emb(), targets(), k)
    raise ValueError(f"unknown selection method {method!r}; one of {', '.join(METHODS)}")


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), nd)


def compare(chosen: dict[str, np.ndarray], lengths: np.ndarray, scores: dict[str, np.ndarray],
            examples: Callable[[int], dict] | None = None) -> dict[str, Any]:
    """Figures for each method's kept set and each score; `examples(i)` describes record i."""
    n = len(lengths)
    sets = {m: set(map(int, idx)) for m, idx in chosen.items()}
    out: dict[str, Any] = {"pool": n, "pool_mean_length": _r(lengths.mean() if n else None, 1), "methods": {}, "scores": {}}
    for m, idx in chosen.items():
        idx = np.asarray(idx, dtype=np.int64)
        row: dict[str, Any] = {"kept": len(idx), "mean_length": _r(lengths[idx].mean() if len(idx) else None, 1),
                               "median_length": _r(np.median(lengths[idx]) if len(idx) else None, 1)}
        row["mean_scores"] = {s: _r(np.nanmean(v[idx]) if len(idx) and not np.isnan(v[idx]).all() else None)
                              for s, v in scores.items()}
        row["overlap"] = {o: _r(len(sets[m] & sets[o]) / max(1, len(sets[m] | sets[o])), 3) for o in chosen if o != m}
        out["methods"][m] = row
    for s, v in scores.items():
        present = ~np.isnan(v)
        hist = None
        if present.any():
            lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
            counts, edges = np.histogram(v[present], bins=10, range=(lo, hi if hi > lo else lo + 1))
            hist = {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist()}
        order = M.by_score(v, n)[: int(present.sum())]
        out["scores"][s] = {
            "present": int(present.sum()), "spearman_with_length": _r(M.spearman(v, lengths)), "histogram": hist,
            "top": [examples(int(i)) | {"score": _r(v[i])} for i in order[:3]] if examples else [],
            "bottom": [examples(int(i)) | {"score": _r(v[i])} for i in order[::-1][:3]] if examples else [],
        }
    return out


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def to_html(rep: dict[str, Any], title: str = "ptdata selection report") -> str:
    """A self-contained page (no script, no network); every value escaped."""
    from ..report.html import hbar_chart, page

    ms = rep["methods"]
    names = list(ms)
    score_names = list(rep["scores"])
    parts = [f"<h1>{_e(title)}</h1>",
             f"<p>pool: {rep['pool']:,} records, mean response length {_e(rep['pool_mean_length'])} characters.</p>",
             "<h2>Methods</h2><table><tr><th>method</th><th>kept</th><th>mean length</th><th>median length</th>"
             + "".join(f"<th>mean {_e(s)}</th>" for s in score_names) + "</tr>"]
    for m in names:
        r = ms[m]
        parts.append(f"<tr><td>{_e(m)}</td><td>{r['kept']:,}</td><td>{_e(r['mean_length'])}</td><td>{_e(r['median_length'])}</td>"
                     + "".join(f"<td>{_e(r['mean_scores'].get(s))}</td>" for s in score_names) + "</tr>")
    parts.append("</table><h2>Overlap of kept sets (Jaccard)</h2><table><tr><th></th>"
                 + "".join(f"<th>{_e(m)}</th>" for m in names) + "</tr>")
    for m in names:
        parts.append(f"<tr><th>{_e(m)}</th>" + "".join(f"<td>{'1' if o == m else _e(ms[m]['overlap'].get(o))}</td>" for o in names) + "</tr>")
    parts.append("</table>")
    parts.append(hbar_chart("mean response length of the kept records (characters)", names,
                            [ms[m]["mean_length"] or 0 for m in names]))
    parts.append("<h2>Scores</h2><table><tr><th>score</th><th>records with it</th><th>Spearman with response length</th></tr>"
                 + "".join(f"<tr><td>{_e(s)}</td><td>{v['present']:,}</td><td>{_e(v['spearman_with_length'])}</td></tr>"
                           for s, v in rep["scores"].items()) + "</table>")
    for s, v in rep["scores"].items():
        h = v["histogram"]
        if h:
            labels = [f"{h['edges'][i]:.3g}-{h['edges'][i + 1]:.3g}" for i in range(len(h["counts"]))]
            parts.append(hbar_chart(f"{s}: distribution", labels, h["counts"]))
        for side in ("top", "bottom"):
            if v[side]:
                parts.append(f"<h3>{_e(s)}: {side} 3</h3><table><tr><th>score</th><th>id</th><th>prompt</th><th>response</th></tr>"
                             + "".join(f"<tr><td>{_e(x['score'])}</td><td><code>{_e(x.get('id', '')[:12])}</code></td>"
                                       f"<td>{_e(x.get('prompt'))}</td><td>{_e(x.get('response'))}</td></tr>" for x in v[side])
                             + "</table>")
    return page(title, "".join(parts), rep)
