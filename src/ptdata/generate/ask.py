"""Ask a model for a structured answer, parse it strictly, re-ask on a malformed answer.

A re-ask is a new request (`attempt` + 1, and seed + 1 when seeded), so it is a new cache
entry, and a rerun replays the same sequence from the cache with zero calls. What still
fails comes back with a machine-readable reason for the rejects file.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from ..llm import Backend, Request, Sampling
from .parse import AnswerError


@dataclass
class Answer:
    value: Any = None
    reason: str | None = None  # None when parsed; else e.g. judge_malformed, llm_timeout
    detail: str = ""
    attempts: int = 0
    text: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


def ask(llm: Backend, prompts: list[list[dict]], parsers: list[Callable[[str], Any]], sampling: Sampling,
        retries: int = 2) -> list[Answer]:
    out = [Answer() for _ in prompts]
    pending = list(range(len(prompts)))
    attempt = 0
    while pending and attempt <= retries:
        s = sampling if attempt == 0 or sampling.seed is None else replace(sampling, seed=sampling.seed + attempt)
        results = llm.generate([Request(prompts[i], s, attempt=attempt) for i in pending])
        again = []
        for i, res in zip(pending, results):
            a = out[i]
            a.attempts = attempt + 1
            if not res.ok:
                a.reason, a.detail = f"llm_{res.error}", res.detail
                continue
            a.text = res.text
            try:
                a.value, a.reason, a.detail = parsers[i](res.text), None, ""
            except AnswerError as e:
                a.reason, a.detail = e.reason, f"{e.detail} (after {attempt + 1} attempt(s))"
                again.append(i)
        pending = again
        attempt += 1
    return out


def judge_messages(system: str, user: str) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
