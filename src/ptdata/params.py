"""Typed, range-checked parameters for ops and recipe sections, checked by pydantic.

The fields of the plain dataclasses (every op, Input, Output, ValidationConfig) carry their type
and range in the annotation: Literal choices and annotated_types bounds (the `Share`, `Count`,
... aliases below). pydantic checks a value against that annotation once, when a recipe is
loaded or built; the dataclasses stay plain and fast at run time. The same annotation, through
pydantic's JSON schema, is rendered as the phrase `ptdata ops` prints and the one-line error
names ("must be a number between 0 and 1, got 1.5"), so the two cannot disagree.
"""
from __future__ import annotations

import dataclasses
import reprlib
import typing
from functools import lru_cache
from typing import Annotated, Any

from annotated_types import Ge, Interval, MinLen

from .errors import InputError

# Reusable annotations (pydantic reads annotated_types bounds; importing them costs no pydantic).
Share = Annotated[float, Interval(ge=0, le=1)]  # a proportion or similarity
# Integers end where JSON and the recipe fingerprint's 64-bit ints do; a bound that high is not shown.
MAX_INT = 2**63 - 1
Count = Annotated[int, Interval(ge=0, le=MAX_INT)]  # zero allowed
Positive = Annotated[int, Interval(ge=1, le=MAX_INT)]
NonEmptyStr = Annotated[str, MinLen(1)]
NonNegative = Annotated[float, Ge(0)]

_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 60, 60, 6, 4, 3


def init_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


@lru_cache(maxsize=None)
def _adapter(cls: type, name: str):
    from pydantic import ConfigDict, TypeAdapter

    return TypeAdapter(_hints(cls)[name], config=ConfigDict(strict=True, allow_inf_nan=False))


def schema(cls: type, name: str) -> dict:
    """The JSON schema pydantic derives from field `name`'s annotation."""
    return _adapter(cls, name).json_schema()


@lru_cache(maxsize=None)
def allowed(cls: type, name: str) -> str:
    """What field `name` of `cls` accepts, in words: its `allowed` metadata, else its schema."""
    f = next(f for f in init_fields(cls) if f.name == name)
    return f.metadata.get("allowed") or describe_schema(schema(cls, name))


def check(cls: type, values: dict[str, Any], where: str = "", noun: str = "parameter",
          partial: bool = False) -> dict[str, Any]:
    """The values for the dataclass `cls`, validated (ints given for floats become floats).
    An unknown name, a missing required one (unless `partial`) or a value outside its field's
    type or range is an InputError of one line."""
    names = [f.name for f in init_fields(cls)]
    unknown = sorted(set(values) - set(names), key=str)
    if unknown:
        _fail(where, f"unknown {noun}(s) {unknown}; known: {names}")
    for f in [] if partial else init_fields(cls):
        if f.name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            _fail(where, f"{f.name}: required ({allowed(cls, f.name)})")
    from pydantic import ValidationError

    out = {}
    for name, value in values.items():
        try:
            out[name] = _adapter(cls, name).validate_python(value)
        except ValidationError:
            _fail(where, f"{name}: must be {allowed(cls, name)}, got {_SHORT.repr(value)}")
    return out


def check_instance(obj: Any, cls: type, where: str, noun: str = "parameter") -> None:
    """Check an object built in Python (Recipe(ops=[NearDedup(threshold=1.5)]) refuses)."""
    if not isinstance(obj, cls):
        _fail(where, f"must be {'an' if cls.__name__[0] in 'AEIOU' else 'a'} {cls.__name__}, got {_SHORT.repr(obj)}")
    check(type(obj), {f.name: getattr(obj, f.name) for f in init_fields(type(obj))}, where, noun)


def _fail(where: str, msg: str) -> typing.NoReturn:
    raise InputError(f"{where}: {msg}" if where else msg) from None


# ---- a JSON schema in words ----------------------------------------------------------------

_NOUNS = {"string": ("a string", "strings"), "integer": ("an integer", "integers"), "number": ("a number", "numbers"),
          "boolean": ("true or false", "booleans"), "object": ("a mapping", "mappings"), "null": ("null", "nulls"),
          "array": ("a list", "lists")}


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) or not float(x).is_integer() else str(int(x))


def _bounds(s: dict) -> str:
    lo, hi = s.get("minimum"), s.get("maximum")
    if hi == MAX_INT:
        hi = None
    xlo, xhi = s.get("exclusiveMinimum"), s.get("exclusiveMaximum")
    if lo is not None and hi is not None:
        return f" between {_num(lo)} and {_num(hi)}"
    parts = [f"{op} {_num(v)}" for op, v in ((">=", lo), (">", xlo), ("<=", hi), ("<", xhi)) if v is not None]
    return " " + " and ".join(parts) if parts else ""


def describe_schema(s: dict, plural: bool = False) -> str:
    """'a number between 0 and 1', 'one of best, first', 'a non-empty list of strings', ..."""
    if "enum" in s:
        return ("values from " if plural else "one of ") + ", ".join(map(str, s["enum"]))
    if "const" in s:
        return repr(s["const"])
    if "anyOf" in s:
        return " or ".join(describe_schema(x, plural) for x in s["anyOf"])
    t = s.get("type")
    if t is None:
        return "any values" if plural else "any value"
    one, many = _NOUNS.get(t, (t, t + "s"))
    text = many if plural else one
    if t in ("integer", "number"):
        text += _bounds(s)
    elif t == "string" and s.get("minLength"):
        text = ("non-empty strings" if plural else "a non-empty string") if s["minLength"] == 1 else \
            f"{text} of at least {s['minLength']} characters"
    elif t == "array":
        least = s.get("minItems", 0)
        head = ("non-empty lists" if plural else "a non-empty list") if least == 1 else ("lists" if plural else "a list")
        text = f"{head} of {f'at least {least} ' if least > 1 else ''}{describe_schema(s.get('items', {}), True)}"
    elif t == "object" and isinstance(s.get("additionalProperties"), dict):
        text = f"{'mappings' if plural else 'a mapping'} of names to {describe_schema(s['additionalProperties'], True)}"
    return text
