"""Strict parsing of structured judge answers. A malformed answer raises `AnswerError` with a
machine-readable reason; the caller retries and finally rejects the record with that reason."""
from __future__ import annotations

import re
from typing import Any

import orjson

_FENCE = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.S)


class AnswerError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def extract_json(text: str) -> dict:
    """The one JSON object in an answer: the whole answer, a ```json fence, or the span from the
    first '{' to the last '}'. Anything else is malformed."""
    s = text.strip()
    candidates = [s]
    m = _FENCE.search(s)
    if m:
        candidates.append(m.group(1))
    i, j = s.find("{"), s.rfind("}")
    if 0 <= i < j:
        candidates.append(s[i:j + 1])
    for c in candidates:
        try:
            v = orjson.loads(c)
        except orjson.JSONDecodeError:
            continue
        if isinstance(v, dict):
            return v
        raise AnswerError("judge_not_object", f"the answer is JSON but not an object: {c[:120]!r}")
    raise AnswerError("judge_malformed", f"no JSON object in the answer: {text[:160]!r}")


def as_rating(v: Any, lo: int, hi: int, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise AnswerError("judge_bad_rating", f"{what}: rating must be a number, got {v!r}")
    try:
        f = float(v)
    except ValueError:
        raise AnswerError("judge_bad_rating", f"{what}: rating must be a number, got {v!r}") from None
    if f != int(f) or not lo <= f <= hi:
        raise AnswerError("judge_bad_rating", f"{what}: rating must be a whole number from {lo} to {hi}, got {v!r}")
    return int(f)


def parse_aspects(text: str, aspects: list[str]) -> dict[str, tuple[int, str]]:
    d = extract_json(text)
    out = {}
    for a in aspects:
        if a not in d:
            raise AnswerError("judge_missing_aspect", f"no rating for {a!r} (got keys {sorted(d)[:8]})")
        v = d[a]
        rating, rationale = (v.get("rating"), v.get("rationale", "")) if isinstance(v, dict) else (v, "")
        if not isinstance(rationale, str):
            raise AnswerError("judge_bad_rationale", f"{a}: rationale must be a string")
        out[a] = (as_rating(rating, 1, 5, a), rationale)
    return out


def parse_score(text: str, key: str, lo: int, hi: int) -> int:
    d = extract_json(text)
    if key not in d:
        raise AnswerError("judge_missing_aspect", f"no {key!r} in the answer (got keys {sorted(d)[:8]})")
    return as_rating(d[key], lo, hi, key)


def parse_pairwise(text: str) -> tuple[str, str]:
    d = extract_json(text)
    w = d.get("winner")
    if not isinstance(w, str) or w.strip().upper() not in ("A", "B", "TIE"):
        raise AnswerError("judge_bad_verdict", f"winner must be \"A\", \"B\" or \"tie\", got {w!r}")
    r = d.get("rationale", "")
    return w.strip().upper().replace("TIE", "tie"), r if isinstance(r, str) else ""


def parse_consistency(text: str, n_turns: int) -> tuple[bool, int | None, str]:
    d = extract_json(text)
    c = d.get("consistent")
    if not isinstance(c, bool):
        raise AnswerError("judge_bad_verdict", f"consistent must be true or false, got {c!r}")
    turn = d.get("turn")
    if turn is not None:
        turn = as_rating(turn, 1, max(1, n_turns), "turn")
    if not c and turn is None:
        raise AnswerError("judge_bad_verdict", "an inconsistent verdict must name the contradicting turn")
    e = d.get("explanation", "")
    return c, (None if c else turn), e if isinstance(e, str) else ""
