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
from typing import Annotated, Any, Literal

import orjson
from annotated_types import MinLen

from ..errors import InputError
from ..formats import FORMATS
from ..ops import get_op
from ..ops.base import Op
from ..params import NonEmptyStr, Positive, check, check_instance
from ..reader import ReadOptions
from ..validation import ValidationConfig

FormatName = Literal[tuple(FORMATS)]
# A recipe may use YAML anchors and aliases (shared llm settings), but they may not blow it up:
# expanded, it holds at most this many nodes and characters beyond 10x the file's size.
YAML_EXPANSION = 100_000
YAML_DEPTH = 64


@dataclass
class Input:
    path: NonEmptyStr
    format: FormatName | None = None
    fields: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_instance(self, Input, "input", "key")

    def files(self, base: Path) -> list[Path]:
        pattern = self.path if Path(self.path).is_absolute() else str(base / self.path)
        found = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
        if not found:
            raise InputError(f"input {self.path!r} matches no file")
        return found

    def read_options(self, validation: ValidationConfig) -> ReadOptions:
        opts = dict(self.options)
        if self.fields:
            opts["fields"] = dict(self.fields)
        return ReadOptions(fmt=self.format, opts=opts, validation=validation)


SUCCESS = "_SUCCESS"  # written last: the outputs beside it are whole and belong to the recipe it names
RUN_FILES = ("rejects.jsonl", "stats.json", "report.html", SUCCESS)  # what a run writes beside its kept file


@dataclass
class Output:
    dir: NonEmptyStr = "out"
    file: NonEmptyStr = "kept.jsonl"
    format: FormatName = "ptdata"
    options: dict[str, Any] = field(default_factory=dict)
    report: bool = True
    # compact: a record a dedup op dropped that is byte for byte the record it kept in its place
    # (all but meta.source) is listed by reference ("copy_of"), not repeated; full: every row
    # carries its record. `ptdata rejects OUT --full` restores the records either way.
    rejects: Literal["compact", "full"] = "compact"

    def __post_init__(self) -> None:
        check_instance(self, Output, "output", "key")
        if Path(self.file).name != self.file or self.file.startswith("."):
            raise InputError(f"output: file: must be a file name inside output.dir (no '/', not starting with '.'), got {self.file!r}")
        if self.file in RUN_FILES:
            raise InputError(f"output: file: {self.file!r} is one of the run's own files ({', '.join(RUN_FILES)})")

    @property
    def copies_by_reference(self) -> bool:
        """References need the kept records in ptdata's own format to point at."""
        return self.rejects == "compact" and self.format == "ptdata"


@dataclass
class Recipe:
    inputs: list[Input]
    ops: list[Op]
    output: Output = field(default_factory=Output)
    name: NonEmptyStr = "recipe"
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    batch_size: Positive = 2000
    shard_bytes: Positive = 4 << 20
    base_dir: Path = field(default_factory=Path.cwd)
    source: str | None = None  # the recipe file, to name in errors found when it runs

    def __post_init__(self) -> None:
        """A recipe built in Python is checked like a loaded one: every section and op parameter
        by its annotation (Recipe(ops=[NearDedup(threshold=1.5)]) is refused)."""
        check(Recipe, {"name": self.name, "batch_size": self.batch_size, "shard_bytes": self.shard_bytes}, partial=True)
        for key, items, cls in (("inputs", self.inputs, Input), ("ops", self.ops, Op)):
            if not isinstance(items, list):
                raise InputError(f"{key}: must be a list of {cls.__name__} objects, got {type(items).__name__}")
            for i, x in enumerate(items):
                if isinstance(x, Op):
                    x.validate(f"ops[{i}] {x.name}")
                else:
                    check_instance(x, cls, f"{key}[{i}]")
        check_instance(self.output, Output, "output")
        check_instance(self.validation, ValidationConfig, "validation")
        _label_repeated_ops(self.ops)

    def where(self) -> str:
        """The prefix of an error about this recipe: its file, when it came from one."""
        return f"{self.source}: " if self.source else ""

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


def _label_repeated_ops(ops: list[Op]) -> None:
    """An op used twice gets its own label from the second use on (`length_filter#2`), so its
    counts in stats.json and its rows in the rejects are its own, not merged by name."""
    seen: dict[str, int] = {}
    if len({id(op) for op in ops}) < len(ops):
        raise InputError("ops: the same op object is listed twice; build one per use (its counts are its own)")
    for op in ops:
        base = type(op).name
        seen[base] = seen.get(base, 0) + 1
        if seen[base] > 1:
            op.name = f"{base}#{seen[base]}"
        else:
            op.__dict__.pop("name", None)  # a label from an earlier recipe does not stick


@dataclass
class RecipeFile:
    """The top level of a recipe file, as types; each section is then checked by its own class
    (Input, an op, Output, ValidationConfig). A key left empty (`ops:`) counts as absent."""

    name: NonEmptyStr = "recipe"
    inputs: Annotated[list[NonEmptyStr | dict[str, Any]], MinLen(1)] = field(default_factory=list)
    ops: list[NonEmptyStr | dict[str, Any]] = field(default_factory=list)
    output: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    batch_size: Positive = 2000
    shard_bytes: Positive = 4 << 20


def parse_ops(items: list, where: str = "") -> list[Op]:
    """Ops from their recipe form: a name, {name: {params}} or {op: name, params...}."""
    at = f"{where}: " if where else ""
    ops = []
    for i, item in enumerate(items or []):
        if isinstance(item, str):
            name, params = item, {}
        elif isinstance(item, dict) and "op" in item:
            params = dict(item)
            name = params.pop("op")
        elif isinstance(item, dict) and len(item) == 1:
            name, params = next(iter(item.items()))
            params = params if params is not None else {}
        else:
            raise InputError(f"{at}ops[{i}] must be an op name, {{name: {{params}}}} or {{op: name, ...}}")
        if not isinstance(name, str):
            raise InputError(f"{at}ops[{i}]: the op name must be a string, got {name!r}")
        if not isinstance(params, dict):
            raise InputError(f"{at}ops[{i}] {name}: parameters must be a mapping, got {type(params).__name__}")
        try:
            cls = get_op(name)
        except InputError as e:
            raise InputError(f"{at}ops[{i}]: {e}") from None
        ops.append(cls.from_params(params, f"{at}ops[{i}] {name}"))
    return ops


def load_ops_file(path: str | Path) -> list[Op]:
    """Ops from a YAML file holding a list of ops (or a mapping with `ops:`), checked as a recipe's are."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the ops file ({e})") from None
    items = parse_yaml(text, path) or []
    if isinstance(items, dict):
        items = items.get("ops") or []
    if not isinstance(items, list):
        raise InputError(f"{path}: a list of ops, or a mapping with ops:")
    return parse_ops(items, str(path))


def load_recipe(path: str | Path) -> Recipe:
    """A recipe from YAML, every field and op parameter checked: a problem is one InputError line
    naming the file, the section or op, the parameter and what it allows."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read recipe ({e})") from None
    data = parse_yaml(text, path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: a recipe is a mapping with inputs, ops and output")
    data = {k: v for k, v in data.items() if v is not None}
    if "inputs" not in data:
        raise InputError(f"{path}: no inputs")
    try:  # a check in a section's own __post_init__ does not know the file: name it here
        top = check(RecipeFile, data, str(path), "key")
        inputs = [Input(**check(Input, {"path": item} if isinstance(item, str) else item, f"{path}: inputs[{i}]", "key"))
                  for i, item in enumerate(top["inputs"])]
        output = Output(**check(Output, top.get("output", {}), f"{path}: output", "key"))
        validation = ValidationConfig(**check(ValidationConfig, top.get("validation", {}), f"{path}: validation", "key"))
        return Recipe(inputs=inputs, ops=parse_ops(top.get("ops"), str(path)), output=output, name=top.get("name", path.stem),
                      validation=validation, batch_size=top.get("batch_size", 2000), shard_bytes=top.get("shard_bytes", 4 << 20),
                      source=str(path))
    except InputError as e:
        raise InputError(str(e) if str(e).startswith(str(path)) else f"{path}: {e}") from None


def parse_yaml(text: str, path: Path) -> Any:
    """safe_load, refusing a document whose aliases expand it past a small bound (a few hundred
    bytes of nested aliases, a "billion laughs", would otherwise expand to gigabytes when the
    recipe is hashed or printed), a cyclic alias, or nesting deeper than YAML_DEPTH."""
    import yaml  # here: a recipe built in Python needs no YAML parser

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, YAML_EXPANSION + 10 * len(text), path)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise InputError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise InputError(f"{path}: invalid YAML (nested more than {YAML_DEPTH} levels deep)") from None
    finally:
        loader.dispose()


def _check_expansion(root: Any, limit: int, path: Path) -> None:
    """Size of the document with every alias expanded (nodes plus scalar characters), computed
    on the composed graph, where an alias is a shared node, without expanding it."""
    import yaml

    size: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[Any, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        kids = _yaml_children(node, yaml)
        if done:
            open_.discard(key)
            size[key] = 1 + (len(node.value) if not kids and isinstance(node.value, str) else sum(size[id(k)] for k in kids))
            if size[key] > limit:
                raise InputError(f"{path}: YAML aliases expand the recipe past {limit:,} nodes and characters; "
                                 "write the values out or use fewer aliases")
            continue
        if key in size:
            continue
        if key in open_:
            raise InputError(f"{path}: invalid YAML (an alias refers to a node that contains it)")
        if depth > YAML_DEPTH:
            raise InputError(f"{path}: invalid YAML (nested more than {YAML_DEPTH} levels deep)")
        if isinstance(node, yaml.MappingNode):
            _no_duplicate_keys(node, path)
        open_.add(key)
        stack.append((node, depth, True))
        stack.extend((k, depth + 1, False) for k in kids if id(k) not in size)


def _no_duplicate_keys(node: Any, path: Path) -> None:
    """YAML would keep the last of two equal keys and drop the first without a word."""
    seen: set = set()
    for k, _ in node.value:
        if getattr(k, "tag", "").endswith(":str") or isinstance(getattr(k, "value", None), str):
            if k.value in seen:
                raise InputError(f"{path}: line {k.start_mark.line + 1}: key {k.value!r} given twice")
            seen.add(k.value)


def _yaml_children(node: Any, yaml: Any) -> list:
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []
