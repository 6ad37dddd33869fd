"""Model-using steps as recipe ops: generate, evolve, rewrite, judge, pairs.

Each op builds its backend lazily in the process that runs it (an HTTP client or a model must
not cross a fork) and reports its calls, cache hits, retries and tokens as op counters in
stats.json. Requests of a batch run concurrently; the disk cache makes a rerun free.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import orjson
from annotated_types import MinLen

from ..distill.confidence import ESTIMATORS
from ..generate.prompts import EVOL_BREADTH, EVOL_METHODS
from ..llm import Backend, LLMConfig, make_llm
from ..params import Count, NonNegative, Positive, Share
from ..preference.pairs import STRATEGIES
from ..records import Record
from .base import Drop, MapOp, param, register

EvolMethod = Literal[(*EVOL_METHODS, EVOL_BREADTH)]
Strategy = Literal[STRATEGIES]
Estimator = Literal[ESTIMATORS]

Outcome = tuple[list[Record], list[tuple[Record, Drop]]]
LLM_HELP = ("model settings: backend (openai|transformers|vllm), model, base_url, api_key_env, concurrency, timeout, "
            "max_retries, cache_dir, temperature, top_p, max_tokens, seed, logprobs, stream")


@dataclass
class LLMOp(MapOp):
    llm: dict[str, Any] = param({}, LLM_HELP)
    _backend: Any = field(default=None, init=False, repr=False, compare=False)
    _seen: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.config = LLMConfig.from_dict(self.llm)  # fail at recipe load, not in a worker

    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = make_llm(self.config)
        return self._backend

    def counters(self) -> dict[str, int]:
        """Usage since the last call (the executor sums these per op)."""
        if self._backend is None:
            return {}
        now = self._backend.usage.as_dict()
        delta = {k: v - self._seen.get(k, 0) for k, v in now.items()}
        self._seen = now
        return {k: v for k, v in delta.items() if v}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_backend"] = None
        return state


@register
@dataclass
class Generate(LLMOp):
    """Sample N responses per prompt from a teacher: as candidates for pair building, or as sft records."""

    name: ClassVar[str] = "generate"
    n: Positive = param(4, "responses per prompt")
    mode: Literal["candidates", "sft"] = param(
        "candidates", "candidates: one prompt record holding the N answers; sft: one sft record per answer")
    keep_original: bool = param(False, "with mode=candidates, an sft record's own answer becomes candidate 0")

    def process(self, batch: list[Record]) -> Outcome:
        from ..generate.sampling import sample_responses

        return sample_responses(batch, self.backend(), self.config.sampling(n=self.n), self.mode, self.keep_original)


@register
@dataclass
class Evolve(LLMOp):
    """Evol-Instruct: deepen (constraints, deepen, concretize, reasoning, complicate_input) or broaden prompts,
    answer them, and eliminate failed evolutions."""

    name: ClassVar[str] = "evolve"
    methods: list[EvolMethod] = param([], "evolution methods to draw from (default: all six)")
    rounds: Positive = param(1, "evolution rounds; each round evolves the last round's survivors")
    min_new_words: Count = param(2, "fewer new words than this is 'no information gain'")
    min_response_words: Count = param(5, "a shorter answer to the evolved prompt eliminates it")

    def process(self, batch: list[Record]) -> Outcome:
        from ..generate.evol import evolve

        return evolve(batch, self.backend(), self.config.sampling(), self.methods or None, self.rounds,
                      self.min_new_words, self.min_response_words)


@register
@dataclass
class Rewrite(LLMOp):
    """Rewrite sft answers for accuracy and knowledge density; a worse rewrite is not taken."""

    name: ClassVar[str] = "rewrite"
    min_ratio: NonNegative = param(0.5, "a rewrite shorter than this share of the original is not taken")

    def process(self, batch: list[Record]) -> Outcome:
        from ..generate.sampling import rewrite_responses

        return rewrite_responses(batch, self.backend(), self.config.sampling(), self.min_ratio)


JUDGES = ("aspects", "deita", "pairwise", "consistency")


@register
@dataclass
class Judge(LLMOp):
    """An AI judge: aspect ratings 1-5 with rationales, Deita complexity/quality, pairwise in both orders,
    or multi-turn consistency. A malformed answer is re-asked, then the record is rejected with the reason."""

    name: ClassVar[str] = "judge"
    judge: Literal[JUDGES] = param("aspects", "aspects | deita | pairwise | consistency")
    aspects: Annotated[list[str], MinLen(1)] = param(
        ["helpfulness", "truthfulness", "harmlessness", "instruction_following"], "aspects to rate")
    retries: Count = param(2, "re-asks after a malformed answer")
    drop_inconsistent: bool = param(False, "consistency judge: reject conversations that contradict themselves")

    def process(self, batch: list[Record]) -> Outcome:
        from ..generate import judges as J

        llm, s = self.backend(), self.config.sampling()
        if self.judge == "aspects":
            return J.rate_aspects(batch, llm, s, list(self.aspects), self.retries)
        if self.judge == "deita":
            return J.deita_scores(batch, llm, s, self.retries)
        if self.judge == "pairwise":
            return J.compare_pairwise(batch, llm, s, self.retries)
        return J.check_consistency(batch, llm, s, self.retries, self.drop_inconsistent)


@register
@dataclass
class Pairs(MapOp):
    """Build preference pairs from rated candidates (judge ratings or existing scores) or pairwise verdicts."""

    name: ClassVar[str] = "pairs"
    strategy: Strategy = param("best_worst", "best_worst | best_vs_rest (best vs each lower one above the margin) | pairwise")
    min_margin: NonNegative = param(1.0, "minimum score gap between chosen and rejected")
    aspects: list[str] = param([], "aspects averaged into a candidate's score (default: all it has, else its score)")
    weights: dict[str, NonNegative] = param({}, "per-aspect weights for that average")

    def process(self, batch: list[Record]) -> Outcome:
        from ..preference.pairs import build_pairs

        kept: list[Record] = []
        dropped: list[tuple[Record, Drop]] = []
        for rec in batch:
            pairs, why = build_pairs(rec, self.strategy, self.min_margin, list(self.aspects) or None, self.weights or None)
            if pairs and why is None:
                kept += pairs
            else:
                dropped.append((rec, why or Drop("no_pair", "no pair could be built")))
        return kept, dropped



@register
@dataclass
class Distill(MapOp):
    """Keep a teacher label only when the teacher is confident: self-consistency, log-prob, judge or verifier.
    Records carry their samples (meta.candidates) or, with `llm`, the teacher is asked for `k` of them."""

    name: ClassVar[str] = "distill"
    k: Positive = param(8, "samples per prompt when the teacher is asked")
    answer: str = param("number", "final-answer extractor: number, choice, exact, regex:PATTERN, module:function")
    estimators: Annotated[list[Estimator], MinLen(1)] = param(["consistency"], "consistency, logprob, judge, verifier")
    threshold: Share = param(0.6, "confidence needed to keep the label")
    combine: Literal["all", "weighted"] = param("all", "all (each estimator) or weighted (weighted mean)")
    weights: dict[Estimator, NonNegative] = param({}, "estimator weights for combine=weighted")
    verifier: str = param("", "module:function(record, answer) -> bool; default: the record's reference answer")
    llm: dict[str, Any] = param({}, "teacher settings (optional: without them the records must carry their samples)")
    judge: dict[str, Any] = param({}, "judge settings for the judge estimator (default: the teacher's)")

    def __post_init__(self) -> None:
        from ..distill import DistillConfig

        teachers = [self.llm] if self.llm else []
        if self.llm:
            LLMConfig.from_dict(self.llm)
        self._distiller = None
        self._cfg = DistillConfig(k=self.k, answer=self.answer, estimators=list(self.estimators), threshold=self.threshold,
                                  combine=self.combine, weights=dict(self.weights), verifier=self.verifier or None,
                                  judge=self.judge or None, teachers=teachers)
        self._cfg.combiner()  # validate now
        from ..distill.answers import extractor

        extractor(self.answer)

    def distiller(self):
        """One per process, so a teacher backend (a local model, a client and its cache) is built once."""
        if self._distiller is None:
            from pathlib import Path

            from ..distill.core import Distiller

            self._distiller = Distiller(self._cfg, Path("."))
        return self._distiller

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_distiller"] = None
        return state

    def process(self, batch: list[Record]) -> Outcome:
        from ..distill.core import as_prompt

        d = self.distiller()
        prompts = [as_prompt(r) for r in batch]
        failed: list[dict] = []
        teacher = "offline"
        if self.llm:
            ask = [p for p in prompts if not p.meta.get("candidates")]
            got, teacher, failed = d.sample(ask, 1) if ask else ([], self._cfg.teachers[0].get("model", ""), [])
            by_id = {g.id: g for g in got}
            prompts = [by_id.get(p.id, p) for p in prompts]
        labels, decisions = d.decide([p for p in prompts if p.meta.get("candidates")], 1, teacher)
        by_prompt = {lab.meta["distill"]["prompt_id"]: lab for lab in labels}
        why = {x["prompt_id"]: x for x in decisions + failed if not x["kept"]}
        kept, dropped = [], []
        for rec, p in zip(batch, prompts):
            if p.id in by_prompt:
                kept.append(by_prompt[p.id])
            else:
                x = why.get(p.id, {"reason": "no_samples", "values": {}})
                dropped.append((rec, Drop(x["reason"], orjson.dumps(x.get("values") or x.get("detail") or {}).decode())))
        return kept, dropped


__all__ = ["Distill", "Evolve", "Generate", "Judge", "Pairs", "Rewrite"]
