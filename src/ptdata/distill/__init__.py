"""Data distillation: teacher labels, confidence filtering, merging, rounds with provenance."""
from .answers import extractor
from .confidence import Combiner, vote
from .core import DistillConfig, Distiller, merge

__all__ = ["Combiner", "DistillConfig", "Distiller", "extractor", "merge", "vote"]
