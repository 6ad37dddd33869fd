"""A self-contained HTML report of a run: funnel per op, histograms, languages, dedup clusters,
decontamination hits. Charts are inline SVG: no JavaScript, no network, opens anywhere."""
from __future__ import annotations

import html
from pathlib import Path

import orjson

W, BAR_H, GAP = 640, 18, 6


def _esc(x: object) -> str:
    return html.escape(str(x))


def _value(v: float) -> str:
    """A bar's value as the tables print it: 1,234 or 3.5 or 33.33 (never rounded to a whole
    number the table contradicts, never float noise)."""
    if isinstance(v, int) or float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:,.2f}".rstrip("0").rstrip(".")


LABEL_CHARS = 48  # longer labels are shortened on the chart; the full label is in the bar's tooltip


def hbar_chart(title: str, labels: list[str], values: list[float], note: list[str] | None = None, color: str = "#4C78A8") -> str:
    """Horizontal bars, one per label, scaled to the largest value."""
    if not values:
        return f"<h3>{_esc(title)}</h3><p class='muted'>no data</p>"
    top = max(values) or 1
    shown = [lab if len(lab) <= LABEL_CHARS else lab[:LABEL_CHARS - 1] + "…" for lab in map(str, labels)]
    label_w = min(7 * LABEL_CHARS + 12, 7 * max(len(l) for l in shown) + 12)
    h = len(values) * (BAR_H + GAP) + GAP
    rows = []
    for i, (lab, short, v) in enumerate(zip(labels, shown, values)):
        y = GAP + i * (BAR_H + GAP)
        w = (W - label_w - 120) * v / top
        extra = f" {note[i]}" if note else ""
        rows.append(
            f"<text x='{label_w - 6}' y='{y + BAR_H - 5}' text-anchor='end'><title>{_esc(lab)}</title>{_esc(short)}</text>"
            f"<rect x='{label_w}' y='{y}' width='{max(w, 0.5):.1f}' height='{BAR_H}' fill='{color}'><title>{_esc(lab)}: {_value(v)}</title></rect>"
            f"<text x='{label_w + w + 4:.1f}' y='{y + BAR_H - 5}'>{_value(v)}{_esc(extra)}</text>")
    return f"<h3>{_esc(title)}</h3><svg width='{W + max(0, label_w - 260)}' height='{h}' class='chart'>{''.join(rows)}</svg>"


def _tick(x: float) -> str:
    """A bin edge as a person writes it: 0.35, 1,000, 1e9 (no float noise)."""
    if x >= 1e9:
        return f"{x:.0e}"
    return f"{int(x):,}" if float(x).is_integer() else f"{x:.4g}"


def histogram(title: str, bins: list[float], counts: list[int], color: str = "#F58518") -> str:
    """Vertical bars over bin ranges, with a count axis and each bin's edges under its edges."""
    if not counts or not sum(counts):
        return f"<h3>{_esc(title)}</h3><p class='muted'>no data</p>"
    top = max(counts)
    n = len(counts)
    left, plot_h = 56, 160
    bw = (W - left - 10) / n
    parts = [f"<line x1='{left - 4}' y1='10' x2='{left - 4}' y2='{10 + plot_h}' stroke='#999'/>"]
    for frac in (0, 0.5, 1):  # the count axis: 0, half, the tallest bar
        y = 10 + plot_h * (1 - frac)
        parts.append(f"<text x='{left - 8}' y='{y + 4:.1f}' text-anchor='end' class='tick'>{round(top * frac):,}</text>")
    for i, c in enumerate(counts):
        bh = plot_h * c / top
        x = left + i * bw
        lo, hi = bins[i], bins[i + 1]
        parts.append(f"<rect x='{x:.1f}' y='{10 + plot_h - bh:.1f}' width='{bw - 2:.1f}' height='{bh:.1f}' fill='{color}'>"
                     f"<title>[{_esc(_tick(lo))}, {_esc(_tick(hi))}): {c:,}</title></rect>")
    step = 1 if n <= 12 else 2
    for i in range(0, n + 1, step):  # edges under the edges
        parts.append(f"<text x='{left + i * bw - 1:.1f}' y='{plot_h + 26}' text-anchor='middle' class='tick'>{_esc(_tick(bins[i]))}</text>")
    return (f"<h3>{_esc(title)}</h3><svg width='{W}' height='{plot_h + 34}' class='chart'>{''.join(parts)}</svg>"
            f"<p class='muted'>count of kept records per bin; hover a bar for its range</p>")


def _funnel_table(ops: list[dict]) -> str:
    """One row per op; ops that derive records (samples, evolutions, pairs) get an 'added'
    column, and model-using ops their calls, cache hits and tokens."""
    extra = any(o.get("added") for o in ops)
    model = any(o.get("counters") for o in ops)
    head = "<tr><th>op</th><th>in</th>" + ("<th>added</th>" if extra else "") + "<th>kept</th><th>dropped (by reason)</th>" \
        + "<th>seconds</th>" + ("<th>model calls</th>" if model else "") + "</tr>"
    rows = [head]
    for o in ops:
        reasons = ", ".join(f"{_esc(k)} {v:,}" for k, v in sorted(o["dropped"].items(), key=lambda x: -x[1])) or "–"
        secs = "" if o.get("seconds") is None else f"{o['seconds']:.2f}"
        added = f"<td>{o.get('added', 0):,}</td>" if extra else ""
        calls = (f"<td>{_esc(', '.join(f'{k} {v:,}' for k, v in (o.get('counters') or {}).items()))}</td>" if model else "")
        rows.append(f"<tr><td>{_esc(o['op'])}</td><td>{o['in']:,}</td>{added}<td>{o['kept']:,}</td><td>{reasons}</td>"
                    f"<td>{secs}</td>{calls}</tr>")
    return "<table>" + "".join(rows) + "</table>"


def render(stats: dict) -> str:
    ops = stats["ops"]
    parts = [
        f"<h1>ptdata run: {_esc(stats['recipe'])}</h1>",
        f"<p class='big'>{stats['records_in']:,} records in → <b>{stats['kept']:,} kept</b> · {stats['rejected']:,} rejected "
        f"({stats['rejected'] / max(1, stats['records_in']):.1%}), every one with a reason in <code>rejects.jsonl</code></p>",
        "<h2>Funnel</h2>",
        hbar_chart("records kept after each op", [o["op"] for o in ops], [o["kept"] for o in ops],
                   [f"(-{o['in'] - o['kept']:,})" if o["in"] - o["kept"] else "" for o in ops]),
        _funnel_table(ops),
    ]
    h = stats.get("histograms", {})
    parts.append("<h2>Kept records</h2>")
    if "length" in h:
        parts.append(histogram("response length (characters)", h["bins_length"], h["length"]))
    for key in sorted(k for k in h if k.startswith("score:")):
        parts.append(histogram(f"score {key[6:]}", h[key]["bins"], h[key]["counts"], "#54A24B"))
    langs = stats.get("kept_languages", {})
    parts.append(hbar_chart("language mix", list(langs)[:20], list(langs.values())[:20], color="#B279A2"))
    kinds = stats.get("kept_kinds", {})
    if kinds:
        parts.append(hbar_chart("kinds", list(kinds), list(kinds.values()), color="#72B7B2"))
    flags = stats.get("kept_flags", {})
    if flags:
        parts.append(hbar_chart("flags on kept records (validation warnings)", list(flags), list(flags.values()), color="#E45756"))
    pii = stats.get("kept_pii_redactions", {})
    if pii:
        parts.append(hbar_chart("PII redacted in kept records, by type", list(pii), list(pii.values()), color="#9D755D"))
    dedup = [(o["op"], o["report"]) for o in ops if "report" in o]
    if dedup:
        parts.append("<h2>Global steps</h2>")
    for name, rep in dedup:
        sizes = rep.get("cluster_sizes") or rep.get("group_sizes")
        summary = ", ".join(f"{k}: {v:,}" if isinstance(v, int) else f"{k}: {v}" for k, v in rep.items() if not isinstance(v, dict))
        parts.append(f"<h3>{_esc(name)}</h3><p>{_esc(summary)}</p>")
        if sizes:
            ks = sorted(sizes, key=int)
            parts.append(hbar_chart(f"{name}: clusters by size (records per cluster)", [f"size {k}" for k in ks], [sizes[k] for k in ks], color="#E45756"))
        if isinstance(rep.get("baselines"), dict):  # select: the method beside random and longest-response selection
            rows = list(rep["baselines"].items())
            cols = list(rows[0][1]) if rows else []
            parts.append("<table><tr><th>selection</th>" + "".join(f"<th>{_esc(c.replace('_', ' '))}</th>" for c in cols) + "</tr>"
                         + "".join(f"<tr><td>{_esc(m)}</td>" + "".join(f"<td>{_esc('' if v.get(c) is None else v.get(c))}</td>" for c in cols) + "</tr>"
                                   for m, v in rows) + "</table>")
    cont = stats.get("contamination", {})
    parts.append("<h2>Decontamination</h2>")
    benches, items = cont.get("benchmarks") or {}, cont.get("items") or {}
    if benches:
        layer_names = sorted({k for b in benches.values() for k in b["by_layer"]})
        head = "".join(f"<th>found by {_esc(k)}</th>" for k in layer_names)
        rows = "".join(f"<tr><td>{_esc(name)}</td><td>{b['items'] if b['items'] is not None else ''}</td><td>{b['found']:,}</td>"
                       + "".join(f"<td>{b['by_layer'].get(k, 0):,}</td>" for k in layer_names) + "</tr>"
                       for name, b in benches.items())
        parts.append(f"<table><tr><th>benchmark</th><th>items</th><th>items found</th>{head}</tr>{rows}</table>")
        per_layer = ", ".join(f"{_esc(k)}: {v:,}" for k, v in (cont.get("records_by_layer") or {}).items())
        parts.append(f"<p>records flagged per layer: {per_layer or 'none'}</p>")
    if items:
        rows = "".join(f"<tr><td>{_esc(item)}</td><td>{len(hits)}</td><td><code>"
                       + _esc(", ".join(f"{h['id'][:12]} ({h['layer']} {h['score']})" for h in hits[:5])) + "</code></td></tr>"
                       for item, hits in list(items.items())[:500])
        parts.append(f"<table><tr><th>benchmark item</th><th>records</th><th>records (layer, score)</th></tr>{rows}</table>")
    elif not benches:
        parts.append("<p class='muted'>no decontaminate op in this recipe.</p>")
    else:
        parts.append("<p class='muted'>no benchmark item found in the data.</p>")
    return page(f"ptdata report: {stats['recipe']}", "".join(parts), stats)


STYLE = ("body{font:14px/1.45 system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}"
         "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}"
         "th{background:#f4f4f4}.chart text{font-size:11px}.tick{fill:#555}.muted{color:#888}.big{font-size:17px}code{font-size:12px}")


def page(title: str, body: str, data: dict | None = None) -> str:
    """A whole self-contained document; `data` is appended as collapsible JSON."""
    raw = (f"<details><summary>data</summary><pre>{_esc(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())}</pre></details>"
           if data is not None else "")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}{raw}</body></html>")


COLORS = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2")


def line_chart(title: str, xs: list[float], series: dict[str, list[float | None]], x_label: str, y_max: float = 1.0) -> str:
    """Lines over a shared x axis (e.g. precision and coverage against a threshold), 0..y_max."""
    if not xs:
        return f"<h3>{_esc(title)}</h3><p class='muted'>no data</p>"
    ph, left, right = 200, 40, 130
    x0, x1 = min(xs), max(xs)
    sx = lambda x: left + (W - left - right) * ((x - x0) / ((x1 - x0) or 1))  # noqa: E731
    sy = lambda y: 10 + ph * (1 - y / y_max)  # noqa: E731
    out = [f"<line x1='{left}' y1='{sy(0)}' x2='{W - right}' y2='{sy(0)}' stroke='#999'/>",
           f"<line x1='{left}' y1='{sy(0)}' x2='{left}' y2='{sy(y_max)}' stroke='#999'/>"]
    for t in (0, 0.25, 0.5, 0.75, 1):
        out.append(f"<text x='{left - 4}' y='{sy(t * y_max) + 4:.1f}' text-anchor='end' class='tick'>{t * y_max:g}</text>")
    for i, x in enumerate(xs):
        if len(xs) <= 11 or i % max(1, len(xs) // 10) == 0:
            out.append(f"<text x='{sx(x):.1f}' y='{ph + 26}' text-anchor='middle' class='tick'>{x:g}</text>")
    out.append(f"<text x='{(W - right + left) / 2:.0f}' y='{ph + 42}' text-anchor='middle'>{_esc(x_label)}</text>")
    for k, (name, ys) in enumerate(series.items()):
        c = COLORS[k % len(COLORS)]
        pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys) if y is not None)
        out.append(f"<polyline fill='none' stroke='{c}' stroke-width='2' points='{pts}'/>")
        out.append(f"<text x='{W - right + 8}' y='{24 + 16 * k}' fill='{c}'>{_esc(name)}</text>")
    return f"<h3>{_esc(title)}</h3><svg width='{W}' height='{ph + 50}' class='chart'>{''.join(out)}</svg>"


def write_report(stats: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(stats), encoding="utf-8")
    return path
