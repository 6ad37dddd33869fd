"""Teacher generation: N responses per prompt, and rewriting a response to be more accurate
and informative. Every derived record names its parent and teacher in `meta`."""
from __future__ import annotations

from ..llm import Backend, Request, Sample, Sampling
from ..ops.base import Drop
from ..ops.filters import refusal_match
from ..records import Record
from . import prompts as P
from .ask import judge_messages

Outcome = tuple[list[Record], list[tuple[Record, Drop]]]


def prompt_of(rec: Record) -> list[dict]:
    """The turns a model should answer: all but the last assistant turn of an sft record."""
    return rec.messages[:-1] if rec.kind == "sft" else rec.messages


def candidate(s: Sample, model: str) -> dict:
    c: dict = {"text": s.text, "model": model, "finish_reason": s.finish_reason}
    if s.logprobs:
        c["mean_logprob"] = round(s.mean_logprob, 6)
        c["min_logprob"] = round(s.min_logprob, 6)
        c["tokens"] = len(s.logprobs)
    return c


def _provenance(rec: Record, llm: Backend, step: str) -> dict:
    meta = {k: v for k, v in rec.meta.items() if k not in ("candidates", "pairwise", "rationales", "judge")}
    meta.update(parent=rec.id, teacher=llm.model, step=step)
    return meta


def sample_responses(batch: list[Record], llm: Backend, sampling: Sampling, mode: str = "candidates",
                     keep_original: bool = False) -> Outcome:
    """mode "candidates": one prompt record per input, its samples in `meta.candidates` (the
    pair builder's input; with `keep_original` an sft record's own answer is candidate 0).
    mode "sft": one sft record per non-empty sample."""
    results = llm.generate([Request(prompt_of(r), sampling, tag=r.id) for r in batch])
    kept: list[Record] = []
    dropped: list[tuple[Record, Drop]] = []
    for rec, res in zip(batch, results):
        if not res.ok:
            dropped.append((rec, Drop(f"llm_{res.error}", res.detail)))
            continue
        prompt = prompt_of(rec)
        if mode == "candidates":
            cands = list(rec.meta.get("candidates") or [])
            if keep_original and rec.kind == "sft":
                cands.append({"text": rec.messages[-1].get("content") or "", "model": "original"})
            cands += [candidate(s, llm.model) for s in res.samples]
            kept.append(Record("prompt", prompt, meta={**_provenance(rec, llm, "generate"), "candidates": cands}))
            continue
        for k, s in enumerate(res.samples):
            meta = {**_provenance(rec, llm, "generate"), "sample": k, "finish_reason": s.finish_reason}
            out = Record("sft", prompt + [{"role": "assistant", "content": s.text}], meta=meta)
            if s.logprobs:
                out.scores.update({"logprob.mean": round(s.mean_logprob, 6), "logprob.min": round(s.min_logprob, 6)})
            if not s.text.strip():
                dropped.append((out, Drop("empty_response", f"sample {k} of the teacher's answer is empty")))
            else:
                kept.append(out)
    return kept, dropped


def rewrite_responses(batch: list[Record], llm: Backend, sampling: Sampling, min_ratio: float = 0.5) -> Outcome:
    """Ask the teacher to improve each sft answer's accuracy and knowledge density. A rewrite
    that is empty, a refusal, or shorter than `min_ratio` of the original is not taken: the
    record keeps its answer and `meta.rewrite.status` says why."""
    todo = [r for r in batch if r.kind == "sft"]
    reqs = [Request(judge_messages("You improve answers written by AI assistants.",
                                   P.rewrite_prompt(r.messages[:-1], r.messages[-1].get("content") or "")),
                    sampling, tag=r.id) for r in todo]
    results = llm.generate(reqs)
    dropped: list[tuple[Record, Drop]] = []
    failed = set()
    for rec, res in zip(todo, results):
        if not res.ok:
            dropped.append((rec, Drop(f"llm_{res.error}", res.detail)))
            failed.add(id(rec))
            continue
        old = rec.messages[-1].get("content") or ""
        new = res.text.strip()
        status = ("empty" if not new else "refusal" if refusal_match(new) else
                  "too_short" if len(new) < min_ratio * len(old) else "unchanged" if new == old.strip() else "rewritten")
        rec.meta["rewrite"] = {"status": status, "teacher": llm.model}
        if status == "rewritten":
            rec.meta["rewrite"]["parent"] = rec.id
            rec.messages[-1] = {**rec.messages[-1], "content": new}
            rec.refresh_id()
    return [r for r in batch if id(r) not in failed], dropped
