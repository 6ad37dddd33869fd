"""PII detection and redaction: e-mail, phone numbers (international, mainland China mobile),
Chinese resident ID numbers (checksum-validated), credit cards (Luhn-validated), IP addresses,
API keys and tokens. Redact (typed placeholders), reject, or only count.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator

from ..records import Record
from .base import Drop, MapOp, param, register

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def cn_id_valid(s: str) -> bool:
    """GB 11643 checksum and a plausible birth date."""
    if len(s) != 18 or not s[:17].isdigit():
        return False
    year, month, day = int(s[6:10]), int(s[10:12]), int(s[12:14])
    if not (1900 <= year <= 2100 and 1 <= month <= 12 and 1 <= day <= 31):
        return False
    total = sum(int(c) * w for c, w in zip(s[:17], _ID_WEIGHTS))
    return _ID_CHECK[total % 11] == s[17].upper()


def luhn_valid(digits: str) -> bool:
    total, alt = 0, False
    for c in reversed(digits):
        d = int(c)
        if alt:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        alt = not alt
    return total % 10 == 0


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


# (type, pattern, validator). Order matters: earlier types are replaced first, so a resident ID
# is not also read as a phone number or card.
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
PATTERNS: list[tuple[str, re.Pattern, Callable[[str], bool] | None]] = [
    ("API_KEY", re.compile(
        r"(?<![A-Za-z0-9_\-])(?:sk-(?:proj-|ant-)?[A-Za-z0-9_\-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|"
        r"github_pat_[A-Za-z0-9_]{30,}|xox[baprs]-[A-Za-z0-9\-]{10,}|AIza[0-9A-Za-z_\-]{35}|hf_[A-Za-z0-9]{30,}|"
        r"glpat-[A-Za-z0-9_\-]{20,}|eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,})|"
        r"(?<=Bearer )[A-Za-z0-9._~+/\-]{20,}=*|"
        r"(?i:(?<=api_key=)|(?<=api_key: )|(?<=apikey=)|(?<=secret=)|(?<=token=)|(?<=password=)|(?<=access_token=))"
        r"[A-Za-z0-9_\-./+]{12,}"), None),
    ("EMAIL", re.compile(r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}(?![A-Za-z])"), None),
    ("CN_ID", re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])"), cn_id_valid),
    ("CREDIT_CARD", re.compile(r"(?<![\d\-+])(?:\d[ \-]?){12,18}\d(?![\d\-])"), lambda s: 13 <= len(_digits(s)) <= 19 and luhn_valid(_digits(s))),
    ("PHONE", re.compile(r"(?<![0-9A-Za-z+])(?:\+?86[ \-]?)?1[3-9]\d(?:[ \-]?\d{4}){2}(?!\d)"), None),  # mainland China mobile
    ("PHONE", re.compile(
        r"(?<![0-9A-Za-z+])(?:\+\d{1,3}[ .\-]?(?:\(\d{1,4}\)[ .\-]?)?\d{1,4}(?:[ .\-]?\d{2,4}){1,4}|"
        r"\(\d{3}\)[ .\-]?\d{3}[ .\-]\d{4}|\d{3}[.\-]\d{3}[.\-]\d{4})(?!\d)"),
        lambda s: 7 <= len(_digits(s)) <= 15),
    ("IP", re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\d.]*\d)"), None),
    ("IP", re.compile(r"(?<![:0-9A-Za-z])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![:0-9A-Za-z])|(?<![:0-9A-Za-z])(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}:?){1,6}(?![:0-9A-Za-z])"),
     lambda s: s.count(":") >= 2 and any(c.isdigit() for c in s)),
]
TYPES = sorted({t for t, _, _ in PATTERNS})


def find_pii(text: str, types: set[str] | None = None) -> Iterator[tuple[str, int, int]]:
    """(type, start, end) of each PII span, non-overlapping, earlier pattern types first."""
    taken: list[tuple[int, int]] = []
    for typ, rx, ok in PATTERNS:
        if types and typ not in types:
            continue
        for m in rx.finditer(text):
            a, b = m.span()
            if ok is not None and not ok(m.group(0)):
                continue
            if any(a < y and x < b for x, y in taken):
                continue
            taken.append((a, b))
            yield typ, a, b


def redact(text: str, types: set[str] | None = None, template: str = "[{type}]") -> tuple[str, Counter]:
    spans = sorted(find_pii(text, types), key=lambda t: t[1])
    if not spans:
        return text, Counter()
    out, pos, found = [], 0, Counter()
    for typ, a, b in spans:
        out.append(text[pos:a])
        out.append(template.format(type=typ))
        pos = b
        found[typ] += 1
    out.append(text[pos:])
    return "".join(out), found


@register
@dataclass
class Pii(MapOp):
    """Find PII in every turn; redact it with typed placeholders, reject the record, or only count."""

    name: ClassVar[str] = "pii"
    pure: ClassVar[bool] = True
    action: str = param("redact", "redact, reject or detect")
    types: list = param(TYPES, f"PII types to look for: {', '.join(TYPES)}")
    template: str = param("[{type}]", "replacement for redacted spans")

    def __post_init__(self) -> None:
        if self.action not in ("redact", "reject", "detect"):
            raise ValueError("action must be redact, reject or detect")
        unknown = set(self.types) - set(TYPES)
        if unknown:
            raise ValueError(f"unknown PII types {sorted(unknown)}")
        self._types = set(self.types)

    def check(self, rec: Record) -> Drop | None:
        found: Counter = Counter()
        changed = False
        for msgs in (rec.messages, rec.chosen or [], rec.rejected or []):
            for m in msgs:
                c = m["content"]
                if not c or (c.isascii() and not any(ch in c for ch in "@.0123456789-_")):
                    continue
                new, f = redact(c, self._types, self.template)
                if f:
                    found.update(f)
                    if self.action == "redact":
                        m["content"] = new
                        changed = True
        if not found:
            return None
        rec.meta["pii"] = dict(found)
        if self.action == "reject":
            return Drop("pii", ", ".join(f"{k} x{v}" for k, v in sorted(found.items())))
        if changed:
            rec.refresh_id()
        return None
