"""The local executor: a streaming, resumable run of a recipe on a process pool.

Plan: the ops are cut into segments, each a run of map ops ended by at most one global op.
Inputs are cut into shards (line-aligned ranges of JSONL files; whole files otherwise).
Segment s turns shard i of segment s-1 (or of the input) into shard i of segment s:
it drops what the previous global op decided, applies its map ops batch by batch, writes
kept records, rejects and stats, and computes the keys of its global op. The parent then
runs that op's `decide` on all keys. Workers write their own files, so the parent never
touches record data until the final concatenation.

Resume: every shard is written under a temporary name and committed by renaming; its stats
file, written last, marks it done; decisions are committed the same way. A rerun with the
same recipe and inputs skips what is done, so a run killed at any point finishes with
output identical to an uninterrupted one, and no record twice.
"""
from __future__ import annotations

import os
import shutil
import time
from typing import Any, Callable, Iterator

import orjson

from ..io import guard_outputs
from ..errors import InputError
from ..reader import RecordReader
from .recipe import SUCCESS, Recipe
from .decision import DECISION, _offsets, commit_decision, decide_in_parent, decision_report, n_partitions
from .plan import _make_shards, _manifest, number_shards, plan_segments
from .shards import _clear_outputs
from .worker import Workers, _decide_part, _process_shard, _stage_job
from .write import RunResult, _finish, _mark_done
# the executor's parts, for callers of the one module it used to be (tests, the Ray executor, bench/)
from .plan import WORK_LAYOUT, file_fingerprint  # noqa: E402,F401
from .worker import _init_worker  # noqa: E402,F401


Progress = Callable[[str, int, int], None]  # (stage label, done, total)


# (run state, jobs, workers, job function) -> its results, in any order
Dispatch = Callable[[dict, list[tuple], int, Callable], Iterator[Any]]


def _pool_dispatch(state: dict, todo: list[tuple], n_workers: int, fn: Callable) -> Iterator[Any]:
    """Jobs (shards, or partitions and stages of a decision) on a process pool (a fresh one per
    call, started with the decisions made so far), or in this process when there is one worker."""
    with Workers(state, n_workers, min(n_workers, len(todo))) as workers:
        yield from workers.map(fn, todo)


def _decide(seg, work, stats: list[dict], copies_by_reference: bool, state: dict, n_workers: int, dispatch: Dispatch) -> None:
    """A global op's decision: in partitions on the workers when it splits (`partition_key`), in
    stages on the workers when it has them (`staged`: near and semantic dedup, select by score), else in this process from all keys."""
    parts = n_partitions(seg, stats)
    if parts == 1:
        decide_in_parent(seg, work, stats, copies_by_reference)
        return
    slim = [{"kept": st["kept"], "keys": st.get("keys", {})} for st in stats]
    if seg.global_op.staged:
        from .staged import STAGED

        def run_jobs(stage: str, jobs: list[tuple]) -> list:
            return list(dispatch(state, [(stage, *job) for job in jobs], n_workers, _stage_job))

        got = STAGED[seg.global_op.name](seg.global_op, work / f"seg{seg.index}", slim, parts, run_jobs, copies_by_reference)
        commit_decision(seg, work, got["parts"], [], got["report"])  # its jobs committed the parts
        return
    reports = sorted(dispatch(state, [(seg.index, p, parts, slim) for p in range(parts)], n_workers, _decide_part))
    commit_decision(seg, work, parts, [rep for _, rep in reports])


def run(recipe: Recipe, workers: int | None = None, progress: Progress | None = None,
        dispatch: Dispatch | None = None) -> RunResult:
    """Run a recipe; resumes from the work dir when the recipe and inputs are unchanged.
    `dispatch` runs the shard jobs elsewhere (the Ray executor); the plan, the decisions and
    the outputs stay the same."""
    out_dir = recipe.out_dir()
    work = out_dir / ".work"
    files = []
    for i, inp in enumerate(recipe.inputs):
        try:
            files.append(inp.files(recipe.base_dir))
        except InputError as e:
            raise InputError(f"{recipe.where()}inputs[{i}]: {e}") from None
    guard_outputs([p for group in files for p in group], dirs=[out_dir])
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{recipe.where()}output.dir {out_dir}: exists and is not a directory")
    for i, op in enumerate(recipe.ops):
        try:
            op.setup()  # built once here, before anything is written; inherited by the forked workers
        except InputError as e:
            msg = str(e).removeprefix(f"{type(op).name}: ")
            raise InputError(f"{recipe.where()}ops[{i}] {op.name}: {msg}") from None
    manifest = _manifest(recipe, files)
    mpath = work / "manifest.json"
    old = mpath.read_bytes() if mpath.exists() else None
    if old != manifest:
        _clear_outputs(out_dir, old, recipe)  # first: a kill while .work is removed leaves nothing stale beside it
    else:
        (out_dir / SUCCESS).unlink(missing_ok=True)
    if old is not None and old != manifest:
        shutil.rmtree(work)  # the recipe or an input changed: nothing done can be reused
    work.mkdir(parents=True, exist_ok=True)
    mpath.write_bytes(manifest)
    segments = plan_segments(recipe.ops)
    shards = _make_shards(recipe, files, work)
    # detect each file's format once, here, so every shard of it agrees
    formats: dict[str, str] = {}
    for sh in shards:
        if sh.path not in formats:
            inp = recipe.inputs[sh.input_index]
            formats[sh.path] = RecordReader(sh.path, inp.read_options(recipe.validation), alias=sh.alias).detect()
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(shards)))
    for op in recipe.ops:
        if op.kind == "global":
            op.decide_workers = max(1, workers or os.cpu_count() or 1)  # the decision in the parent uses them too
    state: dict[str, Any] = dict(recipe=recipe, segments=segments, shards=shards, work=work, formats=formats,
                                 parent_pid=os.getpid())
    number_shards(shards)
    resumed = 0
    global_reports: dict[str, dict] = {}
    global_seconds: dict[str, float] = {}
    seg_stats: list[list[dict]] = []
    for seg in segments:
        seg_dir = work / f"seg{seg.index}"
        seg_dir.mkdir(exist_ok=True)
        offsets = _offsets(seg_stats[-1]) if seg_stats else [0] * len(shards)
        sizes = [st["kept"] for st in seg_stats[-1]] if seg_stats else [0] * len(shards)
        todo, done = [], {}
        for i in range(len(shards)):
            sp = seg_dir / f"{i:05d}.stats.json"
            if sp.exists():
                done[i] = orjson.loads(sp.read_bytes())
            else:
                todo.append((seg.index, i, offsets[i], sizes[i]))
        resumed += len(done)
        names = [op.name for op in seg.map_ops] + ([seg.global_op.name] if seg.global_op else [])
        label = f"segment {seg.index + 1}/{len(segments)}: {', '.join(names) or 'apply decisions'}"
        if progress:
            progress(label, len(done), len(shards))
        if todo:
            for st in (dispatch or _pool_dispatch)(state, todo, n_workers, _process_shard):
                done[st["shard"]] = st
                if progress:
                    progress(label, len(done), len(shards))
        seg_stats.append([done[i] for i in range(len(shards))])
        if seg.global_op is not None:
            t = time.perf_counter()
            if not (seg_dir / DECISION).exists():
                _decide(seg, work, seg_stats[-1], recipe.output.copies_by_reference, state, n_workers, dispatch or _pool_dispatch)
            global_seconds[seg.global_op.name] = time.perf_counter() - t + sum(x.get("keys_seconds", 0.0) for x in seg_stats[-1])
            global_reports[seg.global_op.name] = decision_report(work, seg.index)
    return _mark_done(_finish(recipe, segments, seg_stats, global_reports, global_seconds, work, out_dir, resumed), recipe, manifest)
