"""Language identification (offline: py3langid's bundled model) and a language filter.

CJK text is decided by script first (Han without kana is Chinese), because n-gram models
split Chinese into zh/wuu/yue and stumble on short mixed text; everything else goes to
py3langid with normalized probabilities. Text with no word in any script ("91-33=") is
language-neutral: it takes the language of the rest of the conversation, or `zxx`, which the
filter keeps.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, ClassVar

from annotated_types import MaxLen, MinLen

from ..params import Share
from ..records import Record
from ..text import cjk_count, han_count, record_text
from .base import Drop, MapOp, param, register
from .filters import TextField

_KANA = re.compile(r"[\u3040-\u30ff]")
_HANGUL = re.compile(r"[\uac00-\ud7af]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
def _combining_marks() -> str:
    """Every combining mark of the BMP as a character class body: Python's \\w leaves out the
    vowel signs and viramas of Indic scripts, which would cut "नमस्ते" into pieces."""
    import unicodedata

    marks = [c for c in range(0x300, 0x10000) if unicodedata.category(chr(c)) in ("Mn", "Mc", "Me")]
    ranges, start = [], marks[0]
    for a, b in zip(marks, marks[1:] + [None]):
        if b != a + 1:
            ranges.append(f"\\u{start:04x}-\\u{a:04x}" if a > start else f"\\u{a:04x}")
            start = b
    return "".join(ranges)


_WORD = re.compile(rf"[^\W\d_](?:[^\W\d_]|[{_combining_marks()}])+")  # a letter, then letters or marks: a lone x is no word
NEUTRAL = "zxx"  # ISO 639-2 "no linguistic content": digits, operators, punctuation
LanguageCode = Annotated[str, MinLen(2), MaxLen(3)]

_IDENTIFIER = None
# py3langid labels that are Chinese varieties or scripts we fold into one code
_ALIASES = {"wuu": "zh", "yue": "zh", "zh-tw": "zh", "nn": "no", "nb": "no"}


def cjk_script(text: str) -> str | None:
    """zh / ja / ko when CJK characters carry a real share of the text (one CJK character
    weighs about a four-letter word), so a Chinese instruction quoting English is Chinese."""
    if text.isascii():
        return None
    han, kana, hangul = han_count(text), len(_KANA.findall(text)), len(_HANGUL.findall(text))
    cjk = han + kana + hangul
    if cjk < 2 or cjk * 4 < 0.5 * len(_LATIN.findall(text)):
        return None
    if kana:
        return "ja"
    return "ko" if hangul > han else "zh"


_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")  # \frac, \pi, \sqrt: notation, not words
_MATH_WORDS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log ln lg exp lim sqrt max min mod gcd lcm det deg "
    "dx dy dt mathrm mathbf frac".split())


def language_words(text: str) -> list[str]:
    """The words that can tell a language: two or more letters, not LaTeX commands or the
    names of math functions (sin, log, lim)."""
    return [w for w in _WORD.findall(_LATEX_COMMAND.sub(" ", text)) if w.lower() not in _MATH_WORDS]


def is_neutral(text: str) -> bool:
    """Fewer than two words in any script (arithmetic such as "91-33=", formulas such as
    "sin(x)+cos(x)" or "$\\frac{1}{2}$", a one-word instruction and a number): n-gram
    identifiers give such text an arbitrary language, so it has none of its own."""
    return not cjk_count(text) and len(language_words(text)) < 2


def load() -> None:
    """Load the model (once per process; call before forking workers so they share it)."""
    global _IDENTIFIER
    if _IDENTIFIER is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        _IDENTIFIER = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify(text: str) -> tuple[str, float]:
    """(ISO 639-1 code or 'und', confidence 0..1) for a text."""
    global _IDENTIFIER
    text = text[:2000]
    if not text.strip():
        return "und", 0.0
    if is_neutral(text):
        return NEUTRAL, 1.0
    script = cjk_script(text)
    if script is not None:
        return script, 1.0
    load()
    lang, conf = _IDENTIFIER.classify(text)
    return _ALIASES.get(lang, lang), float(conf)


SHORT_PROMPT = 80


def identify_record(rec: Record, field: str) -> tuple[str, float]:
    """Language of a record's text; a short prompt is judged together with the answer,
    since n-gram identifiers are unsure on a few words, and a text with no words (math only)
    takes the language of the rest of the conversation (NEUTRAL when that has none either)."""
    text = record_text(rec, field)
    if field != "all" and is_neutral(text):
        return identify(record_text(rec, "all"))
    if field == "prompt" and len(text) < SHORT_PROMPT:
        lang, conf = identify(text)
        if conf >= 0.9 or lang in ("zh", "ja", "ko"):
            return lang, conf
        return identify(record_text(rec, "all"))
    return identify(text)


@register
@dataclass
class LanguageId(MapOp):
    """Add `meta.lang` and `scores.lang_conf` (never drops)."""

    name: ClassVar[str] = "language_id"
    field: TextField = param("prompt", "text to identify: prompt (the user's language), response or all")

    def setup(self) -> None:
        load()

    def check(self, rec: Record) -> Drop | None:
        lang, conf = identify_record(rec, self.field)
        rec.meta["lang"] = lang
        rec.scores["lang_conf"] = round(conf, 4)
        return None


@register
@dataclass
class LanguageFilter(MapOp):
    """Keep records in the listed languages (identifies them first when language_id did not run)."""

    name: ClassVar[str] = "language_filter"
    languages: Annotated[list[LanguageCode], MinLen(1)] = param(
        ["en", "zh"], "ISO 639-1 codes to keep", allowed="a non-empty list of ISO 639 codes such as en, zh")
    min_confidence: Share = param(0.0, "also drop when the identifier is less sure than this (0: never)")
    field: TextField = param("prompt", "text to identify: prompt (the user's language), response or all")
    keep_neutral: bool = param(True, f"keep records with no words in any language (math only: {NEUTRAL})")

    def setup(self) -> None:
        load()

    def check(self, rec: Record) -> Drop | None:
        if "lang" not in rec.meta:
            lang, conf = identify_record(rec, self.field)
            rec.meta["lang"], rec.scores["lang_conf"] = lang, round(conf, 4)
        lang, conf = rec.meta["lang"], rec.scores.get("lang_conf", 1.0)
        if lang == NEUTRAL and self.keep_neutral:
            return None
        if lang not in self.languages:
            return Drop("wrong_language", f"{lang} not in {self.languages}")
        if conf < self.min_confidence:
            return Drop("uncertain_language", f"{lang} with confidence {conf:.2f} < {self.min_confidence}")
        return None
