"""The Ray executor: the same recipe, plan and outputs as the local executor, with every job of
the run (shards of each segment, partitions of a decision) on one pool of Ray actors started
once per run, each set up once with the run state.

Each shard job reads its shard, runs the segment's map ops batch by batch, writes kept records,
rejects and the global op's keys to the run's work directory, and returns its stats. Exact
dedup is decided in partitions and near dedup in partitioned stages by the actors too, each job
reading only the rows of the keys it needs, so the driver holds the stats, the near-duplicate
edges and the report, not the keys; semantic dedup and select are decided once on the driver
from the compact keys, exactly as locally. Kept and rejected records are identical to a local run. The work directory must be on
storage every node sees (one machine, or a shared file system such as NFS).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

from ..errors import InputError
from . import local
from .recipe import Recipe


class _Runner:
    """A Ray actor: set up once with the run state, then runs any job function of the executor."""

    def __init__(self, state: dict) -> None:
        from .worker import _init_worker

        _init_worker(state)

    def run(self, fn: Callable, job: tuple) -> Any:
        return fn(job)


class RayPool:
    """One pool of actors for a whole run (started on the first jobs): a dispatch for local.run."""

    def __init__(self, ray) -> None:
        self.ray, self.actors, self.pool = ray, [], None
        self.started = 0  # actor pools started (one per run)

    def __call__(self, state: dict, jobs: list[tuple], n_workers: int, fn: Callable) -> Iterator[Any]:
        from ray.util import ActorPool

        if self.pool is None:
            actor = self.ray.remote(num_cpus=1)(_Runner)
            self.actors = [actor.remote(state) for _ in range(max(1, n_workers))]
            self.pool = ActorPool(self.actors)
            self.started += 1
        yield from self.pool.map_unordered(lambda a, job: a.run.remote(fn, job), jobs)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors, self.pool = [], None


def _quiet_ray() -> None:
    """Only Ray's errors on the terminal: its Python loggers and its C++ core's log level."""
    import logging

    for name in ("ray", "ray.data", "ray._private", "ray.data._internal"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_ray(recipe: Recipe, address: str | None = None, workers: int | None = None,
            progress: local.Progress | None = None, quiet: bool = False) -> local.RunResult:
    if quiet:
        _quiet_ray()
    try:
        import ray
    except ImportError:
        raise InputError("the ray executor needs Ray: pip install 'ptdata[ray]'") from None
    if quiet:
        _quiet_ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False,
                     **({"logging_level": "ERROR"} if quiet else {}))
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise InputError(f"cannot reach the Ray cluster at {address or 'a new local one'}: {e}") from None
    n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    pool = RayPool(ray)
    try:
        return local.run(recipe, workers=n, progress=progress, dispatch=pool)
    finally:
        pool.close()
