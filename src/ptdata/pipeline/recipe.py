"""Recipes: inputs, an ordered list of ops with parameters, outputs. YAML or Python.

    name: curate
    inputs:
      - path: data/*.jsonl            # files or globs, any supported format
        format: alpaca                # optional: detected otherwise
    validation: {max_turn_chars: 20000}
    ops:
      - language_filter: {languages: [en, zh]}
      - exact_dedup: {}
    output: {dir: out/curated, file: kept.jsonl, format: ptdata}
"""
from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..errors import InputError
from ..formats import FORMATS
from ..ops import get_op
from ..ops.base import Op
from ..reader import ReadOptions
from ..validation import ValidationConfig


@dataclass
class Input:
    path: str
    format: str | None = None
    fields: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    def files(self, base: Path) -> list[Path]:
        pattern = self.path if Path(self.path).is_absolute() else str(base / self.path)
        found = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
        if not found:
            raise InputError(f"input {self.path!r} matches no file")
        return found

    def read_options(self, validation: ValidationConfig) -> ReadOptions:
        if self.format is not None and self.format not in FORMATS:
            raise InputError(f"input {self.path}: unknown format {self.format!r}")
        opts = dict(self.options)
        if self.fields:
            opts["fields"] = dict(self.fields)
        return ReadOptions(fmt=self.format, opts=opts, validation=validation)


@dataclass
class Output:
    dir: str = "out"
    file: str = "kept.jsonl"
    format: str = "ptdata"
    options: dict = field(default_factory=dict)
    report: bool = True
    # compact: a record a dedup op dropped that is byte for byte the record it kept in its place
    # (all but meta.source) is listed by reference ("copy_of"), not repeated; full: every row
    # carries its record. `ptdata rejects OUT --full` restores the records either way.
    rejects: str = "compact"

    def __post_init__(self) -> None:
        if self.rejects not in ("compact", "full"):
            raise InputError(f"output.rejects must be compact or full, not {self.rejects!r}")

    @property
    def copies_by_reference(self) -> bool:
        """References need the kept records in ptdata's own format to point at."""
        return self.rejects == "compact" and self.format == "ptdata"


@dataclass
class Recipe:
    inputs: list[Input]
    ops: list[Op]
    output: Output = field(default_factory=Output)
    name: str = "recipe"
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    batch_size: int = 2000
    shard_bytes: int = 4 << 20
    base_dir: Path = field(default_factory=Path.cwd)

    def out_dir(self) -> Path:
        d = Path(self.output.dir)
        return d if d.is_absolute() else self.base_dir / d

    def to_dict(self) -> dict[str, Any]:
        """Canonical form: what the resume manifest hashes."""
        return {
            "name": self.name,
            "inputs": [vars(i) for i in self.inputs],
            "ops": [{type(op).name: op.params()} for op in self.ops],
            "output": vars(self.output),
            "validation": vars(self.validation),
            "batch_size": self.batch_size,
            "shard_bytes": self.shard_bytes,
        }

    def fingerprint(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS, default=str)


def parse_ops(items: list) -> list[Op]:
    ops = []
    for i, item in enumerate(items or []):
        if isinstance(item, str):
            name, params = item, {}
        elif isinstance(item, dict) and "op" in item:
            params = dict(item)
            name = params.pop("op")
        elif isinstance(item, dict) and len(item) == 1:
            name, params = next(iter(item.items()))
            params = params or {}
        else:
            raise InputError(f"ops[{i}] must be an op name, {{name: {{params}}}} or {{op: name, ...}}")
        if not isinstance(params, dict):
            raise InputError(f"ops[{i}] ({name}): parameters must be a mapping")
        ops.append(get_op(name).from_params(params))
    return ops


def load_recipe(path: str | Path) -> Recipe:
    import yaml  # here: a recipe built in Python needs no YAML parser

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read recipe ({e})") from None
    except yaml.YAMLError as e:
        raise InputError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a recipe is a mapping with inputs, ops and output")
    unknown = set(data) - {"name", "inputs", "ops", "output", "validation", "batch_size", "shard_bytes"}
    if unknown:
        raise InputError(f"{path}: unknown recipe keys {sorted(unknown)}")
    inputs = []
    for i, item in enumerate(data.get("inputs") or []):
        if isinstance(item, str):
            item = {"path": item}
        try:
            inputs.append(Input(**item))
        except TypeError as e:
            raise InputError(f"{path}: inputs[{i}]: {e}") from None
    if not inputs:
        raise InputError(f"{path}: no inputs")
    try:
        output = Output(**(data.get("output") or {}))
        validation = ValidationConfig(**(data.get("validation") or {}))
    except (TypeError, InputError) as e:
        raise InputError(f"{path}: {e}") from None
    if output.format not in FORMATS:
        raise InputError(f"{path}: output format {output.format!r} is unknown")
    return Recipe(inputs=inputs, ops=parse_ops(data.get("ops")), output=output, name=data.get("name", path.stem),
                  validation=validation, batch_size=int(data.get("batch_size", 2000)),
                  shard_bytes=int(data.get("shard_bytes", 4 << 20)))
