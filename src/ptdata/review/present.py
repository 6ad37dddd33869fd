"""What a reviewer's browser gets and sends. A record is shown as a chat, a pair side by side,
a distillation label or a flywheel interaction; what comes back is checked against the rubric
and turned into the record's terms before it is stored.

Blind pairs: the browser gets the two sides as `left` and `right` only (which one is the
record's `chosen` is not sent), in the order of the assignment's swap; a choice or a per-side
rating comes back as left/right and is stored as `chosen`/`rejected`, with `swapped` beside it,
so the position a side was shown in is measured, never mixed into the answer. Judge scores and
rationales are not sent either: a reviewer judges the record, not the judge.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from .rubric import MAX_EDIT, MAX_NOTE, Rubric

_Key = Annotated[str, StringConstraints(pattern=r"^(left\.|right\.)?[a-z][a-z0-9_]{0,39}$")]
_Opt = Annotated[str, StringConstraints(max_length=40)]
_NoNul = r"^[^\x00]*$"


class AnswerIn(BaseModel):
    """An answer as the browser sends it (sides named by screen position)."""

    model_config = ConfigDict(extra="forbid")
    ratings: dict[_Key, Annotated[int, Field(ge=1, le=5, strict=True)]] = Field(default_factory=dict, max_length=80)
    labels: dict[_Key, list[_Opt]] = Field(default_factory=dict, max_length=40)
    decision: Literal["accept", "reject"] | None = None
    note: Annotated[str, StringConstraints(max_length=MAX_NOTE, pattern=_NoNul)] | None = None
    correction: Annotated[str, StringConstraints(max_length=MAX_EDIT, pattern=_NoNul)] | None = None
    choice: Literal["left", "right", "tie"] | None = None
    seconds: Annotated[float, Field(ge=0, le=86_400)] | None = None


class Invalid(ValueError):
    """An answer the rubric does not allow (422, with the sentence)."""


def _last_answer(msgs: list[dict]) -> str:
    for m in reversed(msgs or []):
        if m.get("role") == "assistant":
            return m.get("content") or ""
    return ""


def _side(rec: dict, side: str) -> list[dict]:
    return rec.get(side) or []


def screen(swap: bool) -> dict[str, str]:
    """Screen position -> record side for one assignment."""
    return {"left": "rejected", "right": "chosen"} if swap else {"left": "chosen", "right": "rejected"}


def _messages(msgs: list[dict]) -> list[dict]:
    """Messages as the browser shows them: text fields only (the page renders them as text)."""
    out = []
    for m in msgs or []:
        d = {"role": m.get("role"), "content": m.get("content") or ""}
        for k in ("reasoning", "name", "tool_call_id"):
            if m.get(k):
                d[k] = m[k]
        if m.get("tool_calls"):
            d["tool_calls"] = [{"name": (c.get("function") or {}).get("name"), "arguments": (c.get("function") or {}).get("arguments"),
                                "id": c.get("id")} for c in m["tool_calls"]]
        out.append(d)
    return out


def _panel(view: str, rec: dict, context: dict | None) -> dict | None:
    meta = rec.get("meta") or {}
    if view == "distill":
        d = meta.get("distill") or {}
        facts = [[k, d[k]] for k in ("teacher", "round", "confidence", "threshold", "answer", "samples", "chosen_sample",
                                    "chosen_by", "combine") if k in d]
        facts += [[f"estimator: {k}", v] for k, v in (d.get("estimators") or {}).items()]
        samples = [{"text": c.get("text") or "", "ratings": c.get("ratings") or {}, "model": c.get("model")}
                   for c in (meta.get("candidates") or []) if isinstance(c, dict)]
        return {"title": "distillation label", "facts": facts, "samples": samples}
    if context and context.get("interactions"):
        facts = [["mined from", context.get("mined_from")], ["version", context.get("version")]]
        return {"title": "flywheel interaction", "facts": [f for f in facts if f[1]],
                "interactions": context["interactions"]}
    return None


def payload(a: dict, member: dict) -> dict[str, Any]:
    """One record for the reviewer's page (their own answer, in screen terms, if they gave one)."""
    rec, view = a["record"], a["view"]
    out: dict[str, Any] = {"pos": a["pos"], "total": member["total"], "done_count": member["done"], "done": bool(a["done"]),
                           "view": view, "kind": a["kind"], "record_id": a["record_id"],
                           "messages": _messages(rec.get("messages")), "panel": _panel(view, rec, a.get("context"))}
    if a["kind"] == "preference":
        pos = screen(a["swap"])
        out["sides"] = {p: _messages(_side(rec, s)) for p, s in pos.items()}
        out["originals"] = {p: _last_answer(_side(rec, s)) for p, s in pos.items()}
    else:
        out["originals"] = {"answer": _last_answer(rec.get("messages")) if rec.get("kind") == "sft" else ""}
    out["answer"] = to_screen(a["answer"], a["swap"]) if a.get("answer") else None
    return out


def to_screen(stored: dict, swap: bool) -> dict:
    """A stored answer back in screen terms (to show a reviewer their own answer again)."""
    back = {s: p for p, s in screen(swap).items()}
    ratings = {}
    for k, v in (stored.get("ratings") or {}).items():
        side, _, aspect = k.partition(".")
        ratings[f"{back[side]}.{aspect}" if aspect and side in back else k] = v
    out = {"ratings": ratings, "labels": stored.get("labels") or {}, "decision": stored.get("decision"),
           "note": stored.get("note"), "correction": (stored.get("correction") or {}).get("text"),
           "choice": back.get(stored.get("choice"), stored.get("choice")) if stored.get("choice") else None}
    return out


def to_stored(ans: AnswerIn, rubric: Rubric, item: dict) -> dict[str, Any]:
    """Check an answer against the rubric and the record, and put it in the record's terms."""
    pair = item["kind"] == "preference"
    pos = screen(item["swap"])
    aspects = rubric.aspects
    want = [f"{p}.{a}" for a in aspects for p in ("left", "right")] if pair else list(aspects)
    unknown = sorted(set(ans.ratings) - set(want))
    if unknown:
        raise Invalid(f"no rating question {unknown[0]!r} for this record")
    for q in rubric.questions:
        if not q.required:
            continue
        if q.type == "rating":
            keys = [f"left.{q.id}", f"right.{q.id}"] if pair else [q.id]
            missing = [k for k in keys if k not in ans.ratings]
            if missing:
                raise Invalid(f"rate {q.label}" + (f" ({missing[0].split('.')[0]} side)" if pair else ""))
        elif q.type == "decision" and ans.decision is None:
            raise Invalid("accept or reject the record")
        elif q.type == "choice" and pair and ans.choice is None:
            raise Invalid("choose the better side (or a tie)")
        elif q.type in ("note", "edit") and not (ans.note if q.type == "note" else ans.correction):
            raise Invalid(f"{q.label} is required")
        elif q.type == "labels" and not ans.labels.get(q.id):
            raise Invalid(f"{q.label}: pick at least one")
    label_qs = {q.id: q for q in rubric.of("labels")}
    for qid, picked in ans.labels.items():
        if qid not in label_qs:
            raise Invalid(f"no labels question {qid!r}")
        bad = [o for o in picked if o not in label_qs[qid].options]
        if bad or len(set(picked)) != len(picked):
            raise Invalid(f"{qid}: {bad[0]!r} is not an option" if bad else f"{qid}: an option repeats")
    for t, v in (("decision", ans.decision), ("note", ans.note), ("edit", ans.correction)):
        if v is not None and not rubric.of(t):
            raise Invalid(f"this rubric has no {t} question")
    if ans.choice is not None and not (pair and rubric.of("choice")):
        raise Invalid("a choice is for preference pairs with a choice question")
    out: dict[str, Any] = {
        "ratings": {(f"{pos[k.split('.')[0]]}.{k.split('.', 1)[1]}" if pair else k): v for k, v in sorted(ans.ratings.items())},
        "labels": {k: sorted(v) for k, v in ans.labels.items() if v}, "decision": ans.decision,
        "note": ans.note if ans.note and ans.note.strip() else None, "seconds": ans.seconds}
    if pair:
        out["choice"] = pos.get(ans.choice, ans.choice) if ans.choice else None
        out["swapped"] = bool(item["swap"])
    if ans.correction is not None:
        if pair:
            if ans.choice not in ("left", "right"):
                raise Invalid("an edit of a pair corrects the side you chose: choose a side first")
            side = pos[ans.choice]
            original = _last_answer(_side(item["record"], side))
        else:
            side, original = "answer", _last_answer(item["record"].get("messages")) if item["kind"] == "sft" else ""
        text = ans.correction
        if text.strip() and text.strip() != original.strip():
            out["correction"] = {"of": side, "text": text}
    return out
