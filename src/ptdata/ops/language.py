"""Language identification (offline: py3langid's bundled model) and a language filter.

CJK text is decided by script first (Han without kana is Chinese), because n-gram models
split Chinese into zh/wuu/yue and stumble on short mixed text; everything else goes to
py3langid with normalized probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..records import Record
from ..text import han_count, record_text
import re

_KANA = re.compile(r"[\u3040-\u30ff]")
_HANGUL = re.compile(r"[\uac00-\ud7af]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
from .base import Drop, MapOp, param, register

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
    script = cjk_script(text)
    if script is not None:
        return script, 1.0
    load()
    lang, conf = _IDENTIFIER.classify(text)
    return _ALIASES.get(lang, lang), float(conf)


SHORT_PROMPT = 80


def identify_record(rec: Record, field: str) -> tuple[str, float]:
    """Language of a record's text; a short prompt is judged together with the answer,
    since n-gram identifiers are unsure on a few words."""
    text = record_text(rec, field)
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
    pure: ClassVar[bool] = True
    field: str = param("prompt", "text to identify: prompt (the user's language), response or all")

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
    pure: ClassVar[bool] = True
    languages: list = param(["en", "zh"], "ISO 639-1 codes to keep")
    min_confidence: float = param(0.0, "also drop when the identifier is less sure than this (0: never)")
    field: str = param("prompt", "text to identify: prompt (the user's language), response or all")

    def setup(self) -> None:
        load()

    def check(self, rec: Record) -> Drop | None:
        if "lang" not in rec.meta:
            lang, conf = identify_record(rec, self.field)
            rec.meta["lang"], rec.scores["lang_conf"] = lang, round(conf, 4)
        lang, conf = rec.meta["lang"], rec.scores.get("lang_conf", 1.0)
        if lang not in self.languages:
            return Drop("wrong_language", f"{lang} not in {self.languages}")
        if conf < self.min_confidence:
            return Drop("uncertain_language", f"{lang} with confidence {conf:.2f} < {self.min_confidence}")
        return None
