"""The end of a run: the kept shards concatenated into the output file (any format), rejects
merged, stats.json and report.html written, and _SUCCESS last."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import orjson

from .. import __version__
from ..convert import _concat
from ..formats import get_format
from ..io import RowWriter, split_name
from ..errors import RecordError
from ..ops.base import Drop
from ..records import Record
from .recipe import SUCCESS, Recipe
from .plan import Segment, recipe_hash
from .shards import _output_names, commit_file, load_bundle
from .histograms import PII_FLAG, Hist
from .worker import _reject


@dataclass
class RunResult:
    out_dir: Path
    kept_path: Path
    rejects_path: Path
    stats_path: Path
    report_path: Path | None
    stats: dict
    resumed_shards: int = 0

    @property
    def records_in(self) -> int:
        return self.stats["records_in"]

    @property
    def kept(self) -> int:
        return self.stats["kept"]

    @property
    def rejected(self) -> int:
        return self.stats["rejected"]


def _mark_done(result: "RunResult", recipe: Recipe, manifest: bytes) -> "RunResult":
    """The completion marker, written after every output is whole."""
    commit_file(result.out_dir / SUCCESS, lambda f: f.write(orjson.dumps(
        {"recipe": recipe.name, "recipe_hash": recipe_hash(recipe), "inputs": orjson.loads(manifest)["inputs"],
         "outputs": _output_names(recipe),
         "records_in": result.records_in, "kept": result.kept, "rejected": result.rejected, "ptdata": __version__},
        option=orjson.OPT_INDENT_2) + b"\n"))
    return result


def _finish(recipe: Recipe, segments: list[Segment], seg_stats: list[list[dict]], global_reports: dict, global_seconds: dict,
            work: Path, out_dir: Path, resumed: int) -> RunResult:
    """Final files from the shard files, in shard order (a shard's rejects, segment by segment,
    then the next shard's)."""
    n_shards = len(seg_stats[0])
    kept_path = out_dir / recipe.output.file
    rejects_path = out_dir / "rejects.jsonl"
    parts = _kept_parts(segments[-1], work, n_shards)
    unfit: list[bytes] = []
    if recipe.output.format == "ptdata" and split_name(kept_path) == ("jsonl", False):
        _concat(parts, kept_path)
    else:
        unfit = _write_kept(recipe, parts, kept_path)
    _concat([work / f"seg{s.index}" / f"{i:05d}.rejects.jsonl" for i in range(n_shards) for s in segments], rejects_path)
    stats = _merge_stats(recipe, segments, seg_stats, global_reports, global_seconds)
    if unfit:
        _add_write_rejects(stats, unfit, rejects_path)
    stats_path = out_dir / "stats.json"
    stats_path.write_bytes(orjson.dumps(stats, option=orjson.OPT_INDENT_2))
    report_path = None
    if recipe.output.report:
        from ..report.html import write_report

        report_path = write_report(stats, out_dir / "report.html")
    return RunResult(out_dir, kept_path, rejects_path, stats_path, report_path, stats, resumed)


def _kept_parts(last: Segment, work: Path, n_shards: int) -> list[tuple[Path, np.ndarray | None]]:
    """Each shard's kept records: its file of the last segment, or, when that segment only
    applied a decision, the byte ranges it kept of the previous segment's file."""
    if not last.applies_only:
        return [(work / f"seg{last.index}" / f"{i:05d}.jsonl", None) for i in range(n_shards)]
    return [(work / f"seg{last.index - 1}" / f"{i:05d}.jsonl", load_bundle(work / f"seg{last.index}" / f"{i:05d}.ranges.bin")[0]["ranges"])
            for i in range(n_shards)]


def _kept_lines(parts: list[tuple[Path, np.ndarray | None]]) -> Iterator[bytes]:
    for path, ranges in parts:
        with open(path, "rb") as f:
            if ranges is None:
                yield from f
                continue
            for lo, hi in ranges.tolist():
                f.seek(lo)
                yield from f.read(hi - lo).splitlines(keepends=True)


def _write_kept(recipe: Recipe, parts: list[tuple[Path, np.ndarray | None]], kept_path: Path) -> list[bytes]:
    """The kept records in the output format; returns the reject rows of those the format or
    container cannot hold (`not_representable`, op `write`)."""
    fmt = get_format(recipe.output.format)
    unfit: list[bytes] = []

    def reject(rec: Record, detail: str) -> None:
        unfit.append(orjson.dumps(_reject(rec, "write", Drop("not_representable", detail))) + b"\n")

    with RowWriter(kept_path, recipe.output.format, recipe.output.options, on_unfit=reject) as w:
        for line in _kept_lines(parts):
            rec = Record.from_trusted(orjson.loads(line))
            try:
                rows = fmt.write(rec, recipe.output.options)
            except RecordError as e:
                reject(rec, e.detail or e.reason)
                continue
            w.write_many(rows, rec)
    return unfit


def _add_write_rejects(stats: dict, rows: list[bytes], rejects_path: Path) -> None:
    """Records the output could not hold: appended to the rejects, counted as a `write` step."""
    with open(rejects_path, "ab") as f:
        f.writelines(rows)
    n = len(rows)
    stats["kept"] -= n
    stats["rejected"] += n
    stats["ops"].append({"op": "write", "in": stats["kept"] + n, "kept": stats["kept"], "dropped": {"not_representable": n},
                         "seconds": None})


def _merge_stats(recipe: Recipe, segments: list[Segment], seg_stats: list[list[dict]], global_reports: dict, global_seconds: dict) -> dict:
    records_in = sum(st["in"] for st in seg_stats[0])
    read_rejects: Counter = Counter()
    for st in seg_stats[0]:
        read_rejects.update(st["read_rejects"])
    ops: dict[str, dict] = {}
    order = [op.name for op in recipe.ops]
    for seg_list in seg_stats:
        for st in seg_list:
            for name, o in st["ops"].items():
                acc = ops.setdefault(name, {"in": 0, "kept": 0, "added": 0, "dropped": Counter(), "seconds": 0.0})
                acc["in"] += o["in"]
                acc["added"] += o.get("added", 0)
                for k, v in (o.get("counters") or {}).items():
                    acc.setdefault("counters", Counter())[k] += v
                acc["kept"] += o["kept"]
                acc["dropped"].update(o["dropped"])
                acc["seconds"] += o["seconds"]
    for name, secs in global_seconds.items():
        if name in ops:
            ops[name]["seconds"] += secs
    final = seg_stats[-1]
    kept = sum(st["kept"] for st in final)
    hist: dict[str, Any] = {}
    langs: Counter = Counter()
    flags: Counter = Counter()
    kinds: Counter = Counter()
    contamination: dict[str, list] = {}
    for st in final:
        for k, v in st["hist"].items():
            if k == "length":
                hist[k] = [a + b for a, b in zip(hist.get(k, [0] * len(v)), v)]
            else:
                prev = hist.get(k)
                hist[k] = {"bins": v["bins"], "counts": [a + b for a, b in zip(prev["counts"], v["counts"])] if prev else v["counts"]}
        langs.update(st["langs"])
        flags.update(st["flags"])
        kinds.update(st["kinds"])
    for seg_list in seg_stats:
        for st in seg_list:
            for item, ids in st["contamination"].items():
                contamination.setdefault(item, []).extend(ids)
    rejected = sum(read_rejects.values()) + sum(sum(o["dropped"].values()) for o in ops.values())
    funnel = [{"op": "read+validate", "in": records_in, "kept": records_in - sum(read_rejects.values()),
               "dropped": dict(read_rejects), "seconds": None}]
    for name in order:
        o = ops.get(name, {"in": 0, "kept": 0, "added": 0, "dropped": Counter(), "seconds": 0.0})
        funnel.append({"op": name, "in": o["in"], "kept": o["kept"], "dropped": dict(o["dropped"]), "seconds": round(o["seconds"], 3),
                       **({"added": o["added"]} if o["added"] else {}),
                       **({"counters": dict(o["counters"])} if o.get("counters") else {}),
                       **({"report": global_reports[name]} if name in global_reports else {})})
    added = sum(o["added"] for o in ops.values())
    assert records_in + added == kept + rejected, f"record accounting broke: {records_in} + {added} != {kept} + {rejected}"
    return {
        "recipe": recipe.name, "recipe_hash": recipe_hash(recipe), "kept_file": recipe.output.file,
        "records_in": records_in, "kept": kept, "rejected": rejected, **({"derived": added} if added else {}),
        "ops": funnel,
        "kept_kinds": dict(kinds), "kept_languages": dict(langs.most_common()),
        "kept_flags": {k: v for k, v in flags.items() if not k.startswith(PII_FLAG)},
        "kept_pii_redactions": dict(sorted(((k[len(PII_FLAG):], v) for k, v in flags.items() if k.startswith(PII_FLAG)),
                                           key=lambda x: -x[1])),
        "histograms": {"bins_length": Hist.LEN_BINS, **hist},
        "contamination": contamination_report(recipe, contamination),
    }


def contamination_report(recipe: Recipe, found: dict[str, list]) -> dict:
    """Per benchmark: its items, those found and by which layer; per layer: the records flagged;
    per item: the matching records with layer and score."""
    items: dict[str, dict] = {}
    for item, hits in sorted(found.items()):
        uniq = sorted({(h[0], h[1], h[2]) for h in hits}, key=lambda h: (-(h[2] or 0), h[0]))
        items[item] = [{"id": i, "layer": layer, "score": score} for i, layer, score in uniq]
    totals: dict[str, int] = {}
    for op in recipe.ops:
        for it in getattr(op, "_items", None) or ():
            if hasattr(it, "benchmark"):
                totals[it.benchmark] = totals.get(it.benchmark, 0) + 1
    benchmarks: dict[str, dict] = {b: {"items": n, "found": 0, "by_layer": {}} for b, n in totals.items()}
    layers: dict[str, set] = {}
    for item, hits in items.items():
        b = benchmarks.setdefault(item.rsplit("#", 1)[0], {"items": None, "found": 0, "by_layer": {}})
        b["found"] += 1
        for layer in sorted({h["layer"] for h in hits}):
            b["by_layer"][layer] = b["by_layer"].get(layer, 0) + 1
        for h in hits:
            layers.setdefault(h["layer"], set()).add(h["id"])
    return {"benchmarks": benchmarks, "records_by_layer": {k: len(v) for k, v in sorted(layers.items())}, "items": items}
