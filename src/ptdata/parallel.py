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


def map_threads(fn, shared: dict, tasks: list, workers: int) -> list:
    """[fn(shared, t) for t in tasks], on `workers` threads. For functions that spend their time
    in numpy (sorts, comparisons, gathers release the GIL): the threads share `shared` (large
    arrays) with no copy, no pickling of results and no forked process whose resident size
    counts the parent's pages again."""
    if workers <= 1 or len(tasks) <= 1:
        return [fn(shared, t) for t in tasks]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(workers, len(tasks))) as ex:
        return list(ex.map(lambda t: fn(shared, t), tasks))
