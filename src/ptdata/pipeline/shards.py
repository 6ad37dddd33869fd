"""The shard store: files committed atomically (temporary name, then rename), the numpy bundles
that carry keys and decisions between processes, and the output folder's state between runs."""
from __future__ import annotations

import mmap
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson

from .recipe import RUN_FILES, SUCCESS, Recipe


COPY_KEY = "_copy_fp"  # the executor's own key beside a global op's: what a drop must equal to be a reference


def commit_file(path: Path, write: Callable[[Any], None]) -> None:
    """Write a file under a temporary name and rename it into place: a reader (or a resumed run)
    sees it whole or not at all."""
    part = path.with_name(f".{path.name}.partial")
    with open(part, "wb") as f:
        write(f)
    os.replace(part, path)


_BUNDLE_MAGIC = b"PTDATA-B"


def save_bundle(path: Path, arrays: dict[str, np.ndarray], meta: Any = None) -> None:
    """Several arrays and a JSON value in one committed file. One file, not one per array:
    creating a file costs far more than writing a few MB into it (ext4 scans for a free inode,
    slowly after many deletions), and a run writes hundreds. Arrays are 64-byte aligned and
    mapped on load without a copy, so workers share their pages."""
    arrs = {k: np.ascontiguousarray(a) for k, a in arrays.items()}
    specs, off = {}, 0
    for k, a in arrs.items():
        specs[k] = [np.lib.format.dtype_to_descr(a.dtype), list(a.shape), off]
        off += -(-a.nbytes // 64) * 64
    head = orjson.dumps({"meta": meta, "arrays": specs})
    head += b" " * (-(len(head) + 16) % 64)

    def write(f) -> None:
        f.write(_BUNDLE_MAGIC + len(head).to_bytes(8, "little") + head)
        for a in arrs.values():
            if a.nbytes:
                f.write(memoryview(a.reshape(-1).view(np.uint8)))
                f.write(b"\0" * (-a.nbytes % 64))
    commit_file(path, write)


def load_bundle(path: Path) -> tuple[dict[str, np.ndarray], Any]:
    """(arrays, meta) of a bundle; the arrays are read-only views of the mapped file."""
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if mm[:8] != _BUNDLE_MAGIC:
        raise ValueError(f"{path}: not a ptdata bundle")
    n = int.from_bytes(mm[8:16], "little")
    head = orjson.loads(mm[16:16 + n])
    base = 16 + n
    arrays = {}
    for k, (dt, shape, off) in head["arrays"].items():
        dtype = np.lib.format.descr_to_dtype(dt if isinstance(dt, str) else [tuple(f) for f in dt])
        count = int(np.prod(shape, dtype=np.int64))
        arrays[k] = (np.frombuffer(mm, dtype, count, base + off) if count else np.empty(0, dtype)).reshape(shape)
    return arrays, head["meta"]


def bundle_arrays(path: Path) -> dict[str, tuple[np.dtype, tuple[int, ...], int]]:
    """(dtype, shape, byte offset in the file) of each array of a bundle, from its header alone."""
    with open(path, "rb") as f:
        head = f.read(16)
        if head[:8] != _BUNDLE_MAGIC:
            raise ValueError(f"{path}: not a ptdata bundle")
        n = int.from_bytes(head[8:16], "little")
        specs = orjson.loads(f.read(n))["arrays"]
    return {k: (np.lib.format.descr_to_dtype(dt if isinstance(dt, str) else [tuple(f) for f in dt]), tuple(shape), 16 + n + off)
            for k, (dt, shape, off) in specs.items()}


def read_into(path: Path, offset: int, out: np.ndarray) -> None:
    """Fill `out` (contiguous) with the bytes at `offset` of a file: a copy with no mapping, so
    the pages read do not stay in this process's resident set beside the copy."""
    view = memoryview(out.reshape(-1).view(np.uint8))
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        got = 0
        while got < len(view):
            n = f.readinto(view[got:])
            if not n:
                raise ValueError(f"{path}: truncated bundle")
            got += n


def read_array(path: Path, spec: tuple[np.dtype, tuple[int, ...], int]) -> np.ndarray:
    """One array of a bundle, read (not mapped), from its `bundle_arrays` entry."""
    dtype, shape, offset = spec
    out = np.empty(shape, dtype)
    read_into(path, offset, out)
    return out


def _output_names(recipe: Recipe) -> list[str]:
    return [recipe.output.file, *RUN_FILES]


def _clear_outputs(out_dir: Path, old_manifest: bytes | None, recipe: Recipe) -> None:
    """Before a run writes anything: no completion marker, and the outputs of an earlier,
    different recipe (or inputs) moved to `.previous/`, so nothing stale looks complete."""
    names = set(_output_names(recipe))
    for record in (old_manifest, _read_or_none(out_dir / SUCCESS)):  # the earlier run's outputs, by either record
        if record is not None:
            try:
                names |= set(orjson.loads(record).get("outputs") or [])
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                pass
    prev = out_dir / ".previous"
    present = [n for n in sorted(names, key=lambda n: n != SUCCESS) if "/" not in n and (out_dir / n).is_file()]
    if not present:
        return
    shutil.rmtree(prev, ignore_errors=True)  # only the last run is kept aside, whole
    prev.mkdir(parents=True)
    for name in present:  # the marker first: a kill half-way leaves nothing that claims to be complete
        os.replace(out_dir / name, prev / name)


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None
