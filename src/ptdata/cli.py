"""`ptdata` command line: one entry point, one sub-command per job.

Bad input never ends in a traceback: a file-level problem is one `error:` line and exit 1,
a record-level problem is a row in the rejects file and a count in the summary. Exit codes
(README, "Exit codes"): 0 done, 1 could not run, 2 usage, 3 validate found rejects, 4 nothing
produced (every record rejected), 70 an internal error (a bug), 130 interrupted.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__
from .convert import RunCounts, convert
from .errors import InputError
from .formats import FORMATS, extra_summary
from .json_scan import DEFAULT_MAX_DEPTH
from .io import RowWriter, guard_outputs, rejects_path_for, split_name
from .reader import ReadOptions, RecordReader
from .report.stats import DatasetStats
from .validation import ValidationConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Post-training data for LLMs: convert, validate, curate.")
err = Console(stderr=True, soft_wrap=True)
out = Console()

EXIT_INPUT = 1
EXIT_USAGE = 2
EXIT_INVALID = 3
EXIT_NOTHING = 4
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


def exit_if_nothing(n_in: int, n_out: int, what: str = "record") -> None:
    """Exit 4 when a command produced nothing: every input record was rejected (or there was none)."""
    if n_out == 0:
        err.print(f"nothing written: {'every one of the ' + format(n_in, ',') + ' input records was rejected' if n_in else 'no input ' + what + 's'}",
                  highlight=False)
        raise typer.Exit(EXIT_NOTHING)


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    result = {}
    for v in values or []:
        if "=" not in v:
            raise InputError(f"{what} {v!r} must look like key=value")
        k, _, val = v.partition("=")
        result[k.strip()] = val.strip()
    return result


def _read_options(fmt, fields, options, dataset_info, dataset, max_turn_chars, strict, no_language, max_record_bytes,
                  max_depth: int = DEFAULT_MAX_DEPTH) -> ReadOptions:
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    opts: dict = _pairs(options, "--option")
    if fields:
        opts["fields"] = _pairs(fields, "--field")
    return ReadOptions(
        fmt=fmt, opts=opts, dataset_info=dataset_info, dataset=dataset,
        validation=ValidationConfig(max_turn_chars=max_turn_chars, strict=strict, language=not no_language),
        max_record_bytes=max_record_bytes, max_depth=max_depth,
    )


class _Bar:
    """A rich progress bar over the input file, shown only on a terminal."""

    def __init__(self, label: str, quiet: bool) -> None:
        self.enabled = not quiet and err.is_terminal
        self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                          TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err, transient=True,
                          auto_refresh=False)  # no refresh thread: convert forks worker processes
        self.task = self.p.add_task(label, total=1.0, info="")

    def __enter__(self):
        if self.enabled:
            self.p.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.p.stop()

    def __call__(self, fraction: float, counts: RunCounts | None = None, kept: int = 0, rejected: int = 0) -> None:
        if self.enabled:
            if counts is not None:
                kept, rejected = counts.kept, counts.rejected
            self.p.update(self.task, completed=fraction, info=f"kept {kept:,} rejected {rejected:,}")
            self.p.refresh()


def counts_text(c: dict) -> str:
    """`too_long 3, template_error 1`, largest first (ties by name): how a summary lists counts, never a dict repr."""
    return ", ".join(f"{k} {v:,}" for k, v in sorted(c.items(), key=lambda x: (-x[1], str(x[0]))))


def print_json(summary: dict) -> None:
    """`--json`: the summary as one JSON object on stdout, keys sorted (nothing else goes to stdout)."""
    sys.stdout.flush()
    sys.stdout.buffer.write(orjson.dumps(summary, default=str, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS) + b"\n")
    sys.stdout.buffer.flush()


def written(path) -> str | None:
    """A summary's file entry: the path when the command left that file, None when it wrote none."""
    return str(path) if path is not None and Path(path).exists() else None


def _summary(counts_in: int, kept: int, rejected: int, reasons: dict, flags: dict, rejects: Path | None) -> None:
    line = f"in {counts_in:,} · kept {kept:,} · rejected {rejected:,}"
    if rejected and rejects is not None:
        line += f"  (rejects: {rejects})"
    err.print(line, highlight=False)
    if reasons:
        err.print("  rejected by reason: " + counts_text(reasons), highlight=False)
    if flags:
        err.print("  flagged (kept): " + counts_text(flags), highlight=False)


FromOpt = Annotated[Optional[str], typer.Option("--from", help="Input format (detected when omitted).")]
FieldOpt = Annotated[Optional[list[str]], typer.Option("--field", help="Column mapping for qa input, e.g. question=problem.")]
# -o is --out in every command; format options are -O (one meaning per flag)
OptionOpt = Annotated[Optional[list[str]], typer.Option("--option", "-O", help="Format option key=value, e.g. style=standard.")]
InfoOpt = Annotated[Optional[str], typer.Option("--dataset-info", help="LLaMA-Factory dataset_info.json with the column mapping.")]
DatasetOpt = Annotated[Optional[str], typer.Option("--dataset", help="Entry name in --dataset-info.")]
MaxTurnOpt = Annotated[int, typer.Option("--max-turn-chars", min=1, help="Reject turns longer than this.")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Reject flagged records too (language switch, truncation, code fences).")]
NoLangOpt = Annotated[bool, typer.Option("--no-language-check", help="Do not flag language switches.")]
MaxRecOpt = Annotated[int, typer.Option("--max-record-bytes", min=1, help="Reject single records larger than this.")]
MaxDepthOpt = Annotated[int, typer.Option("--max-depth", min=1, max=250, help="Reject records nested deeper than this (objects and arrays).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
# every command that sums up its work: the same figures for machines, one JSON object on stdout (print_json)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object on stdout, and nothing "
                                       "else there (human lines stay on stderr).")]


@app.command("convert")
def convert_cmd(
    src: Annotated[Path, typer.Argument(help="Input file (.jsonl/.json/.parquet, optionally .gz).")],
    dst: Annotated[Path, typer.Argument(help="Output file; its extension picks JSONL, JSON array or Parquet.")],
    to: Annotated[str, typer.Option("--to", help=f"Output format, as `ptdata formats` lists them: {', '.join(FORMATS)} "
                                        "(trainer targets are `ptdata export --to`).")],
    fmt: FromOpt = None,
    fields: FieldOpt = None,
    options: OptionOpt = None,
    dataset_info: InfoOpt = None,
    dataset: DatasetOpt = None,
    rejects: Annotated[Optional[Path], typer.Option(help="Rejects file (default: OUT stem + .rejects.jsonl).")] = None,
    write_dataset_info: Annotated[bool, typer.Option("--write-dataset-info", help="Add an entry for OUT to dataset_info.json beside it.")] = False,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes for large plain-JSONL inputs (default: all cores).")] = None,
    max_turn_chars: MaxTurnOpt = 100_000,
    strict: StrictOpt = False,
    no_language_check: NoLangOpt = False,
    max_record_bytes: MaxRecOpt = 16 * 1024 * 1024,
    max_depth: MaxDepthOpt = DEFAULT_MAX_DEPTH,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Convert between formats; every record is written or rejected with a reason."""
    if to not in FORMATS:
        raise InputError(f"unknown format {to!r}; known: {', '.join(FORMATS)}")
    ro = _read_options(fmt, fields, None, dataset_info, dataset, max_turn_chars, strict, no_language_check, max_record_bytes, max_depth)
    write_opts = _pairs(options, "--option")
    if fields:
        write_opts["fields"] = ro.opts["fields"]
    rejects = rejects or rejects_path_for(dst)
    with _Bar(f"convert {src.name}", quiet) as bar:
        counts = convert(src, dst, to, ro, write_opts, rejects, bar, write_dataset_info, workers)
    _summary(counts.records_in, counts.kept, counts.rejected, counts.reasons, counts.flags, rejects)
    extra_line = extra_summary(counts.extra, to, write_opts, split_name(dst)[0] == "parquet")
    if extra_line:
        err.print("  " + extra_line, highlight=False, markup=False)
    if counts.rows_out != counts.kept:
        err.print(f"  wrote {counts.rows_out:,} rows to {dst}", highlight=False)
    if as_json:
        print_json({"command": "convert", "format": to, "records_in": counts.records_in, "kept": counts.kept,
                    "rejected": counts.rejected, "reasons": counts.reasons, "flags": counts.flags, "rows_out": counts.rows_out,
                    "unmapped_fields": counts.extra, "files": {"out": written(dst), "rejects": written(rejects)}})
    exit_if_nothing(counts.records_in, counts.kept)


@app.command("validate")
def validate_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="Input files.")],
    fmt: FromOpt = None,
    fields: FieldOpt = None,
    options: OptionOpt = None,
    dataset_info: InfoOpt = None,
    dataset: DatasetOpt = None,
    out_path: Annotated[Optional[Path], typer.Option("--out", "-o", help="Also write the valid records (ptdata format) here.")] = None,
    rejects: Annotated[Optional[Path], typer.Option(help="Rejects file (default: beside --out, else ./<input>.rejects.jsonl).")] = None,
    max_turn_chars: MaxTurnOpt = 100_000,
    strict: StrictOpt = False,
    no_language_check: NoLangOpt = False,
    max_record_bytes: MaxRecOpt = 16 * 1024 * 1024,
    max_depth: MaxDepthOpt = DEFAULT_MAX_DEPTH,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Check structure and multi-turn coherence. Exit 0 when all records are valid, 3 when some are rejected."""
    ro = _read_options(fmt, fields, options, dataset_info, dataset, max_turn_chars, strict, no_language_check, max_record_bytes, max_depth)
    # its own default name: `convert IN train.jsonl` already wrote train.rejects.jsonl beside train.jsonl
    rejects = rejects or (rejects_path_for(out_path) if out_path else Path(rejects_path_for(inputs[0]).name.replace(
        ".rejects.jsonl", ".validate.rejects.jsonl")))
    guard_outputs(inputs, [rejects, *([out_path] if out_path else [])])
    stats = DatasetStats()
    kept_writer = RowWriter(out_path, "ptdata", keep_empty=False) if out_path else None
    n_in = 0
    unreadable = 0
    with RowWriter(rejects, "ptdata", keep_empty=False) as rej:
        for path in inputs:
            try:
                reader = RecordReader(path, ro)
                reader.detect()
            except (InputError, OSError) as e:  # report it, and validate the other files
                err.print(f"error: {e}", highlight=False, markup=False)
                unreadable += 1
                continue
            with _Bar(f"validate {path.name}", quiet) as bar:
                for i, (rec, bad) in enumerate(reader, 1):
                    n_in += 1
                    if rec is None:
                        rej.write(bad)
                        stats.reject(bad["reason"])
                    else:
                        stats.records += 1
                        for f in rec.meta.get("flags", ()):
                            stats.flags[f] += 1
                        if kept_writer:
                            kept_writer.write(rec.to_dict())
                    if not i & 4095:
                        bar(reader.fraction(), kept=stats.records, rejected=stats.rejected)
    if kept_writer:
        kept_writer.close()
    assert n_in == stats.records + stats.rejected
    if unreadable == len(inputs):
        raise typer.Exit(EXIT_INPUT)  # each file had its error line; there is nothing to sum up
    _summary(n_in, stats.records, stats.rejected, stats.reject_reasons, stats.flags, rejects if stats.rejected else None)
    if as_json:
        print_json({"command": "validate", "records_in": n_in, "kept": stats.records, "rejected": stats.rejected,
                    "reasons": dict(stats.reject_reasons), "flags": dict(stats.flags), "files_in": len(inputs),
                    "unreadable_files": unreadable, "files": {"out": written(out_path), "rejects": written(rejects)}})
    if unreadable:
        err.print(f"{unreadable} of {len(inputs)} file(s) could not be validated", highlight=False)
        raise typer.Exit(EXIT_INPUT)
    exit_if_nothing(n_in, stats.records)
    if stats.rejected:
        raise typer.Exit(EXIT_INVALID)


@app.command("stats")
def stats_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="Input files.")],
    fmt: FromOpt = None,
    fields: FieldOpt = None,
    options: OptionOpt = None,
    dataset_info: InfoOpt = None,
    dataset: DatasetOpt = None,
    max_turn_chars: MaxTurnOpt = 100_000,
    no_language_check: NoLangOpt = False,
    max_record_bytes: MaxRecOpt = 16 * 1024 * 1024,
    max_depth: MaxDepthOpt = DEFAULT_MAX_DEPTH,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Records by kind, turns per conversation, characters per role, languages, duplicates by id (`--json > FILE` keeps them)."""
    ro = _read_options(fmt, fields, options, dataset_info, dataset, max_turn_chars, False, no_language_check, max_record_bytes, max_depth)
    stats = DatasetStats()
    for path in inputs:
        reader = RecordReader(path, ro)
        with _Bar(f"stats {path.name}", quiet) as bar:
            for i, (rec, bad) in enumerate(reader, 1):
                if rec is None:
                    stats.reject(bad["reason"])
                else:
                    stats.add(rec)
                if not i & 4095:
                    bar(reader.fraction(), kept=stats.records, rejected=stats.rejected)
    d = stats.as_dict()
    if as_json:  # the table is stdout's human form: the object takes its place
        print_json({"command": "stats", "records_in": d["records"] + d["rejected"], "kept": d["records"],
                    "reasons": d["reject_reasons"], **d})
    else:
        _print_stats(d)
    exit_if_nothing(d["records"] + d["rejected"], d["records"])


def _print_stats(d: dict) -> None:
    t = Table(title="ptdata stats", show_header=False)
    t.add_row("records (valid)", f"{d['records']:,}")
    t.add_row("rejected", f"{d['rejected']:,}" + (f"  ({counts_text(d['reject_reasons'])})" if d["reject_reasons"] else ""))
    t.add_row("by kind", ", ".join(f"{k} {v:,}" for k, v in d["kinds"].items()))
    tp = d["turns_per_conversation"]
    t.add_row("turns / conversation", f"mean {tp['mean']}, max {tp['max']}, " + ", ".join(f"{k}:{v}" for k, v in tp["histogram"].items()))
    for role, c in d["chars_by_role"].items():
        t.add_row(f"chars · {role}", f"{c['total']:,} in {c['turns']:,} turns (mean {c['mean']})")
    t.add_row("languages", ", ".join(f"{k} {v:,}" for k, v in list(d["languages"].items())[:10]))
    t.add_row("flags", ", ".join(f"{k} {v:,}" for k, v in d["flags"].items()) or "none")
    t.add_row("duplicate ids", f"{d['duplicates']['records']:,} extra copies; {d['duplicates']['unique_records']:,} unique")
    out.print(t)


READ_STEPS = ("read", "detect", "parse", "validate", "write")  # the op of a reject made before or after the recipe's ops


def _check_reject_filters(out_dir: Path, op: str | None, reason: str | None) -> None:
    """An --op or --reason this run cannot have is a mistake, not an empty answer: say which exist."""
    from .pipeline.recipe import SUCCESS

    stats_path = out_dir / "stats.json"
    if not (out_dir / SUCCESS).is_file() or not stats_path.is_file():
        raise InputError(f"{out_dir}: no _SUCCESS (a run that has not finished, or not a run's output directory)")
    try:
        funnel = orjson.loads(stats_path.read_bytes())["ops"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise InputError(f"{stats_path}: not a ptdata run's stats") from None
    ops = [*READ_STEPS, *(o["op"] for o in funnel if o["op"] not in ("read+validate", "write"))]
    reasons = sorted({r for o in funnel for r in o.get("dropped", {})})
    if op is not None and op not in ops:
        raise InputError(f"--op {op!r}: no such op in this run; its ops: {', '.join(ops)}")
    if reason is not None and reason not in reasons:
        raise InputError(f"--reason {reason!r}: no reject has it in this run; its reasons: {', '.join(reasons) or 'none'}")


@app.command("rejects")
def rejects_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Output directory of a run (kept file, rejects.jsonl, stats.json).")],
    full: Annotated[bool, typer.Option("--full/--as-written", help="Give copies listed by reference their record back.")] = True,
    op: Annotated[Optional[str], typer.Option(help="Only rows of this op.")] = None,
    reason: Annotated[Optional[str], typer.Option(help="Only rows with this reason.")] = None,
    output: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write JSONL here instead of stdout.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a run's rejects as JSONL; by default every row carries its record (see output.rejects)."""
    import sys

    from .pipeline.rejects import read_rejects

    from .pipeline.recipe import SUCCESS

    if as_json and not output:
        raise InputError("--json needs -o FILE: without it stdout is the rejects themselves")
    _check_reject_filters(out_dir, op, reason)  # also: the run finished, so its _SUCCESS names its inputs
    if output:
        run_inputs = [Path(i[0]) for i in orjson.loads((out_dir / SUCCESS).read_bytes()).get("inputs", [])]
        guard_outputs([*out_dir.glob("*"), *run_inputs], [output], dirs=[])
        if os.path.realpath(output).startswith(os.path.realpath(out_dir).rstrip(os.sep) + os.sep):
            raise InputError(f"refusing to write {output}: it is inside the run directory {out_dir} (its files are the run's state)")
    f = open(output, "wb") if output else sys.stdout.buffer
    n = 0
    try:
        for row in read_rejects(out_dir, full=full):
            if (op is None or row.get("op") == op) and (reason is None or row.get("reason") == reason):
                f.write(orjson.dumps(row) + b"\n")
                n += 1
    finally:
        if output:
            f.close()
    if output:
        err.print(f"{n:,} rejects -> {output}", highlight=False)
    if as_json:
        print_json({"command": "rejects", "run": str(out_dir), "rows": n, "op": op, "reason": reason, "full": full,
                    "files": {"out": written(output)}})


@app.command("run")
def run_cmd(
    recipe_path: Annotated[Path, typer.Argument(help="Recipe YAML.")],
    executor: Annotated[str, typer.Option(help="local (process pool) or ray.")] = "local",
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default: all cores).")] = None,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (executor=ray).")] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run a curation recipe: kept records, rejects with reasons, stats.json and report.html. Resumes if interrupted."""
    from .pipeline import load_recipe

    recipe = load_recipe(recipe_path)
    if executor not in ("local", "ray"):
        raise InputError(f"executor must be local or ray, got {executor!r}")
    result = run_recipe(recipe, workers, quiet, executor=executor, address=address)
    if as_json:
        print_json(run_summary(result, "run"))
    exit_if_nothing(result.records_in, result.kept)


def run_summary(result, command: str) -> dict:
    """The `--json` object of a run (and of each model step, a one-op run): the funnel as the human lines show it."""
    st = result.stats
    reasons: dict[str, int] = {}
    for o in st["ops"]:
        for k, v in o["dropped"].items():
            reasons[k] = reasons.get(k, 0) + v
    return {"command": command, "records_in": st["records_in"], "kept": st["kept"], "rejected": st["rejected"],
            "derived": st.get("derived", 0), "reasons": reasons, "resumed_shards": result.resumed_shards,
            "ops": [{k: o.get(k) for k in ("op", "in", "kept", "dropped", "seconds", "counters") if k in o} for o in st["ops"]],
            "kept_pii_redactions": st.get("kept_pii_redactions") or {},
            "files": {"kept": written(result.kept_path), "rejects": written(result.rejects_path),
                      "stats": written(result.stats_path), "report": written(result.report_path)}}


def run_recipe(recipe, workers: int | None, quiet: bool, executor: str = "local", address: str | None = None):
    """Run a recipe with a progress bar per stage and print the funnel; shared by `run` and the model steps."""
    from .pipeline import run

    import time

    from .llm import base as llm_base

    show = not quiet and err.is_terminal
    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), console=err, auto_refresh=False)
    tasks: dict[str, int] = {}

    def progress(label: str, done: int, total: int) -> None:
        if not show:
            return
        if label not in tasks:
            tasks[label] = prog.add_task(label, total=total, info="")
        prog.update(tasks[label], completed=done, info=f"{done}/{total} shards")
        prog.refresh()

    t0, last = time.monotonic(), [0.0]

    def model_calls(u) -> None:
        """A live line per model step: requests done, failed, retried, tokens and the rate."""
        now = time.monotonic()
        if now - last[0] < 0.2:
            return
        last[0] = now
        if "model" not in tasks:
            tasks["model"] = prog.add_task("model calls", total=None, info="")
        rate = (u.requests - u.cache_hits) / max(now - t0, 1e-9)
        prog.update(tasks["model"], info=f"{u.requests:,} done ({u.cache_hits:,} cached) · {u.failures:,} failed · "
                                         f"{u.retries:,} retried · {u.prompt_tokens + u.completion_tokens:,} tokens · "
                                         f"{rate:.1f} calls/s")
        prog.refresh()

    if show:
        prog.start()
        llm_base.on_result = model_calls
    try:
        if executor == "ray":
            from .pipeline.ray_exec import run_ray

            result = run_ray(recipe, address, workers, progress, quiet=quiet)
        else:
            result = run(recipe, workers=workers, progress=progress)
    finally:
        llm_base.on_result = None
        if show:
            prog.stop()
    st = result.stats
    _summary(st["records_in"], st["kept"], st["rejected"], {}, {}, result.rejects_path)
    if st.get("derived"):
        err.print(f"  derived: {st['derived']:,} record(s) added by ops (samples, evolutions, pairs)", highlight=False)
    for o in st["ops"]:
        dropped = counts_text(o["dropped"])
        secs = "" if o["seconds"] is None else f" ({o['seconds']:.1f}s)"
        err.print(f"  {o['op']:<18} {o['in']:>9,} -> {o['kept']:>9,}{secs}" + (f"  dropped: {dropped}" if dropped else ""), highlight=False)
        if o.get("counters"):
            err.print("  " + " " * 18 + " model: " + ", ".join(f"{k} {v:,}" for k, v in o["counters"].items()), highlight=False)
    if st.get("kept_pii_redactions"):
        err.print("  pii redacted in kept records: " + counts_text(st["kept_pii_redactions"]), highlight=False)
    if result.resumed_shards:
        err.print(f"  resumed: {result.resumed_shards} shard(s) reused from an earlier run of this recipe", highlight=False)
    err.print(f"kept: {result.kept_path}\nrejects: {result.rejects_path}\nstats: {result.stats_path}"
              + (f"\nreport: {result.report_path}" if result.report_path else ""), highlight=False)
    return result


@app.command("ops")
def ops_cmd() -> None:
    """List every curation op with its parameters and defaults."""
    from rich.markup import escape

    from .ops import all_ops

    for name, cls in all_ops().items():
        out.print(f"[bold]{name}[/bold] ({cls.kind}) {escape(cls.summary())}", highlight=False, soft_wrap=True)
        for p in cls.describe():  # the allowed values are the words a recipe error uses
            out.print(f"    {escape(p.name)} = {escape(p.default)}  ({escape(p.allowed)})  [dim]{escape(p.help)}[/dim]",
                      highlight=False, soft_wrap=True)


@app.command("formats")
def formats_cmd() -> None:
    """List the formats ptdata reads and writes."""
    for name, f in FORMATS.items():
        out.print(f"[bold]{name:<12}[/bold] {f.description}", highlight=False)


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False) -> None:
    if version:
        out.print(f"ptdata {__version__}")
        raise typer.Exit()


from . import cli_calibrate, cli_flywheel, cli_llm, cli_review, cli_select  # noqa: E402,F401  (model steps, flywheel, review, selection)


def main() -> None:
    """Entry point: every outcome is an exit code from the table and at most one `error:` line."""
    from typer import _click  # typer's own click

    try:
        code = app(standalone_mode=False)
    except (_click.exceptions.ClickException, typer.TyperException) as e:  # usage: unknown option, missing argument
        e.show() if hasattr(e, "show") else err.print(f"error: {e}", highlight=False, markup=False)
        code = e.exit_code
    except typer.Abort as e:  # the wrapping of EOFError and Ctrl-C
        if isinstance(e.__cause__, EOFError):
            err.print(f"error: input ended before it should ({e.__cause__ or 'end of file'})", highlight=False, markup=False)
            code = EXIT_INPUT
        else:
            err.print("interrupted")
            code = EXIT_INTERRUPTED
    except (InputError, OSError) as e:
        err.print(f"error: {e}", highlight=False, markup=False)
        code = EXIT_INPUT
    except KeyboardInterrupt:
        err.print("interrupted")
        code = EXIT_INTERRUPTED
    except MemoryError:
        err.print("error: out of memory (lower --workers, or the recipe's batch_size / shard_bytes)", highlight=False)
        code = EXIT_INPUT
    except Exception as e:  # a bug: one line, the traceback only on request
        if os.environ.get("PTDATA_DEBUG"):
            raise
        err.print(f"error: internal error ({type(e).__name__}: {str(e)[:300]}); PTDATA_DEBUG=1 shows the traceback",
                  highlight=False, markup=False)
        code = EXIT_INTERNAL
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
