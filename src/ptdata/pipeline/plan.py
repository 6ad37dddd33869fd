"""The plan of a run: ops cut into segments (map ops ended by at most one global op), inputs cut
into shards (line ranges of JSONL files), and the fingerprints that key resume."""
from __future__ import annotations

import gzip
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import orjson
import xxhash

from .. import __version__
from ..io import sniff, newline_counts, split_ranges, with_first_lines
from ..ops.base import GlobalOp, MapOp, Op
from .recipe import Recipe
from .shards import _output_names


@dataclass
class Shard:
    """One unit of work of segment 0: a file, or a line-aligned range of a plain JSONL file."""

    path: str
    alias: str
    input_index: int
    byte_range: tuple[int, int] | None = None
    first_line: int = 1  # 0 until `number_shards` has counted the lines before a split shard


@dataclass
class Segment:
    index: int
    map_ops: list[MapOp]
    global_op: GlobalOp | None

    @property
    def applies_only(self) -> bool:
        """The last segment after a global op with no op of its own: it only applies the drops,
        so its kept records are the runs of the previous segment's lines between them."""
        return self.index > 0 and not self.map_ops and self.global_op is None


def plan_segments(ops: list[Op]) -> list[Segment]:
    segs: list[Segment] = []
    current: list[MapOp] = []
    for op in ops:
        if isinstance(op, GlobalOp):
            segs.append(Segment(len(segs), current, op))
            current = []
        else:
            current.append(op)  # type: ignore[arg-type]
    segs.append(Segment(len(segs), current, None))  # the last one applies the final decisions
    return segs


# --- parent side -----------------------------------------------------------------------------

WORK_LAYOUT = 5  # the files a run keeps in its work dir; a dir kept in another layout is not resumed


def file_fingerprint(path: Path, block: int = 8 << 20) -> str:
    """xxh3-128 of a file's bytes: what resume trusts (an input edited in place keeps its size
    and can keep its mtime). About 0.1 s per GB from the page cache."""
    h = xxhash.xxh3_128()
    buf = bytearray(block)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _manifest(recipe: Recipe, files: list[list[Path]]) -> bytes:
    inputs = [[str(p), p.stat().st_size, file_fingerprint(p)] for group in files for p in group]
    return orjson.dumps({"ptdata": __version__, "layout": WORK_LAYOUT, "recipe": orjson.loads(recipe.fingerprint()), "inputs": inputs,
                         "outputs": _output_names(recipe)},
                        option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)


def recipe_hash(recipe: Recipe) -> str:
    """What the recipe does (inputs, ops, output format), not where it writes."""
    d = orjson.loads(recipe.fingerprint())
    d["output"].pop("dir", None)
    return xxhash.xxh3_64_hexdigest(orjson.dumps(d, option=orjson.OPT_SORT_KEYS))


def _make_shards(recipe: Recipe, files: list[list[Path]], work: Path) -> list[Shard]:
    """Cut inputs into shards; gzipped JSONL is inflated once into the work dir so it can be split."""
    shards: list[Shard] = []
    for ii, group in enumerate(files):
        for jj, path in enumerate(group):
            container, gz = sniff(path)  # from the bytes: a JSON array named .jsonl is not split into line ranges
            src = path
            if gz and container == "jsonl":
                # one copy per input file: two inputs may share a name (g/a/train.jsonl.gz, g/b/train.jsonl.gz)
                plain = _inflated(path, work / "inputs" / f"{ii}-{jj}-{path.name[:-3]}")
                if plain is None:  # truncated or corrupt: read as it is, so its readable lines are kept
                    shards.append(Shard(str(path), lineage_path(path, recipe.base_dir), ii))
                    continue
                src, container, gz = plain, "jsonl", False
            if container == "jsonl" and not gz and src.stat().st_size > recipe.shard_bytes:
                ranges = split_ranges(src, max(1, src.stat().st_size // recipe.shard_bytes))
                shards.extend(Shard(str(src), lineage_path(path, recipe.base_dir), ii, r, 1 if k == 0 else 0)
                              for k, r in enumerate(ranges))
            else:
                shards.append(Shard(str(src), lineage_path(path, recipe.base_dir), ii))
    return shards


def lineage_path(path: Path, base: Path) -> str:
    """How records and rejects name their file: relative to the recipe's directory when inside
    it (so a/train.jsonl and b/train.jsonl stay apart), else the absolute path."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(os.path.abspath(base)))
    except ValueError:
        return str(os.path.abspath(path))


def _inflated(path: Path, plain: Path) -> Path | None:
    """A gzipped JSONL input inflated once into the work dir (so it can be split), or None when
    the stream is truncated or corrupt: its reader then keeps the readable lines and rejects the
    rest as `corrupt_file`, naming the last good line."""
    if plain.exists():
        return plain
    plain.parent.mkdir(parents=True, exist_ok=True)
    part = plain.with_name(plain.name + ".partial")
    try:
        with gzip.open(path, "rb") as g, open(part, "wb") as f:
            shutil.copyfileobj(g, f, 8 << 20)
    except (OSError, EOFError, zlib.error):
        part.unlink(missing_ok=True)
        return None
    os.replace(part, plain)
    return plain


def number_shards(shards: list[Shard]) -> None:
    """Give each split shard the number of its first line, from the newlines counted in the
    shards before it (a read of the whole file that the shards' own reads make again, so it is
    done only when needed)."""
    by_path: dict[str, list[int]] = {}
    for i, sh in enumerate(shards):
        if sh.byte_range is not None:
            by_path.setdefault(sh.path, []).append(i)
    for path, idx in by_path.items():
        if all(shards[i].first_line for i in idx):
            continue
        counts = newline_counts(path, [shards[i].byte_range for i in idx])
        for i, (_, _, line) in zip(idx, with_first_lines([shards[i].byte_range for i in idx], counts)):
            shards[i].first_line = line
