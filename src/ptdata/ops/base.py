"""The op contract, datatrove-style: an op keeps or drops each record and says why.

A *map op* works on one batch at a time (stateless across batches, so batches run in
parallel processes or as Ray `map_batches`). A *global op* needs the whole dataset
(dedup, selection): a parallel `keys` phase computes compact per-record data, then one
`decide` phase returns which records to drop and why.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, ClassVar, NamedTuple

import numpy as np

from ..errors import InputError
from ..params import allowed, check, check_instance
from ..records import Record

OPS: dict[str, type["Op"]] = {}  # filled as op modules are imported (see ptdata.ops.get_op)


def register(cls: type["Op"]) -> type["Op"]:
    OPS[cls.name] = cls
    return cls


class ParamDoc(NamedTuple):
    name: str
    default: str
    allowed: str  # the values the field's annotation accepts, in words (also the error's wording)
    help: str


@dataclass(frozen=True)
class Drop:
    """Why a record was dropped: a machine-readable reason and a human detail."""

    reason: str
    detail: str = ""


@dataclass
class Op:
    """Base of all ops. Parameters are dataclass fields declared with `param`: the annotation is
    the type and range (Literal choices, params.Share/Count/Positive bounds), `help` documents it."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "map"

    @classmethod
    def from_params(cls, params: dict[str, Any], where: str = "") -> "Op":
        """Build the op from recipe values, each checked against its field's type and range first
        (params.check), so a bad value is one line naming the parameter and what it allows."""
        where = where or f"op {cls.name}"
        values = check(cls, params, where)
        try:
            op = cls(**values)
        except (TypeError, ValueError, InputError) as e:  # settings checked while the op sets itself up
            raise InputError(f"{where}: {e}") from None
        return op.validate(where)

    def validate(self, where: str = "") -> "Op":
        """Check every parameter (defaults too) by its annotation, then the rules across them.
        Run once when a recipe is loaded or built, never per batch."""
        where = where or f"op {self.name}"
        check_instance(self, type(self), where)
        try:
            self.rules()
        except ValueError as e:
            raise InputError(f"{where}: {e}") from None
        return self

    def rules(self) -> None:
        """Rules across parameters (raise ValueError), run after each one's own type and range check."""

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    @classmethod
    def summary(cls) -> str:
        """The docstring's first paragraph on one line (what `ptdata ops` prints, never cut)."""
        first = (cls.__doc__ or "").strip().split("\n\n", 1)[0]
        return " ".join(first.split())

    @classmethod
    def describe(cls) -> list["ParamDoc"]:
        """One row per parameter for `ptdata ops`: default, what values it allows, help."""
        rows = []
        for f in fields(cls):
            if not f.init:
                continue
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
            rows.append(ParamDoc(f.name, repr(default), allowed(cls, f.name), f.metadata.get("help", "")))
        return rows

    def setup(self) -> None:
        """Load what the op needs (models, indexes) once per worker process."""


@dataclass
class MapOp(Op):
    kind: ClassVar[str] = "map"

    def process(self, batch: list[Record]) -> tuple[list[Record], list[tuple[Record, Drop]]]:
        """Default: `check` each record; None keeps it."""
        kept, dropped = [], []
        for rec in batch:
            d = self.check(rec)
            if d is None:
                kept.append(rec)
            else:
                dropped.append((rec, d))
        return kept, dropped

    def check(self, rec: Record) -> Drop | None:
        raise NotImplementedError


@dataclass
class GlobalOp(Op):
    kind: ClassVar[str] = "global"

    def keys(self, batch: list[Record]) -> dict[str, np.ndarray]:
        """Per-record arrays (same length as the batch), computed in parallel. A ragged key X
        is flattened, with the per-record lengths in X_n."""
        raise NotImplementedError

    # Processes `decide` may use (the executor sets it to its worker count): no core idles while
    # the parent decides.
    decide_workers: ClassVar[int] = 1
    # A key by which the decision splits: records with different values of it never affect each
    # other's fate, so the executor decides each partition of its values apart, in parallel, and
    # adds their reports (numbers and histograms). None: one decision on all keys.
    partition_key: ClassVar[str | None] = None
    # Decided in stages on the workers (pipeline/staged.py) when the run has more than one.
    staged: ClassVar[bool] = False

    def decide(self, keys: dict[str, np.ndarray]) -> "Decision":
        """Given all keys concatenated in record order, which records to drop and why."""
        raise NotImplementedError


@dataclass
class Decision:
    """A global op's verdict: sorted positions to drop, a reason (one for all, or one each),
    a detail per drop (strings, or a UTF-8 bytes array built without a Python loop), and
    figures for the report. Arrays and strings, not objects: a dedup over millions of records
    drops hundreds of thousands."""

    drop: np.ndarray
    reason: str | list[str]
    detail: list[str] | np.ndarray
    report: dict
    # dedup ops: for each drop, the record kept in its place. A drop that is that record byte for
    # byte (all but meta.source) is listed in the rejects by reference, not repeated.
    kept_for: np.ndarray | None = None

    def reasons(self) -> list[str]:
        return [self.reason] * len(self.drop) if isinstance(self.reason, str) else self.reason


def param(default: Any, help: str, allowed: str | None = None) -> Any:
    """A documented op parameter. Its type and range are the field's annotation (checked by
    pydantic when a recipe is loaded); `allowed` words them where the schema says too little."""
    meta = {"help": help, **({"allowed": allowed} if allowed else {})}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)
