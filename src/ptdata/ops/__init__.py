"""Curation ops. An op's module is imported when the op is first asked for by name (`get_op`),
so a run starts with only the ops its recipe uses; `all_ops()` imports them all (`ptdata ops`)."""
from __future__ import annotations

from importlib import import_module

from ..errors import InputError
from .base import OPS, GlobalOp, MapOp, Op  # noqa: F401

# op name -> its module under ptdata.ops (tests/test_pipeline.py checks this against the modules)
MODULES = {
    "length_filter": "filters", "turn_filter": "filters", "repetition_filter": "filters", "garbled_filter": "filters",
    "refusal_filter": "filters", "pii": "pii", "language_id": "language", "language_filter": "language",
    "exact_dedup": "dedup", "near_dedup": "dedup", "semantic_dedup": "dedup", "decontaminate": "decontam",
    "quality_scores": "quality", "score_filter": "quality", "select": "quality",
    "generate": "llm", "evolve": "llm", "rewrite": "llm", "judge": "llm", "pairs": "llm", "distill": "llm",
}


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
