"""The Ray executor: the same recipe, plan and outputs as the local executor, with the shard
jobs of every segment run by Ray Data (`map_batches` over the shards, one actor per worker).

Each job reads its shard, runs the segment's map ops batch by batch, writes kept records,
rejects and the global op's keys to the run's work directory, and returns its stats; global
decisions (dedup, selection) are made once on the driver from those compact keys, exactly as
locally, so kept and rejected ids are identical to a local run. The work directory must be on
storage every node sees (one machine, or a shared file system such as NFS).
"""
from __future__ import annotations

from typing import Any, Iterator

import orjson

from ..errors import InputError
from . import local
from .recipe import Recipe


class _ShardRunner:
    """A Ray Data actor: set up once with the run state, then runs shard jobs."""

    def __init__(self, state: dict) -> None:
        local._init_worker(state)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out = []
        for seg, shard, offset, size in zip(batch["seg"], batch["shard"], batch["offset"], batch["size"]):
            st = local._process_shard((int(seg), int(shard), int(offset), int(size)))
            out.append(orjson.dumps(st).decode())
        return {"stats": out}


def ray_dispatch(state: dict, todo: list[tuple], n_workers: int) -> Iterator[dict]:
    import ray

    ds = ray.data.from_items([{"seg": a, "shard": b, "offset": c, "size": d} for a, b, c, d in todo],
                             override_num_blocks=len(todo))
    ds = ds.map_batches(_ShardRunner, fn_constructor_kwargs={"state": state}, batch_size=1,
                        compute=ray.data.ActorPoolStrategy(size=max(1, min(n_workers, len(todo)))), batch_format="numpy",
                        num_cpus=1)
    for row in ds.iter_rows():
        yield orjson.loads(row["stats"])


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
        _quiet_ray()  # ray.data sets its own levels on import
    if not ray.is_initialized():
        try:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False,
                     **({"logging_level": "ERROR"} if quiet else {}))
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise InputError(f"cannot reach the Ray cluster at {address or 'a new local one'}: {e}") from None
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    if quiet:
        _quiet_ray()
    n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    return local.run(recipe, workers=n, progress=progress, dispatch=ray_dispatch)
