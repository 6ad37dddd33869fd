"""Process pools that are safe to start from any process.

`fork` is the fast way to start workers (they inherit loaded models and indexes), but forking
a process in which other threads exist (Rust/Rayon pools such as rensa's, OpenMP, torch,
an embedding application's threads) can deadlock the child on a lock one of those threads
held. So: fork only when this process has a single native thread, otherwise a forkserver.
Worker state always travels through the pool initializer, which works for both.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from multiprocessing.context import BaseContext


# Background threads that survive fork harmlessly (jemalloc's purger, from pyarrow).
FORK_SAFE_THREADS = {"jemalloc_bg_thd"}


def native_threads() -> list[str]:
    """Names of every native thread of this process except the calling one (Linux)."""
    me = threading.get_native_id()
    names = []
    for tid in os.listdir("/proc/self/task"):
        if int(tid) == me:
            continue
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass  # the thread ended meanwhile
    return names


def fork_is_safe() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return all(name in FORK_SAFE_THREADS for name in native_threads())
    except OSError:
        return False


def pool_context() -> BaseContext:
    if fork_is_safe():
        return multiprocessing.get_context("fork")
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["ptdata.pipeline.local", "ptdata.convert", "numpy", "orjson"])
        return ctx
    return multiprocessing.get_context("spawn")


_SHARED: dict = {}


def _set_shared(shared: dict) -> None:
    global _SHARED
    _SHARED = shared


def _call(job: tuple) -> object:
    fn, task = job
    return fn(_SHARED, task)


def map_shared(fn, shared: dict, tasks: list, workers: int) -> list:
    """[fn(shared, t) for t in tasks], on `workers` processes when that can be done cheaply:
    only with fork, where the workers inherit `shared` (large arrays) instead of receiving a
    pickled copy; otherwise in this process. `fn` must be a module-level function."""
    if workers <= 1 or len(tasks) <= 1 or not fork_is_safe():
        return [fn(shared, t) for t in tasks]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(min(workers, len(tasks)), initializer=_set_shared, initargs=(shared,)) as pool:
        return pool.map(_call, [(fn, t) for t in tasks], chunksize=1)
