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


def _attach(spec: dict) -> None:
    """Worker initializer: the shared arrays, inherited (fork) or mapped from shared memory."""
    global _SHARED
    if spec.get("inherited") is not None:
        _SHARED = spec["inherited"]
        return
    import numpy as np
    from multiprocessing import shared_memory

    blocks, arrays = [], {}
    for name, (shm_name, shape, dtype) in spec["arrays"].items():
        shm = shared_memory.SharedMemory(name=shm_name)
        blocks.append(shm)  # kept open for the worker's life
        arrays[name] = np.ndarray(shape, dtype=dtype, buffer=shm.buf)
    _SHARED = {**spec["plain"], **arrays, "_blocks": blocks}


def _call(job: tuple) -> object:
    fn, task = job
    return fn(_SHARED, task)


def map_shared(fn, shared: dict, tasks: list, workers: int) -> list:
    """[fn(shared, t) for t in tasks] on `workers` processes. The workers get `shared` (large
    numpy arrays) without a pickled copy each: inherited with fork, else placed once in shared
    memory and mapped by every worker (a forkserver pool). `fn` must be a module-level function
    that only reads the arrays."""
    if workers <= 1 or len(tasks) <= 1:
        return [fn(shared, t) for t in tasks]
    ctx = pool_context()
    n = min(workers, len(tasks))
    jobs = [(fn, t) for t in tasks]
    if ctx.get_start_method() == "fork":
        with ctx.Pool(n, initializer=_attach, initargs=({"inherited": shared},)) as pool:
            return pool.map(_call, jobs, chunksize=1)
    import numpy as np
    from multiprocessing import shared_memory

    blocks, spec = [], {"arrays": {}, "plain": {}}
    try:
        for name, value in shared.items():
            if isinstance(value, np.ndarray) and value.nbytes:
                shm = shared_memory.SharedMemory(create=True, size=value.nbytes)
                blocks.append(shm)
                np.ndarray(value.shape, dtype=value.dtype, buffer=shm.buf)[...] = value
                spec["arrays"][name] = (shm.name, value.shape, value.dtype.str)
            else:
                spec["plain"][name] = value
        with ctx.Pool(n, initializer=_attach, initargs=(spec,)) as pool:
            return pool.map(_call, jobs, chunksize=1)
    finally:
        for shm in blocks:
            shm.close()
            shm.unlink()
