"""Model-using steps as recipe ops: generate, evolve, rewrite, judge, pairs.

Each op builds its backend lazily in the process that runs it (an HTTP client or a model must
not cross a fork) and reports its calls, cache hits, retries and tokens as op counters in
stats.json. Requests of a batch run concurrently; the disk cache makes a rerun free.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import InputError
from ..llm import Backend, LLMConfig, make_llm
from ..records import Record
from .base import Drop, MapOp, param, register

Outcome = tuple[list[Record], list[tuple[Record, Drop]]]
LLM_HELP = ("model settings: backend (openai|transformers|vllm), model, base_url, api_key_env, concurrency, timeout, "
            "max_retries, cache_dir, temperature, top_p, max_tokens, seed, logprobs, stream")


@dataclass
class LLMOp(MapOp):
    llm: dict = param({}, LLM_HELP)
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
    n: int = param(4, "responses per prompt")
    mode: str = param("candidates", "candidates: one prompt record holding the N answers; sft: one sft record per answer")
    keep_original: bool = param(False, "with mode=candidates, an sft record's own answer becomes candidate 0")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in ("candidates", "sft"):
            raise InputError(f"generate: mode must be candidates or sft, got {self.mode!r}")

    def process(self, batch: list[Record]) -> Outcome:
        from ..generate.sampling import sample_responses

        return sample_responses(batch, self.backend(), self.config.sampling(n=self.n), self.mode, self.keep_original)


@register
@dataclass
class Evolve(LLMOp):
    """Evol-Instruct: deepen (constraints, deepen, concretize, reasoning, complicate_input) or broaden prompts,
    answer them, and eliminate failed evolutions."""

    name: ClassVar[str] = "evolve"
    methods: list = param([], "evolution methods to draw from (default: all six)")
    rounds: int = param(1, "evolution rounds; each round evolves the last round's survivors")
    min_new_words: int = param(2, "fewer new words than this is 'no information gain'")
    min_response_words: int = param(5, "a shorter answer to the evolved prompt eliminates it")

    def process(self, batch: list[Record]) -> Outcome:
        from ..generate.evol import evolve

        return evolve(batch, self.backend(), self.config.sampling(), self.methods or None, self.rounds,
                      self.min_new_words, self.min_response_words)


@register
@dataclass
class Rewrite(LLMOp):
    """Rewrite sft answers for accuracy and knowledge density; a worse rewrite is not taken."""

    name: ClassVar[str] = "rewrite"
    min_ratio: float = param(0.5, "a rewrite shorter than this share of the original is not taken")

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
    judge: str = param("aspects", "aspects | deita | pairwise | consistency")
    aspects: list = param(["helpfulness", "truthfulness", "harmlessness", "instruction_following"], "aspects to rate")
    retries: int = param(2, "re-asks after a malformed answer")
    drop_inconsistent: bool = param(False, "consistency judge: reject conversations that contradict themselves")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.judge not in JUDGES:
            raise InputError(f"judge: judge must be one of {JUDGES}, got {self.judge!r}")
        if not self.aspects:
            raise InputError("judge: aspects must not be empty")

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
    strategy: str = param("best_worst", "best_worst | best_vs_rest (best vs each lower one above the margin) | pairwise")
    min_margin: float = param(1.0, "minimum score gap between chosen and rejected")
    aspects: list = param([], "aspects averaged into a candidate's score (default: all it has, else its score)")
    weights: dict = param({}, "per-aspect weights for that average")

    def __post_init__(self) -> None:
        from ..preference.pairs import STRATEGIES

        if self.strategy not in STRATEGIES:
            raise InputError(f"pairs: strategy must be one of {STRATEGIES}, got {self.strategy!r}")

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


__all__ = ["Evolve", "Generate", "Judge", "Pairs", "Rewrite"]
