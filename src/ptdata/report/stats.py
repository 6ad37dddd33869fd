"""Streaming dataset statistics: kinds, turns, characters per role, languages, duplicate ids.

Memory is flat in the number of records except for the set of seen ids (one 128-bit int
per unique record), which duplicate counting needs by nature.
"""
from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field

from ..records import Record
from ..validation import script_of


@dataclass
class DatasetStats:
    records: int = 0
    rejected: int = 0
    kinds: Counter = field(default_factory=Counter)
    turns: Counter = field(default_factory=Counter)  # turns per conversation -> records
    chars_by_role: Counter = field(default_factory=Counter)
    turns_by_role: Counter = field(default_factory=Counter)
    languages: Counter = field(default_factory=Counter)
    flags: Counter = field(default_factory=Counter)
    reject_reasons: Counter = field(default_factory=Counter)
    duplicate_records: int = 0
    duplicate_ids: Counter = field(default_factory=Counter)
    _seen: set = field(default_factory=set, repr=False)

    def add(self, rec: Record) -> None:
        self.records += 1
        self.kinds[rec.kind] += 1
        conv = rec.messages + (rec.chosen or [] if rec.kind == "preference" else [])
        self.turns[len(conv)] += 1
        for m in rec.messages + (rec.chosen or []) + (rec.rejected or []):
            self.chars_by_role[m["role"]] += len(m["content"])
            self.turns_by_role[m["role"]] += 1
        self.languages[self.language(rec)] += 1
        for f in rec.meta.get("flags", ()):
            self.flags[f] += 1
        key = int(rec.id, 16)
        if key in self._seen:
            self.duplicate_records += 1
            self.duplicate_ids[rec.id] += 1
        else:
            self._seen.add(key)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        self.reject_reasons[reason] += 1

    def language(self, rec: Record) -> str:
        """Language of the first user turn (the language op's identifier), or its script when it is short."""
        text = next((m["content"] for m in rec.messages if m["role"] == "user"), "")
        if not text.strip():
            return "und"
        if len(text) < 12:
            return script_of(text, 1) or "und"
        from ..ops.language import identify

        return identify(text)[0]

    def as_dict(self) -> dict:
        n = sum(self.turns.values()) or 1
        return {
            "records": self.records,
            "rejected": self.rejected,
            "kinds": dict(self.kinds),
            "turns_per_conversation": {
                "histogram": {str(k): v for k, v in sorted(self.turns.items())},
                "mean": round(sum(k * v for k, v in self.turns.items()) / n, 3),
                "max": max(self.turns, default=0),
            },
            "chars_by_role": {
                r: {"total": c, "turns": self.turns_by_role[r], "mean": round(c / self.turns_by_role[r], 1)}
                for r, c in sorted(self.chars_by_role.items())
            },
            "languages": dict(self.languages.most_common()),
            "flags": dict(self.flags),
            "reject_reasons": dict(self.reject_reasons),
            "duplicates": {
                "records": self.duplicate_records,
                "unique_records": self.records - self.duplicate_records,
                "top": [{"id": i, "extra_copies": c} for i, c in self.duplicate_ids.most_common(10)],
            },
        }


def numeric_summary(xs: list[float]) -> dict | None:
    """n, min, mean, median, p95 and max of a list of numbers (None when empty), for reports."""
    if not xs:
        return None
    s = sorted(xs)
    return {"n": len(s), "min": s[0], "mean": round(statistics.fmean(s), 4), "median": statistics.median(s),
            "p95": s[int(0.95 * (len(s) - 1))], "max": s[-1]}
