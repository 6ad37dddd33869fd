"""Preference data: pairs from rated candidates or judgments, validation, bias checks."""
from .pairs import bias_report, build_pairs, candidate_score, validate_pair

__all__ = ["bias_report", "build_pairs", "candidate_score", "validate_pair"]
