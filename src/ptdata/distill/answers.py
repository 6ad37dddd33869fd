"""Final-answer extraction for self-consistency and verification.

Kinds: `number` (GSM8K's `#### N`, LaTeX `\\boxed{N}`, else the last number), `choice` (a
multiple-choice letter A-J), `exact` (the whole answer, normalized), `regex:PATTERN` (group 1,
or the whole match), or `module:function` (a user callable text -> answer or None).
"""
from __future__ import annotations

import importlib
import re
from decimal import Decimal, InvalidOperation
from typing import Callable

from ..errors import InputError
from ..text import normalize_for_match

Extractor = Callable[[str], "str | None"]

_HASHES = re.compile(r"####\s*([^\n]+?)\s*$", re.M)
_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_CHOICE_STATED = re.compile(r"answer(?:\s+is)?\s*[:\-]?\s*\(?\**([A-J])\b\)?", re.I)
_CHOICE_PAREN = re.compile(r"\(([A-J])\)")
_CHOICE_ALONE = re.compile(r"^\s*\(?([A-J])[\).:]?\s*$", re.M)


def normalize_number(s: str) -> str | None:
    m = _NUMBER.search(s.replace(" ", ""))
    if not m:
        return None
    raw = m.group(0).replace("$", "").replace(",", "")
    try:
        d = Decimal(raw)
    except InvalidOperation:
        return None
    d = d.normalize()
    out = format(d, "f")
    return "0" if out in ("-0", "") else out


def number(text: str) -> str | None:
    m = _HASHES.findall(text)
    if m:
        return normalize_number(m[-1])
    b = _BOXED.findall(text)
    if b:
        return normalize_number(b[-1])
    nums = _NUMBER.findall(text)
    return normalize_number(nums[-1]) if nums else None


def choice(text: str) -> str | None:
    for rx in (_CHOICE_STATED, _CHOICE_PAREN, _CHOICE_ALONE):
        found = rx.findall(text)
        if found:
            return found[-1].upper()
    return None


def exact(text: str) -> str | None:
    s = normalize_for_match(text)
    return s or None


def extractor(kind: str | Callable[[str], str | None]) -> Extractor:
    if callable(kind):
        return kind
    if kind == "number":
        return number
    if kind == "choice":
        return choice
    if kind == "exact":
        return exact
    if kind.startswith("regex:"):
        try:
            rx = re.compile(kind[6:], re.S)
        except re.error as e:
            raise InputError(f"answer regex {kind[6:]!r}: {e}") from None

        def by_regex(text: str) -> str | None:
            found = list(rx.finditer(text))
            if not found:
                return None
            m = found[-1]
            return (m.group(1) if rx.groups else m.group(0)).strip()
        return by_regex
    if ":" in kind:
        mod, _, fn = kind.partition(":")
        try:
            f = getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError) as e:
            raise InputError(f"answer extractor {kind!r} cannot be imported: {e}") from None
        return f
    raise InputError(f"answer kind must be number, choice, exact, regex:PATTERN or module:function, got {kind!r}")


def reference_answer(ref: str | None, extract: Extractor) -> str | None:
    """A reference goes through the same extractor (a bare '72' and '#### 72' both give 72)."""
    if ref is None:
        return None
    got = extract(ref)
    return got if got is not None else ref.strip()
