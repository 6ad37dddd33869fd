"""AI judges: per-aspect ratings, Deita-style complexity and quality, pairwise comparison in
both orders, and multi-turn consistency. Each takes a batch of records and returns
(kept, dropped) like an op; a record whose judge answer stays malformed after the re-asks
is dropped with the parse reason, never crashes the run.
"""
from __future__ import annotations

from itertools import combinations
from typing import Any, Callable

from ..llm import Backend, Sampling
from ..ops.base import Drop
from ..records import Record
from ..text import prompt_text
from . import prompts as P
from .ask import Answer, ask, judge_messages
from .parse import parse_aspects, parse_consistency, parse_pairwise, parse_score

Outcome = tuple[list[Record], list[tuple[Record, Drop]]]


def _answer_text(msgs: list[dict] | None) -> str:
    return "\n\n".join(m.get("content") or "" for m in (msgs or []) if m["role"] == "assistant")


def rating_targets(rec: Record) -> list[tuple[list[dict], str, Any]]:
    """(context, answer, where to store) for every response a record carries."""
    if rec.kind == "sft":
        return [(rec.messages[:-1], rec.messages[-1].get("content") or "", "record")]
    if rec.kind == "preference":
        return [(rec.messages, _answer_text(rec.chosen), "chosen"), (rec.messages, _answer_text(rec.rejected), "rejected")]
    return [(rec.messages, c["text"], i) for i, c in enumerate(rec.meta.get("candidates") or [])]


def _collect(batch: list[Record], jobs: list[tuple[int, Any]], answers: list[Answer]) -> tuple[dict[int, list], dict[int, Answer]]:
    ok: dict[int, list] = {}
    failed: dict[int, Answer] = {}
    for (ri, where), a in zip(jobs, answers):
        if not a.ok:
            failed.setdefault(ri, a)
        else:
            ok.setdefault(ri, []).append((where, a.value))
    return ok, failed


Job = tuple[int, Any, list[dict], Callable[[str], Any]]  # (record index, where, judge messages, parser)


def _judge(batch: list[Record], llm: Backend, sampling: Sampling, retries: int,
           jobs: list[Job]) -> tuple[list[tuple[Record, list]], dict[int, Answer]]:
    """Ask every job; return the records whose answers all parsed, with (where, value) items,
    and the first failure of each record that has one."""
    answers = ask(llm, [j[2] for j in jobs], [j[3] for j in jobs], sampling, retries)
    ok, failed = _collect(batch, [(j[0], j[1]) for j in jobs], answers)
    return [(batch[ri], items) for ri, items in ok.items() if ri not in failed], failed


def _split(batch: list[Record], failed: dict[int, Answer], step: str) -> Outcome:
    kept, dropped = [], []
    for i, rec in enumerate(batch):
        if i in failed:
            a = failed[i]
            dropped.append((rec, Drop(a.reason, f"{step}: {a.detail}")))
        else:
            kept.append(rec)
    return kept, dropped


def rate_aspects(batch: list[Record], llm: Backend, sampling: Sampling, aspects: list[str], retries: int = 2) -> Outcome:
    """Ratings 1-5 with a rationale per aspect. sft: `scores[aspect]`; preference:
    `scores["chosen.<aspect>"]` and `"rejected.<aspect>"`; candidates: `ratings` on each."""
    parse = lambda t: parse_aspects(t, aspects)  # noqa: E731
    jobs = [(ri, where, judge_messages(P.JUDGE_SYSTEM, P.aspect_prompt(ctx, ans, aspects)), parse)
            for ri, rec in enumerate(batch) for ctx, ans, where in rating_targets(rec)]
    done, failed = _judge(batch, llm, sampling, retries, jobs)
    for rec, items in done:
        for where, value in items:
            ratings = {a: r for a, (r, _) in value.items()}
            rationales = {a: why for a, (_, why) in value.items()}
            if where == "record":
                rec.scores.update(ratings)
                rec.meta.setdefault("rationales", {}).update(rationales)
            elif where in ("chosen", "rejected"):
                rec.scores.update({f"{where}.{a}": r for a, r in ratings.items()})
                rec.meta.setdefault("rationales", {})[where] = rationales
            else:
                cand = rec.meta["candidates"][where]
                cand.setdefault("ratings", {}).update(ratings)
                cand.setdefault("rationales", {}).update(rationales)
        rec.meta["judge"] = llm.model
        if rec.kind == "preference":
            c = [rec.scores[f"chosen.{a}"] for a in aspects]
            r = [rec.scores[f"rejected.{a}"] for a in aspects]
            rec.scores["margin"] = round(sum(c) / len(c) - sum(r) / len(r), 4)
    return _split(batch, failed, "rate_aspects")


def deita_scores(batch: list[Record], llm: Backend, sampling: Sampling, retries: int = 2,
                 axes: tuple[str, ...] = ("complexity", "quality")) -> Outcome:
    """Deita's two axes, asked of a judge: instruction complexity (1-6) and response quality
    (1-6); `deita.score` is their product, Deita's ranking key."""
    jobs: list[Job] = []
    for ri, rec in enumerate(batch):
        instr = prompt_text(rec)
        if "complexity" in axes:
            jobs.append((ri, "complexity", judge_messages(P.JUDGE_SYSTEM, P.complexity_prompt(instr)),
                         lambda t: parse_score(t, "complexity", 1, 6)))
        if rec.kind == "sft" and "quality" in axes:
            answer = rec.messages[-1].get("content") or ""
            jobs.append((ri, "quality", judge_messages(P.JUDGE_SYSTEM, P.quality_prompt(instr, answer)),
                         lambda t: parse_score(t, "quality", 1, 6)))
    done, failed = _judge(batch, llm, sampling, retries, jobs)
    for rec, items in done:
        for where, v in items:
            rec.scores[f"deita.{where}"] = v
        if "deita.quality" in rec.scores and "deita.complexity" in rec.scores:
            rec.scores["deita.score"] = rec.scores["deita.complexity"] * rec.scores["deita.quality"]
    return _split(batch, failed, "deita_scores")


def _pair_texts(rec: Record) -> list[tuple[Any, Any, str, str]]:
    """(id a, id b, text a, text b) for the comparisons a record asks for."""
    if rec.kind == "preference":
        return [("chosen", "rejected", _answer_text(rec.chosen), _answer_text(rec.rejected))]
    cands = rec.meta.get("candidates") or []
    return [(i, j, cands[i]["text"], cands[j]["text"]) for i, j in combinations(range(len(cands)), 2)]


def compare_pairwise(batch: list[Record], llm: Backend, sampling: Sampling, retries: int = 2) -> Outcome:
    """Each comparison is asked twice, a-b and b-a. Agreement on the same response gives a
    winner; disagreement is position bias and gives none. Verdicts go to `meta.pairwise`."""
    jobs: list[Job] = []
    for ri, rec in enumerate(batch):
        for k, (a, b, ta, tb) in enumerate(_pair_texts(rec)):
            jobs.append((ri, (k, "ab"), judge_messages(P.JUDGE_SYSTEM, P.pairwise_prompt(rec.messages, ta, tb)), parse_pairwise))
            jobs.append((ri, (k, "ba"), judge_messages(P.JUDGE_SYSTEM, P.pairwise_prompt(rec.messages, tb, ta)), parse_pairwise))
    done, failed = _judge(batch, llm, sampling, retries, jobs)
    for rec, items in done:
        verdicts: dict[int, dict] = {}
        for (k, order), (winner, why) in items:
            verdicts.setdefault(k, {})[order] = (winner, why)
        out = []
        for k, (a, b, _, _) in enumerate(_pair_texts(rec)):
            (w1, why1), (w2, why2) = verdicts[k]["ab"], verdicts[k]["ba"]
            first = {"A": a, "B": b}.get(w1)  # the response each order picked
            second = {"A": b, "B": a}.get(w2)
            if w1 == "tie" and w2 == "tie":
                winner, consistent = None, True
            elif first is not None and first == second:
                winner, consistent = first, True
            else:
                winner, consistent = None, False
            out.append({"a": a, "b": b, "ab": w1, "ba": w2, "winner": winner, "consistent": consistent,
                        "rationale": why1 or why2})
        rec.meta["pairwise"] = out
        rec.meta["judge"] = llm.model
        if rec.kind == "preference":
            v = out[0]
            rec.scores["judge.agrees"] = 1.0 if v["winner"] == "chosen" else 0.0
    return _split(batch, failed, "compare_pairwise")


def check_consistency(batch: list[Record], llm: Backend, sampling: Sampling, retries: int = 2,
                      drop_inconsistent: bool = False) -> Outcome:
    """Does a later assistant turn contradict an earlier one? Only conversations with two or
    more assistant turns are asked; `scores["consistency"]` is 1 or 0."""
    jobs: list[Job] = []
    for ri, rec in enumerate(batch):
        n = sum(m["role"] == "assistant" for m in rec.messages)
        if rec.kind == "sft" and n >= 2:
            jobs.append((ri, n, judge_messages(P.JUDGE_SYSTEM, P.consistency_prompt(rec.messages)),
                         lambda t, n=n: parse_consistency(t, n)))
    done, failed = _judge(batch, llm, sampling, retries, jobs)
    incons: dict[int, Drop] = {}
    index = {id(r): i for i, r in enumerate(batch)}
    for rec, items in done:
        ri = index[id(rec)]
        (_, (consistent, turn, why)), = items
        rec.scores["consistency"] = 1.0 if consistent else 0.0
        rec.meta["consistency"] = {"turn": turn, "explanation": why, "judge": llm.model}
        if not consistent and drop_inconsistent:
            incons[ri] = Drop("inconsistent_turns", f"assistant turn {turn} contradicts an earlier turn: {why}")
    kept, dropped = _split(batch, failed, "check_consistency")
    if incons:
        drop_ids = {id(batch[i]) for i in incons}
        dropped += [(batch[i], d) for i, d in incons.items()]
        kept = [r for r in kept if id(r) not in drop_ids]
    return kept, dropped
