"""`ptdata judge-calibrate`: can a judge be trusted? Its ratings against people's on the same records."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import orjson
import typer

from .cli import EXIT_USAGE, FromOpt, JsonOpt, _read_options, app, err, out, print_json
from .io import guard_outputs
from .reader import RecordReader
from .review.agreement import judge_calibration


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _store_ratings(url: str):
    """record -> the mean 1-5 rating users gave the interactions it was mined from (None if none)."""
    from .flywheel.store import Store

    st = Store(url)

    def rating(rec) -> float | None:
        ids = rec.meta.get("interaction_ids") or []
        vals = [e["value"] for e in st.feedback_for(list(ids)) if e["kind"] == "rating"] if ids else []
        return sum(vals) / len(vals) if vals else None
    return rating


@app.command("judge-calibrate")
def judge_calibrate_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="Records carrying both the judge's and people's ratings "
                                                 "(e.g. a `ptdata judge` run over a `ptdata review export`).")],
    aspect: Annotated[Optional[list[str]], typer.Option("--aspect", help="Aspect to compare (default: every aspect with both).")] = None,
    judge_prefix: Annotated[str, typer.Option("--judge-prefix", help="Judge score key = prefix + aspect.")] = "",
    human_prefix: Annotated[str, typer.Option("--human-prefix", help="Human score key = prefix + aspect.")] = "human.",
    keep_min: Annotated[float, typer.Option("--human-keep-min", help="People keep a record whose rating is at least this.")] = 4.0,
    store: Annotated[Optional[str], typer.Option("--store", help="Flywheel store URL: people's ratings are the 1-5 rating "
                                                 "feedback on each record's meta.interaction_ids (records from `flywheel mine`).")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write the figures as JSON here too.")] = None,
    fmt: FromOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Per aspect: Krippendorff's alpha, Cohen's kappa, Spearman of the judge vs people, and the judge threshold that best reproduces the people's keep/drop decision."""
    if store and not aspect:
        err.print("error: --store needs --aspect (the judge's score to compare with the users' ratings)", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    if report:
        guard_outputs(inputs, files=[report])  # the report never replaces an input
    ro = _read_options(fmt, None, None, None, None, 100_000, False, True, 16 * 1024 * 1024)
    flywheel = _store_ratings(store) if store else None
    pairs: dict[str, tuple[list[float], list[float]]] = {}
    n_in = rejected = 0
    for path in inputs:
        for rec, _ in RecordReader(path, ro):
            n_in += 1
            if rec is None:
                rejected += 1
                continue
            names = aspect or sorted(k[len(human_prefix):] for k in rec.scores if k.startswith(human_prefix))
            for a in names:
                j = _num(rec.scores.get(judge_prefix + a))
                h = flywheel(rec) if flywheel else _num(rec.scores.get(human_prefix + a))
                if j is not None and h is not None:
                    pairs.setdefault(a, ([], []))
                    pairs[a][0].append(j)
                    pairs[a][1].append(h)
    if not pairs:
        err.print(f"error: no record has both a judge rating ({judge_prefix}ASPECT) and a human one ({human_prefix}ASPECT)"
                  + (f" for {', '.join(aspect)}" if aspect else ""), highlight=False)
        raise typer.Exit(EXIT_USAGE if aspect else 1)
    res = {a: judge_calibration(j, h, [x >= keep_min for x in h]) for a, (j, h) in sorted(pairs.items())}
    summary = {"command": "judge-calibrate", "records_in": n_in, "rejected": rejected, "human_keep_min": keep_min, "aspects": res}
    if report:
        report.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    if as_json:
        print_json(summary)
        return
    for a, c in res.items():
        t = c.get("threshold") or {}
        out.print(f"{a}: {c['pairs']} pairs, alpha {c['alpha']}, kappa {c['kappa']} (quadratic {c['kappa_quadratic']}), "
                  f"Spearman {c['spearman']}; keep if judge >= {t.get('keep_if_at_least')}: kappa {t.get('kappa')}, "
                  f"accuracy {t.get('accuracy')}", highlight=False)
