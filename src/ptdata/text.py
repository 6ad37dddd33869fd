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
    return ngrams(*script_units(text, word_n, char_n))


def script_units(text: str, word_n: int, char_n: int) -> tuple[list[str], int]:
    """The units (`tokens`) of a non-ASCII text and its shingle size: `char_n` when CJK
    characters are at least half the units, else `word_n`."""
    units = tokens(text)
    return units, char_n if 2 * cjk_count(text) >= len(units) else word_n


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


# --- shingle hashes for MinHash, a batch at a time ------------------------------------------

_BYTE_P = 0x100000001B3  # odd: invertible modulo 2**64
_BYTE_P_INV = pow(_BYTE_P, -1, 1 << 64)
_GRAM_Q = 0x9E3779B97F4A7C15
_EMPTY_SHINGLE = np.uint64(0x5BD1E9955BD1E995)  # the one shingle of a text without units
_UNIT_CHUNK = 1 << 20  # bytes of units hashed at a time: bounds the temporaries for any text size
_LONG_UNIT = 1 << 16  # a unit longer than this (a blob without spaces) is hashed on its own
_POWERS: list[np.ndarray] = [np.ones(1, dtype=np.uint64), np.ones(1, dtype=np.uint64)]


def _byte_powers(m: int) -> tuple[np.ndarray, np.ndarray]:
    """P**i and P**-i modulo 2**64 for i < m (m is at most a chunk; the tables are kept)."""
    if len(_POWERS[0]) < m:
        size = max(m, min(2 * len(_POWERS[0]), _UNIT_CHUNK + 1))
        for k, base in enumerate((_BYTE_P, _BYTE_P_INV)):
            steps = np.full(size, base, dtype=np.uint64)
            steps[0] = 1
            _POWERS[k] = np.cumprod(steps)  # integer products wrap: arithmetic modulo 2**64
    return _POWERS[0][:m], _POWERS[1][:m]


def _unit_hashes(buf: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(start offset, 64-bit hash) of each unit (run of bytes other than spaces) of `buf`, from its
    bytes alone: a polynomial over prefix sums modulo 2**64 mixed with its length, for runs of
    units spanning at most a chunk; a unit longer than _LONG_UNIT bytes gets xxh3 instead (the
    choice depends on the unit's length only, so equal units always hash the same)."""
    a = np.frombuffer(buf, dtype=np.uint8)
    inside = np.zeros(len(a) + 2, dtype=np.int8)
    inside[1:-1] = a != 32
    edge = np.diff(inside)
    ws, we = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)
    del inside, edge
    out = np.empty(len(ws), dtype=np.uint64)
    is_long = we - ws > _LONG_UNIT
    for i in np.flatnonzero(is_long).tolist():
        out[i] = xxhash.xxh3_64_intdigest(buf[ws[i]:we[i]])
    short = np.flatnonzero(~is_long)
    s_ws, s_we = ws[short], we[short]
    at = 0
    while at < len(short):  # the next units whose span fits in a chunk (at least one)
        stop = max(at + 1, int(np.searchsorted(s_we, s_ws[at] + _UNIT_CHUNK, side="right")))
        lo, hi = int(s_ws[at]), int(s_we[stop - 1])
        pw, ipw = _byte_powers(hi - lo)
        prefix = np.zeros(hi - lo + 1, dtype=np.uint64)
        np.cumsum(a[lo:hi].astype(np.uint64) * pw, out=prefix[1:])
        u_ws, u_we = s_ws[at:stop] - lo, s_we[at:stop] - lo
        out[short[at:stop]] = _fmix64(((prefix[u_we] - prefix[u_ws]) * ipw[u_ws]) ^ (u_we - u_ws).astype(np.uint64))
        at = stop
    return ws, out


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finalizer: every input bit moves every output bit (MinHash permutations
    and the 32-bit verification keys take parts of it)."""
    h = h ^ (h >> np.uint64(33))
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def shingle_hash_arrays(texts: list[str], word_n: int = 5, char_n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The 64-bit hashes of each text's `shingles`, in order (repeats kept), flattened, and how
    many each text has (a text without units has one, the empty shingle, as `shingles(t) or [""]`).

    No shingle string is built: the units of the whole batch sit in one buffer separated by
    spaces (ASCII texts translated together, as normalize_for_match does; other texts joined from
    `tokens`), each unit is hashed from its bytes with array operations (`_unit_hashes`), and a
    shingle's hash combines its units' hashes and their number. So the hash is a function of the
    shingle's units alone: equal shingles hash equally in any text and any batch."""
    pieces: list[bytes] = []
    grams = np.full(len(texts), word_n, dtype=np.int64)
    for i, t in enumerate(texts):
        if t.isascii():
            pieces.append(t.encode())
        else:
            units, grams[i] = script_units(t, word_n, char_n)
            pieces.append(" ".join(units).encode())
    lens = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    starts = np.cumsum(lens + 1) - (lens + 1)  # each piece, then one separating space
    ws, unit = _unit_hashes(b" ".join(pieces).translate(_ASCII_MATCH))
    owner = np.searchsorted(starts, ws, side="right") - 1
    count = np.bincount(owner, minlength=len(texts))
    first = np.cumsum(count) - count
    n_units = len(unit)
    pos = np.arange(n_units, dtype=np.int64) - first[owner]  # a unit's place in its text
    left = count[owner] - pos  # units from here to its text's end
    n = grams[owner]
    h = unit.copy()
    terms = np.ones(n_units, dtype=np.int64)
    for k in range(1, min(int(grams.max(initial=1)), int(count.max(initial=1)))):  # no longer than the longest text
        more = (k < n) & (k < left)
        nxt = unit[np.minimum(np.arange(n_units) + k, max(n_units - 1, 0))]
        h = np.where(more, h * np.uint64(_GRAM_Q) + nxt, h)
        terms += more
    is_start = (left >= n) | (pos == 0)  # every full n-gram; a text shorter than n is one gram
    flat = _fmix64(h[is_start] ^ (terms[is_start].astype(np.uint64) << np.uint64(56)))
    per_text = np.bincount(owner[is_start], minlength=len(texts))
    empty = np.flatnonzero(per_text == 0)
    if len(empty):
        flat = np.insert(flat, (np.cumsum(per_text) - per_text)[empty], _EMPTY_SHINGLE)
        per_text[empty] = 1
    return flat, per_text.astype(np.int64)
