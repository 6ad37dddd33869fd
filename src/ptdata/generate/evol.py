"""Evol-Instruct: make instructions more complex (in depth) or new in the same domain (in
breadth), answer them, and eliminate failed evolutions by WizardLM's rules:
no information gain, a copy of the template, a refusal or too-short answer."""
from __future__ import annotations

import xxhash

from ..llm import Backend, Request, Sampling
from ..ops.base import Drop
from ..ops.filters import refusal_match
from ..records import Record
from ..text import match_words
from . import prompts as P

Outcome = tuple[list[Record], list[tuple[Record, Drop]]]
METHODS = [*P.EVOL_METHODS, P.EVOL_BREADTH]


def pick_method(rec_id: str, round_no: int, methods: list[str]) -> str:
    """Deterministic, so a rerun asks the same question and hits the cache."""
    return methods[xxhash.xxh32_intdigest(f"{rec_id}:{round_no}".encode()) % len(methods)]


def eliminate_instruction(original: str, evolved: str, min_new_words: int) -> Drop | None:
    if not evolved.strip():
        return Drop("empty_evolution", "the teacher returned no instruction")
    for marker in P.EVOL_TEMPLATE_MARKERS:
        if marker in evolved:
            return Drop("copied_template", f"the evolved instruction repeats the template ({marker!r})")
    new = set(match_words(evolved)) - set(match_words(original))
    if len(new) < min_new_words:
        return Drop("no_information_gain", f"the evolved instruction adds {len(new)} new word(s) (< {min_new_words})")
    return None


def eliminate_response(text: str, min_words: int) -> Drop | None:
    words = len(match_words(text))
    if refusal_match(text) or ("sorry" in text.lower() and words < 80):
        return Drop("refusal_response", f"the answer to the evolved instruction is a refusal: {text[:80]!r}")
    if words < min_words:
        return Drop("short_response", f"the answer to the evolved instruction has {words} word(s) (< {min_words})")
    return None


def _last_user(msgs: list[dict]) -> int:
    for i in range(len(msgs) - 1, -1, -1):
        if msgs[i]["role"] == "user":
            return i
    return -1


def evolve(batch: list[Record], llm: Backend, sampling: Sampling, methods: list[str] | None = None, rounds: int = 1,
           min_new_words: int = 2, min_response_words: int = 5) -> Outcome:
    """Each round evolves the survivors of the last. Every surviving evolution is kept (a record
    may yield one per round); a record none of whose evolutions survive is dropped with the
    reason of its first failure."""
    methods = methods or METHODS
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown evolution method(s) {bad}; known: {METHODS}")
    # state per input record: (context turns, current instruction, root id, history, current parent id)
    live = []
    kept: list[Record] = []
    dropped: list[tuple[Record, Drop]] = []
    first_failure: dict[int, Drop] = {}
    survived: set[int] = set()
    for i, rec in enumerate(batch):
        msgs = rec.messages[:-1] if rec.kind == "sft" else rec.messages
        u = _last_user(msgs)
        if u < 0:
            dropped.append((rec, Drop("no_instruction", "no user turn to evolve")))
            continue
        live.append((i, msgs[:u], msgs[u].get("content") or "", [], rec.id))
    for rnd in range(1, rounds + 1):
        if not live:
            break
        chosen = [pick_method(f"{parent}", rnd, methods) for (_, _, _, _, parent) in live]
        asks = llm.generate([Request([{"role": "user", "content": P.evol_prompt(m, instr)}], sampling, tag=parent)
                             for (_, _, instr, _, parent), m in zip(live, chosen)])
        stage = []
        for (i, ctx, instr, hist, parent), m, res in zip(live, chosen, asks):
            d = Drop(f"llm_{res.error}", res.detail) if not res.ok else eliminate_instruction(instr, res.text, min_new_words)
            if d:
                first_failure.setdefault(i, d)
                continue
            stage.append((i, ctx, res.text.strip(), hist + [m], parent, instr))
        answers = llm.generate([Request(ctx + [{"role": "user", "content": evolved}], sampling)
                                for (_, ctx, evolved, _, _, _) in stage])
        live = []
        for (i, ctx, evolved, hist, parent, instr), res in zip(stage, answers):
            d = Drop(f"llm_{res.error}", res.detail) if not res.ok else eliminate_response(res.text, min_response_words)
            if d:
                first_failure.setdefault(i, d)
                continue
            src = batch[i]
            meta = {k: v for k, v in src.meta.items() if k not in ("candidates", "pairwise", "rationales")}
            meta.update(teacher=llm.model, step="evolve",
                        evol={"method": hist[-1], "round": rnd, "parent": parent, "root": src.id, "history": hist,
                              "parent_instruction": instr})
            out = Record("sft", ctx + [{"role": "user", "content": evolved}, {"role": "assistant", "content": res.text.strip()}],
                         meta=meta)
            kept.append(out)
            survived.add(i)
            live.append((i, ctx, evolved, hist, out.id))
    for i, rec in enumerate(batch):
        if i not in survived and i in first_failure:
            dropped.append((rec, first_failure[i]))
        elif i not in survived and not any(r is rec for r, _ in dropped):
            dropped.append((rec, Drop("no_evolution", "no evolution round ran")))
    return kept, dropped
