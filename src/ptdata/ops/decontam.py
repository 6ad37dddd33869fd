"""Decontamination: drop training records that overlap a benchmark (n-gram overlap).

Benchmark items are indexed by hashed n-grams of their normalized text: 13 words, or 50
characters for CJK (configurable). An item shorter than 2n+1 units is indexed with
floor((L-1)/2)-grams (at least `min_ngram`), so a copy with any single word changed still
shares at least one gram with it. Matched items are named in each reject and in the report.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

import xxhash
from annotated_types import MinLen

from ..errors import InputError
from ..params import Positive
from ..records import Record
from ..text import is_cjk, normalize_for_match, record_text
from .base import Drop, MapOp, param, register
from .filters import TextField


def _units(text: str) -> tuple[list[str], bool]:
    norm = normalize_for_match(text)
    if is_cjk(norm):
        return list(norm.replace(" ", "")), True
    return norm.split(), False


def _unit_ids(units: list[str]) -> list[int]:
    h = xxhash.xxh3_64_intdigest
    return [h(u.encode()) for u in units]


def _grams(ids: list[int], n: int) -> set[int]:
    """Hashes of the n-grams of unit ids (tuple hashes of ints are stable across processes)."""
    if len(ids) < n:
        return set()
    return set(map(hash, zip(*[ids[i:] for i in range(n)])))


@register
@dataclass
class Decontaminate(MapOp):
    """Reject records sharing an n-gram with a benchmark item (GSM8K test, MMLU, …)."""

    name: ClassVar[str] = "decontaminate"
    benchmarks: Annotated[list[str], MinLen(1)] = param(
        [], "benchmark files (any supported format); their prompts (and answers with include_answers) are indexed")
    word_ngram: Positive = param(13, "n-gram size in words")
    char_ngram: Positive = param(50, "n-gram size in characters for CJK text")
    min_ngram: Positive = param(6, "smallest n used for short benchmark items")
    field: TextField = param("all", "record text to check: all, prompt or response")
    include_answers: bool = param(False, "also index the benchmark answers")
    _candidates: dict = dataclasses.field(default_factory=dict, init=False, repr=False)  # min_ngram hash -> items
    _items: list = dataclasses.field(default_factory=list, init=False, repr=False)  # (name, n, cjk, gram set)
    _cand_sizes: set = dataclasses.field(default_factory=set, init=False, repr=False)

    def setup(self) -> None:
        if self._items:
            return
        from ..reader import ReadOptions, read_records

        for path in self.benchmarks:
            if not Path(path).exists():
                raise InputError(f"decontaminate: benchmark file {path} not found")
            name = Path(path).name
            for i, (rec, _) in enumerate(read_records(path, ReadOptions(validate=False)), 1):
                if rec is None:
                    continue
                units, cjk = _units(record_text(rec, "all" if self.include_answers else "prompt"))
                if not units:
                    continue
                n = self.char_ngram if cjk else self.word_ngram
                if len(units) < 2 * n + 1:
                    n = max(self.min_ngram, (len(units) - 1) // 2)
                ids = _unit_ids(units)
                n = min(n, len(ids))
                item = len(self._items)
                self._items.append((f"{name}#{i}", n, cjk, _grams(ids, n)))
                cn = min(self.min_ngram, n)
                self._cand_sizes.add(cn)
                for h in _grams(ids, cn):
                    self._candidates.setdefault((cjk, h), []).append(item)

    def check(self, rec: Record) -> Drop | None:
        """Candidates share a short gram with the record; a match shares a gram of the item's own size."""
        self.setup()
        units, cjk = _units(record_text(rec, self.field))
        ids = _unit_ids(units)
        cands: set[int] = set()
        for n in self._cand_sizes:
            for h in _grams(ids, n):
                found = self._candidates.get((cjk, h))
                if found:
                    cands.update(found)
        if not cands:
            return None
        hits: dict[int, int] = {}
        by_n: dict[int, set[int]] = {}
        for item in cands:
            _, n, is_cjk, grams = self._items[item]
            if is_cjk != cjk:
                continue
            mine = by_n.get(n)
            if mine is None:
                mine = by_n[n] = _grams(ids, n)
            shared = len(mine & grams)
            if shared:
                hits[item] = shared
        if not hits:
            return None
        top = sorted(hits, key=lambda k: -hits[k])[:5]
        rec.meta["contamination"] = [self._items[k][0] for k in top]
        return Drop("contaminated", "matches " + ", ".join(f"{self._items[k][0]} ({hits[k]} grams)" for k in top))
