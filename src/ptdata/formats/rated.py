"""A prompt with several rated responses (UltraFeedback-style), the input of the pair builder.

Reads ``{"prompt" | "instruction"[+"input"], "completions" | "responses" | "candidates": [...]}``
where each response is a string or an object with its text (`response`, `text`, `content`,
`output` or `completion`), an optional `model`, and ratings: a number (`score`, `rating`,
`overall_score`), a dict of aspects (`ratings`), or UltraFeedback's `annotations`
(``{aspect: {"Rating": "4", "Rationale": "..."}}``). A row-level `scores` list may give one
number per response instead. The record is a `prompt` whose `meta.candidates` hold them.

The same shape carries teacher samples made elsewhere for offline distillation:
``{"prompt", "samples": [text | {"text", "logprobs" | "mean_logprob", "min_logprob", "finish_reason"?}], "reference"?}``.
"""
from __future__ import annotations

from typing import Any

from ..errors import RecordError
from ..records import Record, check_messages, message
from ._common import not_representable, opt_str

NAME = "rated"
LIST_KEYS = ("completions", "responses", "candidates", "samples")
TEXT_KEYS = ("response", "text", "content", "output", "completion")
SCORE_KEYS = ("score", "rating", "overall_score")


def detect(row: dict) -> bool:
    return ("prompt" in row or "instruction" in row) and any(isinstance(row.get(k), list) for k in LIST_KEYS)


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool):
        raise RecordError("wrong_type", f"{where} must be a number, got {v!r}")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise RecordError("wrong_type", f"{where} must be a number, got {v!r}") from None


def _candidate(item: Any, i: int, score: Any) -> dict:
    where = f"response {i}"
    if isinstance(item, str):
        cand: dict = {"text": item}
    elif isinstance(item, dict):
        key = next((k for k in TEXT_KEYS if isinstance(item.get(k), str)), None)
        if key is None:
            raise RecordError("missing_field", f"{where} has no text field (one of {', '.join(TEXT_KEYS)})")
        cand = {"text": item[key]}
        for k in ("model", "finish_reason"):  # finish_reason "length": cut by the token limit (distill gives it no answer)
            if isinstance(item.get(k), str):
                cand[k] = item[k]
        ratings = {}
        if isinstance(item.get("ratings"), dict):
            ratings.update({a: _number(v, f"{where} rating {a!r}") for a, v in item["ratings"].items()})
        if isinstance(item.get("annotations"), dict):
            for a, v in item["annotations"].items():
                r = v.get("Rating", v.get("rating")) if isinstance(v, dict) else v
                if r in (None, "N/A"):
                    continue
                ratings[a] = _number(r, f"{where} annotation {a!r}")
        if ratings:
            cand["ratings"] = ratings
        for k in SCORE_KEYS:
            if item.get(k) is not None:
                cand["score"] = _number(item[k], f"{where} {k}")
                break
        lps = item.get("logprobs")
        if isinstance(lps, list) and lps:
            vals = [_number(x.get("logprob") if isinstance(x, dict) else x, f"{where} logprobs") for x in lps]
            cand["mean_logprob"], cand["min_logprob"] = sum(vals) / len(vals), min(vals)
        for k in ("mean_logprob", "min_logprob"):
            if item.get(k) is not None:
                cand[k] = _number(item[k], f"{where} {k}")
    else:
        raise RecordError("wrong_type", f"{where} must be a string or an object, got {type(item).__name__}")
    if score is not None:
        cand["score"] = _number(score, f"scores[{i}]")
    return cand


def read(row: dict, opts: dict) -> Record:
    p = row.get("prompt")
    if isinstance(p, list):
        msgs = check_messages(p, "prompt")
    elif isinstance(p, str):
        msgs = [message("user", p)]
    else:
        instr = opt_str(row, "instruction")
        if not instr:
            raise RecordError("missing_field", "field 'prompt' (or 'instruction') is missing")
        extra = opt_str(row, "input")
        msgs = [message("user", f"{instr}\n\n{extra}" if extra else instr)]
    system = opt_str(row, "system")
    if system:
        msgs.insert(0, message("system", system))
    items = next(row[k] for k in LIST_KEYS if isinstance(row.get(k), list))
    scores = row.get("scores")
    if scores is not None and (not isinstance(scores, list) or len(scores) != len(items)):
        raise RecordError("wrong_type", f"'scores' must be a list with one number per response ({len(items)})")
    cands = [_candidate(it, i, scores[i] if scores else None) for i, it in enumerate(items)]
    meta: dict = {"candidates": cands}
    ref = row.get("reference", row.get("answer"))
    if ref is not None:
        if not isinstance(ref, (str, int, float)) or isinstance(ref, bool):
            raise RecordError("wrong_type", f"'reference' must be a string or a number, got {type(ref).__name__}")
        meta["reference"] = str(ref)
    for k in ("id", "source", "source_id"):
        if isinstance(row.get(k), (str, int)):
            meta["source_id"] = row[k]
            break
    return Record("prompt", msgs, meta=meta)


def write(rec: Record, opts: dict) -> list[dict]:
    if rec.kind != "prompt" or not isinstance(rec.meta.get("candidates"), list):
        raise not_representable("rated", "only prompt records with candidate responses (meta.candidates)")
    comps = []
    for c in rec.meta["candidates"]:
        item = {"response": c["text"]}
        for k in ("model", "ratings", "score"):
            if c.get(k) is not None:
                item[k] = c[k]
        comps.append(item)
    return [{"prompt": rec.messages, "completions": comps}]
