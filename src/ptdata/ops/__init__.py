"""Curation ops. An op's module is imported when the op is first asked for by name (`get_op`)
or by class (`from ptdata.ops import NearDedup`), so a run starts with only the ops its recipe
uses; `all_ops()` imports them all (`ptdata ops`)."""
from __future__ import annotations

from importlib import import_module

from ..errors import InputError
from .base import OPS, GlobalOp, MapOp, Op  # noqa: F401

# op name -> its module under ptdata.ops (tests/test_pipeline.py checks this against the modules)
MODULES = {
    "length_filter": "filters", "turn_filter": "filters", "repetition_filter": "filters", "garbled_filter": "filters",
    "refusal_filter": "filters", "pii": "pii", "language_id": "language", "language_filter": "language",
    "exact_dedup": "dedup", "near_dedup": "dedup", "semantic_dedup": "dedup", "decontaminate": "decontam",
    "quality_scores": "quality", "score_filter": "quality", "select": "select",
    "generate": "llm", "evolve": "llm", "rewrite": "llm", "judge": "llm", "pairs": "llm", "distill": "llm",
    "multiturn": "llm", "model_scores": "model_scores",
}


# class name -> op name, for `from ptdata.ops import LengthFilter`
CLASSES = {
    "LengthFilter": "length_filter", "TurnFilter": "turn_filter", "RepetitionFilter": "repetition_filter",
    "GarbledFilter": "garbled_filter", "RefusalFilter": "refusal_filter", "Pii": "pii", "LanguageId": "language_id",
    "LanguageFilter": "language_filter", "ExactDedup": "exact_dedup", "NearDedup": "near_dedup",
    "SemanticDedup": "semantic_dedup", "Decontaminate": "decontaminate", "QualityScores": "quality_scores",
    "ScoreFilter": "score_filter", "Select": "select", "Generate": "generate", "Evolve": "evolve", "Rewrite": "rewrite",
    "Judge": "judge", "Pairs": "pairs", "Distill": "distill", "MultiTurn": "multiturn", "ModelScores": "model_scores",
}
__all__ = ["Op", "MapOp", "GlobalOp", "get_op", "all_ops", *CLASSES]


def __getattr__(name: str) -> type[Op]:
    if name in CLASSES:
        return get_op(CLASSES[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_op(name: str) -> type[Op]:
    if name not in OPS and name in MODULES:
        import_module(f"{__name__}.{MODULES[name]}")
    try:
        return OPS[name]
    except KeyError:
        raise InputError(f"unknown op {name!r}; `ptdata ops` lists them") from None


def all_ops() -> dict[str, type[Op]]:
    """Every op, by name, in the order of MODULES."""
    return {name: get_op(name) for name in MODULES}
