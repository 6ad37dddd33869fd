"""Final-answer extraction for self-consistency and verification.

Kinds: `number` (GSM8K's `#### N`, LaTeX `\\boxed{N}`, else the last number of a sample that
does not stop mid-sentence), `choice` (a multiple-choice letter A-J), `exact` (the whole answer,
normalized), `regex:PATTERN` (group 1, or the whole match), or `module:function` (a user callable
text -> answer or None).

Numbers are compared exactly, as rationals: `1,000.50`, `1000.5` and `2001/2` are one answer,
and two 31-digit integers that differ in their last digit are two (no rounding to a precision).
A truncated sample has no answer at all (`sample_answer`): one the model stopped at its token
limit (`finish_reason: length`), or one that ends in a loop ("...181818181818"); its last number
is where it was cut, not what it concluded.
"""
from __future__ import annotations

import importlib
import re
from fractions import Fraction
from typing import Callable

from ..errors import InputError
from ..text import normalize_for_match

Extractor = Callable[[str], "str | None"]

_HASHES = re.compile(r"####\s*([^\n]+?)\s*$", re.M)
_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
_EXP = r"(?:[eE][+-]?\d+)?"  # scientific notation: 1e3, 2.5E-4
_DIGITS = r"\d(?:[\d,]*\d)?"  # 1,000 but not the comma after "12,"
_RATIO = re.compile(r"(-?)\$?(" + _DIGITS + r"(?:\.\d+)?" + _EXP + r")(?:/(" + _DIGITS + r"(?:\.\d+)?" + _EXP + r"))?")  # a number, or a fraction a/b
MAX_EXPONENT = 1000  # 1e999999999 has no exact value worth building
LONG_DIGITS = 1000  # longer numbers are compared as their canonical digit strings (exact, no huge rationals)
_CONNECTIVES = frozenset("and or then so by to of the a an we is are was plus minus divided with from which that this "
                         "next first second because therefore thus hence if when".split())
_FRAC = re.compile(r"\\[dt]?frac\{\s*(-?[\d.,]+)\s*\}\{\s*([\d.,]+)\s*\}")
CUT_OFF = ("length", "max_tokens")  # finish reasons of a sample stopped by its token limit
_CHOICE_STATED = re.compile(r"answer(?:\s+is)?\s*[:\-]?\s*\(?\**([A-J])\b\)?", re.I)
_CHOICE_PAREN = re.compile(r"\(([A-J])\)")
_CHOICE_ALONE = re.compile(r"^\s*\(?([A-J])[\).:]?\s*$", re.M)


def normalize_number(s: str) -> str | None:
    """The first number (or fraction a/b, or LaTeX \\frac{a}{b}) of `s` as an exact canonical
    string: an integer, a terminating decimal without trailing zeros, or p/q in lowest terms."""
    m = _RATIO.search(_FRAC.sub(r"\1/\2", s).replace(" ", ""))
    if not m:
        return None
    sign, num, den = m.groups()
    num = num.replace(",", "")
    if den is None and len(num) > LONG_DIGITS and num.isdigit():
        return ("-" if sign else "") + (num.lstrip("0") or "0")
    value = _rational(num)
    if value is None:
        return None
    if den is not None:
        d = _rational(den.replace(",", ""))
        if not d:
            return None
        value /= d
    return canonical(-value if sign else value)


def _rational(s: str) -> Fraction | None:
    """The exact value of a decimal numeral, None for an exponent too large to be an answer."""
    mant, _, exp = s.lower().partition("e")
    if exp and abs(int(exp)) > MAX_EXPONENT:
        return None
    if len(mant) > LONG_DIGITS:
        return None
    return Fraction(mant) * (Fraction(10) ** int(exp) if exp else 1)


def canonical(x: Fraction) -> str:
    """One spelling per rational: 72, -0.5, 1000.5, 1/3 (never rounded)."""
    if x.denominator == 1:
        return str(x.numerator)
    q, k = x.denominator, 0
    for p in (2, 5):
        while q % p == 0:
            q //= p
    if q != 1:  # not a terminating decimal
        return f"{x.numerator}/{x.denominator}"
    while (x * 10**k).denominator != 1:
        k += 1
    digits = str(abs(x.numerator * 10**k // x.denominator)).rjust(k + 1, "0")
    return f"{'-' if x < 0 else ''}{digits[:-k]}.{digits[-k:]}"


def number(text: str) -> str | None:
    m = _HASHES.findall(text)
    if m:
        return normalize_number(m[-1])
    b = _BOXED.findall(text)
    if b:
        return normalize_number(b[-1])
    found = list(_RATIO.finditer(text))
    if not found or not _concluded(text[found[-1].end():]):
        return None
    return normalize_number(found[-1].group())


def _concluded(tail: str) -> bool:
    """Whether the rest of the last number's line ends the answer ("12.", "= 160 minutes",
    "5 hours to get back", or a new line after it) rather than breaking off ("12 and then we
    multiply by", "12, and next"): then that number is no conclusion."""
    line, newline, _ = tail.partition("\n")
    t = line.strip()
    if not t or t[-1] in ".!?。！？)]}\"'*$`》」":
        return True
    if t[-1] in ",;:-(" or (t.startswith(",") and not newline):
        return False
    words = re.findall(r"\w+", t)
    if not words:
        return True
    return words[-1].lower() not in _CONNECTIVES and (bool(newline) or len(words) <= 8)


def looping_tail(text: str, min_repeats: int = 6, min_chars: int = 30, max_unit: int = 40) -> bool:
    """True when the text ends by repeating one short piece (with a letter or digit) at least
    `min_repeats` times over at least `min_chars` characters: a degenerate sample, cut where it was."""
    t = text.rstrip()
    for size in range(1, min(max_unit, len(t) // min_repeats) + 1):
        unit = t[-size:]
        if not any(c.isalnum() for c in unit):
            continue
        end, reps = len(t) - size, 1
        while end >= size and t[end - size:end] == unit:
            end, reps = end - size, reps + 1
        if reps >= min_repeats and reps * size >= min_chars:
            return True
    return False


def is_truncated(sample: dict) -> bool:
    """Stopped by the token limit, or ending in a loop."""
    return sample.get("finish_reason") in CUT_OFF or looping_tail(sample.get("text") or "")


def sample_answer(sample: dict, extract: "Extractor") -> str | None:
    """A sample's final answer; a truncated sample has none (it does not vote)."""
    if is_truncated(sample):
        return None
    return extract(sample.get("text") or "")


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
