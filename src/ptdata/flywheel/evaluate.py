"""`ptdata flywheel eval`: a candidate model against the current one on the held-out prompts.

The held-out prompts (a version's `eval.jsonl`, or every held-out interaction in a store) are
sent to the candidate, and to the current model (or the stored answers are used: `from_store`).
A judge compares each (candidate, current) pair twice, once in each order; a side wins only
when both orders pick it, both orders saying tie or the two orders disagreeing (position bias)
is a tie. Where a person corrected the stored answer, the correction is in the judge's prompt
as the reference answer; where a person rated or voted on the stored answer and that answer is
the one compared, the judge sees that too.

Win rate: (wins + ties / 2) / n over the judged prompts, with a 95% Wilson score interval
(ties counted as half a success). A prompt the candidate fails to answer is a loss; a prompt
the current model fails to answer, or the judge cannot be parsed for after its re-asks, is
left out of n and counted. With a gate, the evaluation passes when the win rate reaches it.

Nothing here logs prompt or answer text: the worst regressions are in the returned summary
(printed on stdout by the CLI, and stored with the evaluation in the store).
"""
from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..errors import InputError
from ..generate.ask import ask, judge_messages
from ..generate.parse import AnswerError, as_rating, extract_json, parse_pairwise
from ..generate.prompts import ASPECTS, JUDGE_SYSTEM, render_conversation
from ..llm import Backend, Request, Sampling
from ..records import Record

CI_METHOD = "wilson"
Z95 = 1.959963984540054


@dataclass
class EvalItem:
    interaction_id: str
    messages: list[dict]
    answer: str  # the stored answer (PII-scrubbed)
    model_version: str | None = None
    reference: str | None = None  # a person's correction of the stored answer
    rating: int | None = None  # a person's rating of the stored answer
    thumbs: str | None = None


def item_from_record(rec: Record) -> EvalItem:
    m = rec.meta
    return EvalItem((m.get("interaction_ids") or [rec.id])[0], rec.messages, m.get("answer") or "", m.get("model_version"),
                    m.get("correction"), m.get("rating"), m.get("thumbs"))


def load_version_eval(vdir: Path) -> tuple[str, list[EvalItem]]:
    """A mined version's held-out prompts: (its name, the items)."""
    path = vdir / "eval.jsonl"
    if not path.exists():
        raise InputError(f"{path}: missing (a version mined by this ptdata has eval.jsonl; mine a new version)")
    name = vdir.name
    mf = vdir / "manifest.json"
    if mf.exists():
        try:
            name = orjson.loads(mf.read_bytes()).get("version") or name
        except orjson.JSONDecodeError:
            raise InputError(f"{mf}: not JSON") from None
    items = []
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                items.append(item_from_record(Record.from_dict(orjson.loads(line))))
            except (orjson.JSONDecodeError, ValueError) as e:
                raise InputError(f"{path}:{n}: not an eval record ({type(e).__name__})") from None
    return name, items


def load_store_eval(store) -> list[EvalItem]:
    """Every interaction in the store whose conversation a mined version held out, scrubbed as
    `mine` scrubs (redacted)."""
    from ..ops.pii import Pii
    from .mine import _usable, conversation_key, eval_records, held_out_hash

    known = store.held_out_keys()
    salt = store.salt()
    held = []
    for r in store.interactions():
        k = conversation_key(r) if _usable(r) is not None else None
        if k is not None and (h := held_out_hash(k, salt)) in known:
            held.append((r, h))
    ids = [r["id"] for r, _ in held]
    events = sorted((e for i in range(0, len(ids), 500) for e in store.feedback_for(ids[i:i + 500])),
                    key=lambda e: (e["created_at"], e["event_id"]))
    redact = Pii(action="redact")
    recs, _ = eval_records(held, events, redact, redact, "store")
    return [item_from_record(r) for r in recs]


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for a proportion (successes may be fractional: a tie is half)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def judge_prompt(context: list[dict], first: str, second: str, reference: str | None = None,
                 notes: dict[str, str] | None = None, aspects: list[str] | None = None) -> str:
    """The pairwise prompt (as `judge --judge pairwise` asks it), with a person's correction as
    the reference answer, a person's verdict on one of the answers, and per-aspect ratings."""
    notes = notes or {}
    ref = (f"### Reference answer (a person's correction of an earlier answer: treat it as correct)\n{reference}\n"
           "### End of reference answer\n\n") if reference else ""
    note = lambda k: f"({notes[k]})\n\n" if k in notes else ""  # noqa: E731
    form = '{"winner": "A" | "B" | "tie", "rationale": "<one sentence>"'
    ask_aspects = ""
    if aspects:
        listing = "\n".join(f"- {a}: {ASPECTS.get(a, 'Rate this aspect of the answer.')}" for a in aspects)
        ask_aspects = f"Also rate both answers from 1 (very poor) to 5 (excellent) on each aspect:\n{listing}\n\n"
        form += ', "aspects": {' + ", ".join(f'"{a}": {{"A": <1-5>, "B": <1-5>}}' for a in aspects) + "}"
    return (
        "Compare the two answers to the conversation below and decide which one is better overall "
        "(helpful, correct, harmless, follows the instructions). Judge the content, not the order or the length."
        + (" Where a reference answer is given, an answer that agrees with it is more correct." if reference else "")
        + f"\n\n### Conversation\n{render_conversation(context)}\n### End of conversation\n\n{ref}"
        f"### Answer A\n{first}\n### End of answer A\n\n{note('A')}"
        f"### Answer B\n{second}\n### End of answer B\n\n{note('B')}{ask_aspects}"
        f"Reply with exactly one JSON object and nothing else: {form}}}"
    )


def parse_verdict(text: str, aspects: list[str]) -> tuple[str, str, dict[str, tuple[int, int]]]:
    """(winner, rationale, {aspect: (A rating, B rating)}): the aspects asked for are required;
    others a judge gives on its own are taken when well formed."""
    winner, why = parse_pairwise(text)
    raw = extract_json(text).get("aspects")
    got: dict[str, tuple[int, int]] = {}
    if isinstance(raw, dict):
        for a, v in raw.items():
            if not isinstance(v, dict) or a not in aspects and not ({"A", "B"} <= set(v)):
                continue
            try:
                got[str(a)] = (as_rating(v.get("A"), 1, 5, f"{a}.A"), as_rating(v.get("B"), 1, 5, f"{a}.B"))
            except AnswerError:
                if a in aspects:
                    raise
    missing = [a for a in aspects if a not in got]
    if missing:
        raise AnswerError("judge_missing_aspect", f"no A and B ratings for {missing}")
    return winner, why, got


def _notes(item: EvalItem, letter: str) -> dict[str, str]:
    said = []
    if item.rating is not None:
        said.append(f"a person rated answer {letter} {item.rating} of 5")
    if item.thumbs in ("up", "down"):
        said.append(f"a person gave answer {letter} a thumbs {item.thumbs}")
    return {letter: "; ".join(said)} if said else {}


def evaluate(items: list[EvalItem], candidate: Backend, judge: Backend, current: Backend | None = None,
             sampling: Sampling | None = None, judge_sampling: Sampling | None = None, aspects: list[str] | None = None,
             retries: int = 2, gate: float | None = None, top: int = 5) -> dict[str, Any]:
    """Replay, judge in both orders, count. `current` None: the stored answers are the current side."""
    aspects = list(aspects or [])
    if not items:
        raise InputError("no held-out prompts to evaluate on (mine a version with --eval-share > 0)")
    sampling = sampling or Sampling(temperature=0.0)
    judge_sampling = judge_sampling or Sampling(temperature=0.0)
    cand = candidate.generate([Request(it.messages, sampling, tag=f"eval:{it.interaction_id}") for it in items])
    if not any(r.ok for r in cand):
        raise InputError(f"the candidate answered none of the {len(items):,} prompts ({cand[0].error})")  # no detail: it may echo a prompt
    if current is not None:
        cur = current.generate([Request(it.messages, sampling, tag=f"eval:{it.interaction_id}") for it in items])
        if not any(r.ok for r in cur):
            raise InputError(f"the current model answered none of the {len(items):,} prompts ({cur[0].error})")
        cur_text = [r.text if r.ok and r.text.strip() else None for r in cur]
    else:
        cur_text = [it.answer for it in items]
    cand_text = [r.text if r.ok and r.text.strip() else None for r in cand]

    jobs, prompts = [], []
    for i, it in enumerate(items):
        if cand_text[i] is None or cur_text[i] is None:
            continue
        ref = it.reference
        # the stored answer's human verdict only describes the answer compared when that answer is the stored one
        human = current is None
        prompts.append(judge_messages(JUDGE_SYSTEM, judge_prompt(it.messages, cand_text[i], cur_text[i], ref,
                                                                 _notes(it, "B") if human else {}, aspects)))
        prompts.append(judge_messages(JUDGE_SYSTEM, judge_prompt(it.messages, cur_text[i], cand_text[i], ref,
                                                                 _notes(it, "A") if human else {}, aspects)))
        jobs.append(i)
    answers = ask(judge, prompts, [lambda t: parse_verdict(t, aspects)] * len(prompts), judge_sampling, retries) if prompts else []

    wins = ties = losses = inconsistent = unjudged = 0
    cand_errors = sum(1 for t in cand_text if t is None)
    cur_errors = sum(1 for i, t in enumerate(cur_text) if t is None and cand_text[i] is not None)
    losses += cand_errors
    per_item: list[dict] = []
    sums: dict[str, list[float]] = {}
    judge_failures: dict[str, int] = {}
    for k, i in enumerate(jobs):
        a1, a2 = answers[2 * k], answers[2 * k + 1]
        if not (a1.ok and a2.ok):
            unjudged += 1
            bad = a1 if not a1.ok else a2
            judge_failures[bad.reason] = judge_failures.get(bad.reason, 0) + 1
            continue
        (w1, why1, asp1), (w2, why2, asp2) = a1.value, a2.value
        first = {"A": "candidate", "B": "current"}.get(w1)  # the side each order picked
        second = {"A": "current", "B": "candidate"}.get(w2)
        if first is not None and first == second:
            outcome = "win" if first == "candidate" else "loss"
        else:
            outcome = "tie"
            inconsistent += not (w1 == "tie" and w2 == "tie")
        wins += outcome == "win"
        ties += outcome == "tie"
        losses += outcome == "loss"
        delta = 0.0
        for a, (ra, rb) in asp1.items():  # order 1: A is the candidate
            sums.setdefault(a, []).append(ra - rb)
            delta += ra - rb
        for a, (ra, rb) in asp2.items():  # order 2: B is the candidate
            sums.setdefault(a, []).append(rb - ra)
            delta += rb - ra
        per_item.append({"i": i, "outcome": outcome, "verdicts": [w1, w2], "rationale": why1 or why2, "delta": delta})
    for i, t in enumerate(cand_text):
        if t is None:
            per_item.append({"i": i, "outcome": "loss", "verdicts": None, "rationale": f"candidate error: {cand[i].error}",
                             "delta": 0.0})
    n = wins + ties + losses
    rate = (wins + ties / 2) / n if n else None
    lo, hi = wilson(wins + ties / 2, n) if n else (None, None)
    lost = sorted((p for p in per_item if p["outcome"] == "loss"),
                  key=lambda p: (p["delta"], items[p["i"]].reference is None, p["i"]))
    worst = [{"interaction_id": items[p["i"]].interaction_id, "prompt": items[p["i"]].messages,
              "candidate": cand_text[p["i"]], "current": cur_text[p["i"]], "reference": items[p["i"]].reference,
              "verdicts": p["verdicts"], "rationale": p["rationale"]} for p in lost[:top]]
    out: dict[str, Any] = {
        "prompts": len(items), "n": n, "wins": wins, "ties": ties, "losses": losses, "inconsistent": inconsistent,
        "win_rate": None if rate is None else round(rate, 4),
        "ci_low": None if lo is None else round(lo, 4), "ci_high": None if hi is None else round(hi, 4),
        "ci_method": CI_METHOD, "with_reference": sum(1 for it in items if it.reference),
        "candidate_errors": cand_errors, "current_errors": cur_errors, "unjudged": unjudged,
        "judge_failures": judge_failures, "judge_calls": len(prompts), "gate": gate,
        "passed": None if gate is None else (rate is not None and rate >= gate),
        "outcomes": [{"interaction_id": items[p["i"]].interaction_id, "outcome": p["outcome"], "verdicts": p["verdicts"]}
                     for p in sorted(per_item, key=lambda p: p["i"])],
        "worst_regressions": worst,
    }
    if sums:
        out["aspects"] = {a: {"delta": round(sum(v) / len(v), 4), "judged": len(v)} for a, v in sorted(sums.items())}
    return out


def record(store, summary: dict, eval_set: str, candidate_version: str, current_version: str, judge_model: str) -> str:
    """Store an evaluation with the candidate's model version; its id."""
    eid = uuid.uuid4().hex
    store.add_evaluation({"id": eid, "created_at": time.time(), "eval_set": eval_set, "candidate_version": candidate_version,
                          "current_version": current_version, "judge_model": judge_model, "n": summary["n"],
                          "wins": summary["wins"], "ties": summary["ties"], "losses": summary["losses"],
                          "win_rate": summary["win_rate"], "ci_low": summary["ci_low"], "ci_high": summary["ci_high"],
                          "gate": summary["gate"], "passed": summary["passed"], "result": summary})
    return eid
