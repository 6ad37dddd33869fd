"""Heuristic quality filters: length, turns, repetition, garbled text, refusals/boilerplate."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar, Literal

from ..params import Count, Share
from ..records import Record
from ..text import record_text, response_text, response_turns, tokens
from .base import Drop, MapOp, param, register

TextField = Literal["response", "prompt", "all"]  # which text of a record an op looks at


@register
@dataclass
class LengthFilter(MapOp):
    """Keep records whose text length is within bounds, in characters and (with a tokenizer) in tokens."""

    name: ClassVar[str] = "length_filter"
    field: TextField = param("response", "which text to measure: response, prompt or all")
    min_chars: Count = param(1, "minimum characters")
    max_chars: Count = param(100_000, "maximum characters")
    min_tokens: Count = param(0, "minimum tokens (needs tokenizer)")
    max_tokens: Count = param(0, "maximum tokens, 0 = no limit (needs tokenizer)")
    tokenizer: str = param("", "path to a Hugging Face tokenizer.json (or a folder holding one)")

    def __post_init__(self) -> None:
        if (self.min_tokens or self.max_tokens) and not self.tokenizer:
            raise ValueError("min_tokens/max_tokens need a tokenizer")
        self._tok = None

    def rules(self) -> None:
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) is above max_chars ({self.max_chars}): every record would be dropped")
        if self.max_tokens and self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) is above max_tokens ({self.max_tokens}): every record would be dropped")

    def setup(self) -> None:
        if self.tokenizer and self._tok is None:
            self._tok = load_tokenizer(self.tokenizer)

    def check(self, rec: Record) -> Drop | None:
        text = record_text(rec, self.field)
        n = len(text)
        if n < self.min_chars:
            return Drop("too_short", f"{self.field} has {n} chars < {self.min_chars}")
        if n > self.max_chars:
            return Drop("too_long", f"{self.field} has {n} chars > {self.max_chars}")
        if self.tokenizer:
            self.setup()
            t = len(self._tok.encode(text, add_special_tokens=False).ids)
            rec.scores[f"tokens.{self.field}"] = t
            if t < self.min_tokens:
                return Drop("too_few_tokens", f"{self.field} has {t} tokens < {self.min_tokens}")
            if self.max_tokens and t > self.max_tokens:
                return Drop("too_many_tokens", f"{self.field} has {t} tokens > {self.max_tokens}")
        return None


def load_tokenizer(path: str):
    """A fast HF tokenizer from a local tokenizer.json (never from a hub)."""
    from pathlib import Path

    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ValueError("token lengths need the `tokenizers` package: pip install tokenizers") from None
    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.exists():
        raise ValueError(f"no tokenizer.json at {p}")
    return Tokenizer.from_file(str(p))


@register
@dataclass
class TurnFilter(MapOp):
    """Keep conversations with a number of user+assistant turns within bounds."""

    name: ClassVar[str] = "turn_filter"
    min_turns: Count = param(2, "minimum user+assistant turns (a prompt record counts its prompt turns)")
    max_turns: Count = param(64, "maximum user+assistant turns")

    def rules(self) -> None:
        if self.min_turns > self.max_turns:
            raise ValueError(f"min_turns ({self.min_turns}) is above max_turns ({self.max_turns}): every record would be dropped")

    def check(self, rec: Record) -> Drop | None:
        msgs = rec.messages + (response_turns(rec) if rec.kind == "preference" else [])
        n = sum(1 for m in msgs if m["role"] in ("user", "assistant"))
        if n < self.min_turns:
            return Drop("too_few_turns", f"{n} turns < {self.min_turns}")
        if n > self.max_turns:
            return Drop("too_many_turns", f"{n} turns > {self.max_turns}")
        return None


def repetition_stats(text: str) -> dict[str, float]:
    """Gopher-style repetition: duplicate-line share, share of text in the most frequent
    2/3/4-gram, share of text in duplicated 5-grams (units are words, or characters for CJK)."""
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    dup_lines = (len(lines) - len(set(lines))) / len(lines) if lines else 0.0
    units = tokens(text)
    cjk = bool(units) and all(len(u) == 1 for u in units[:50]) and not text.isascii()
    scale = 2 if cjk else 1  # a CJK character carries about half a word: look at longer grams
    total = sum(len(u) for u in units) or 1
    out = {"dup_line_ratio": dup_lines}
    for n in (2, 3, 4):
        k = n * scale
        grams = Counter(tuple(units[i:i + k]) for i in range(len(units) - k + 1))
        if grams:
            gram, c = grams.most_common(1)[0]
            # a phrase said twice is ordinary writing; three times or more starts to loop
            out[f"top_{n}gram_ratio"] = min(1.0, c * sum(len(u) for u in gram) / total) if c > 2 else 0.0
        else:
            out[f"top_{n}gram_ratio"] = 0.0
    k = 5 * scale
    seen, covered = set(), [False] * len(units)
    for i in range(len(units) - k + 1):
        g = tuple(units[i:i + k])
        if g in seen:
            for j in range(i, i + k):
                covered[j] = True
        seen.add(g)
    out["dup_5gram_ratio"] = sum(len(u) for u, c in zip(units, covered) if c) / total
    return out


@register
@dataclass
class RepetitionFilter(MapOp):
    """Drop degenerate, looping text (repeated lines or n-grams), in words or CJK characters.

    Defaults are calibrated for chat answers, not web pages (Gopher's 0.20/0.18/0.16 drop code and
    tables): on Alpaca 99.9% of answers stay below 0.48 on every ratio, while a looping answer
    scores above 0.55."""

    name: ClassVar[str] = "repetition_filter"
    field: TextField = param("response", "response, prompt or all")
    min_units: Count = param(20, "texts with fewer words/characters are not judged")
    max_dup_line_ratio: Share = param(0.5, "max share of duplicate lines")
    max_top_2gram_ratio: Share = param(0.5, "max share of text in the most frequent 2-gram (3+ occurrences)")
    max_top_3gram_ratio: Share = param(0.5, "max share of text in the most frequent 3-gram (3+ occurrences)")
    max_top_4gram_ratio: Share = param(0.5, "max share of text in the most frequent 4-gram (3+ occurrences)")
    max_dup_5gram_ratio: Share = param(0.6, "max share of text inside repeated 5-grams")

    def check(self, rec: Record) -> Drop | None:
        text = record_text(rec, self.field)
        if len(text) < self.min_units:
            return None
        if len(tokens(text)) < self.min_units:
            return None
        st = repetition_stats(text)
        for key in ("dup_line_ratio", "top_2gram_ratio", "top_3gram_ratio", "top_4gram_ratio", "dup_5gram_ratio"):
            limit = getattr(self, f"max_{key}")
            if st[key] > limit:
                return Drop("repetitive", f"{key} {st[key]:.2f} > {limit}")
        return None


_MOJIBAKE = re.compile(r"Ã[\x80-\xbf]|â€|Â[\xa0-\xbf]|锟斤拷|�")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NORMAL = re.compile(r"[\w\s.,;:!?'\"()\[\]{}<>/\\|@#$%^&*+=~`_\-–—…“”‘’«»、，。；：！？（）《》【】「」『』·°€£¥§¶•]", re.UNICODE)


@register
@dataclass
class GarbledFilter(MapOp):
    """Drop mojibake, control characters and text made mostly of unusual symbols."""

    name: ClassVar[str] = "garbled_filter"
    field: TextField = param("all", "response, prompt or all")
    max_garbled: Count = param(0, "max mojibake sequences / U+FFFD / control characters")
    max_special_ratio: Share = param(0.25, "max share of characters outside letters, digits, whitespace and common punctuation")
    min_chars: Count = param(20, "shorter texts are not judged on the special-character ratio")

    def check(self, rec: Record) -> Drop | None:
        text = record_text(rec, self.field)
        bad = len(_MOJIBAKE.findall(text)) + len(_CONTROL.findall(text))
        if bad > self.max_garbled:
            return Drop("garbled_text", f"{bad} mojibake/control sequences")
        if len(text) >= self.min_chars:
            special = len(text) - len(_NORMAL.findall(text))
            ratio = special / len(text)
            if ratio > self.max_special_ratio:
                return Drop("too_many_special_chars", f"special-character ratio {ratio:.2f} > {self.max_special_ratio}")
        return None


REFUSAL_PATTERNS = [
    r"\bas an ai(?: language)? model\b", r"\bas a (?:large )?language model\b", r"\bas an ai assistant\b",
    r"\bi(?:'m| am) (?:just )?an ai\b", r"\bi(?:'m| am) sorry,? but i (?:can(?:'|no)t|am unable|am not able)\b",
    r"\bi (?:cannot|can't|am unable to|am not able to) (?:fulfill|comply|assist with|help with|provide|answer) (?:that|this|your)",
    r"\bi don't have (?:personal )?(?:opinions|feelings|emotions|the ability)\b",
    r"\bmy (?:training data|knowledge cutoff)\b", r"\bopenai\b.{0,40}\b(?:policy|policies|guidelines)\b",
    r"作为一个?(?:人工智能|AI|ai)(?:语言模型|助手|模型)?", r"作为(?:一个)?语言模型", r"我是一个?(?:人工智能|AI)(?:语言模型|助手)?",
    r"(?:很抱歉|抱歉|对不起)[，,]?\s*(?:我|但我)(?:无法|不能|没有办法)", r"我(?:无法|不能)(?:回答|提供|满足|完成)(?:这个|该|您的)?",
]


_REFUSAL_RX = re.compile("|".join(f"(?:{p})" for p in REFUSAL_PATTERNS), re.I)
# every pattern contains one of these (lowercased): a substring test rules most texts out at C speed
REFUSAL_CUES = ("as an ai", "as a language", "as a large", "an ai", "sorry", "cannot", "can't", "unable", "not able",
                "don't have", "training data", "knowledge cutoff", "openai", "作为", "我是", "抱歉", "对不起", "无法", "不能")


def refusal_match(text: str, rx: re.Pattern = _REFUSAL_RX) -> re.Match | None:
    low = text.lower()
    if not any(c in low for c in REFUSAL_CUES):
        return None
    return rx.search(text)


@register
@dataclass
class RefusalFilter(MapOp):
    """Drop responses that refuse or talk about being an AI ("As an AI language model", "作为一个人工智能")."""

    name: ClassVar[str] = "refusal_filter"
    extra_patterns: list[str] = param([], "additional regular expressions (case-insensitive)")

    def __post_init__(self) -> None:
        for p in self.extra_patterns:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"extra_patterns: {p!r} is not a regular expression ({e})") from None
            if re.compile(p).search(""):
                raise ValueError(f"extra_patterns: {p!r} matches the empty text, so it would drop every record")
        self._rx = re.compile("|".join(f"(?:{p})" for p in list(self.extra_patterns)), re.I) if self.extra_patterns else None

    def check(self, rec: Record) -> Drop | None:
        text = response_text(rec)
        m = refusal_match(text) or (self._rx.search(text) if self._rx else None)
        if m:
            return Drop("refusal", f"response contains {m.group(0)!r}")
        return None
