"""Text helpers shared by ops: normalization for matching, words vs CJK characters, shingles.

Matching-oriented normalization (lowercase, punctuation dropped, whitespace collapsed) is
what dedup and decontamination compare; it is deliberately stronger than the record id's.
"""
from __future__ import annotations

import re
import unicodedata

import numpy as np
import xxhash

from .records import Record

_WORD_RUN = re.compile(r"[^\W_]+")  # letters and digits; punctuation, "_" and spacing separate words
_CJK_CHARS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK = re.compile(f"[{_CJK_CHARS}]")
# one CJK character, or a run of other letters and digits: the units of text written in several scripts
_SCRIPT_UNIT = re.compile(f"[{_CJK_CHARS}]|[^\\W_{_CJK_CHARS}]+")


# ASCII fast path: letters and digits lowercased, everything else becomes a space (C speed).
_ASCII_MATCH = bytes((c if chr(c).isalnum() else 32) for c in range(128)).lower() + bytes(range(128, 256))


def normalize_for_match(text: str) -> str:
    """Lowercase, NFKC, punctuation to spaces, whitespace collapsed."""
    if text.isascii():
        return " ".join(text.encode().translate(_ASCII_MATCH).decode().split())
    return " ".join(_unicode_words(text))


def match_hashes(texts: list[str]) -> np.ndarray:
    """xxh3-64 of each text's normalize_for_match, as uint64; equal to hashing them one by one.

    ASCII texts are normalized together: one translate of their concatenation, then the runs of
    spaces are collapsed with array operations (splitting each text into words and joining them
    again is most of the per-text cost). Runs never cross a text's ends, which also strip."""
    out = np.empty(len(texts), dtype=np.uint64)
    h = xxhash.xxh3_64_intdigest
    ascii_at: list[int] = []
    for i, t in enumerate(texts):
        if t.isascii():
            ascii_at.append(i)
        else:
            out[i] = h(normalize_for_match(t).encode())
    if not ascii_at:
        return out
    chunk = [texts[i] for i in ascii_at]
    a = np.frombuffer("".join(chunk).encode().translate(_ASCII_MATCH), dtype=np.uint8)
    lens = np.fromiter(map(len, chunk), dtype=np.int64, count=len(chunk))
    ends = np.cumsum(lens)
    starts = ends - lens
    m = len(a)
    sp = a == 32
    boundary = np.zeros(m + 1, dtype=bool)  # a text starts here (or all of them end)
    boundary[starts] = True
    boundary[m] = True
    prev_sp = np.zeros(m, dtype=bool)
    prev_sp[1:] = sp[:-1]
    prev_sp &= ~boundary[:-1]
    next_sp = np.zeros(m, dtype=bool)
    next_sp[:-1] = sp[1:]
    next_sp &= ~boundary[1:]
    run_start = np.flatnonzero(sp & ~prev_sp)
    run_end = np.flatnonzero(sp & ~next_sp) + 1
    keep = ~sp
    keep[run_start[~boundary[run_start] & ~boundary[run_end]]] = True  # one space between two words of a text
    at = np.concatenate(([0], np.cumsum(keep)))
    kept = memoryview(a[keep].tobytes())
    out[ascii_at] = [h(kept[x:y]) for x, y in zip(at[starts].tolist(), at[ends].tolist())]
    return out


def match_words(text: str) -> list[str]:
    """normalize_for_match(text).split(), without building the joined string for ASCII text."""
    if text.isascii():
        return text.encode().translate(_ASCII_MATCH).decode().split()
    return _unicode_words(text)


def _unicode_words(text: str) -> list[str]:
    """Runs of letters and digits of the NFKC, lowercased text. Whitespace always separates
    words, so the text is split on it first (C speed) and only tokens that are not all letters
    and digits (str.isalnum is exactly that regex class) go through the regex."""
    words: list[str] = []
    for tok in unicodedata.normalize("NFKC", text).lower().split():
        if tok.isalnum():
            words.append(tok)
        else:
            words.extend(_WORD_RUN.findall(tok))
    return words


_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def han_count(text: str) -> int:
    """Chinese characters (Han ideographs) in a text."""
    return 0 if text.isascii() else len(_HAN.findall(text))


def cjk_count(text: str) -> int:
    return 0 if text.isascii() else len(_CJK.findall(text))


def is_cjk(text: str, share: float = 0.3) -> bool:
    """True when CJK characters are a large part of the letters: shingle by character, not word."""
    if text.isascii():
        return False
    n = cjk_count(text)
    return n > 0 and n >= share * max(1, sum(1 for c in text if c.isalpha()))


def tokens(text: str) -> list[str]:
    """Match units by script, within a record: each CJK character is a unit, each word of any
    other script (letters and digits, normalized as normalize_for_match) is a unit. So a Chinese
    sentence quoting "Clear Display (micro:bit block)" is compared character by character where
    it is Chinese and word by word where it is English, whichever script dominates."""
    if text.isascii():
        return match_words(text)
    units: list[str] = []
    for w in _unicode_words(text):
        if w.isascii():
            units.append(w)
        else:
            units.extend(_SCRIPT_UNIT.findall(w))
    return units


def ngrams(units: list[str] | str, n: int, joiner: str = " ") -> list[str]:
    """Overlapping n-grams; a text shorter than n yields itself as one gram."""
    if len(units) < n:
        return [joiner.join(units)] if units else []
    return list(map(joiner.join, zip(*[units[i:] for i in range(n)])))


def shingles(text: str, word_n: int = 5, char_n: int = 5) -> list[str]:
    """n-grams of script units (`tokens`): `char_n` of them when CJK characters are at least half
    the units, else `word_n`."""
    if text.isascii():
        return ngrams(match_words(text), word_n)
    units = tokens(text)
    return ngrams(units, char_n if 2 * cjk_count(text) >= len(units) else word_n)


def record_text(rec: Record, field: str = "all") -> str:
    """The text an op looks at: all turns, the prompt turns, or the response(s)."""
    if field == "prompt":
        msgs = [m for m in rec.messages if m["role"] in ("user", "system")] if rec.kind != "sft" else \
            [m for m in rec.messages[:-1] if m["role"] in ("user", "system")]
    elif field == "response":
        msgs = response_turns(rec)
    else:
        msgs = rec.messages + (rec.chosen or []) + (rec.rejected or [])
    return "\n".join(m["content"] for m in msgs if m["content"])


def prompt_text(rec: Record) -> str:
    """The user turns before the (last) answer."""
    msgs = rec.messages[:-1] if rec.kind == "sft" else rec.messages
    return "\n".join(m["content"] for m in msgs if m["role"] == "user")


def response_turns(rec: Record) -> list[dict]:
    """The turns a model is trained to produce: the last assistant turn, or the chosen side."""
    if rec.kind == "sft":
        return [rec.messages[-1]]
    if rec.kind == "preference":
        return [m for m in (rec.chosen or rec.rejected or []) if m["role"] == "assistant"]
    return []


def response_text(rec: Record) -> str:
    return "\n".join(m["content"] for m in response_turns(rec))
