"""Decontamination: find training records that hold a benchmark item.

Layer 1, n-gram coverage (Tulu 3 / OLMo style): the share of a benchmark item's tokens (words,
or characters for CJK text) that lie inside n-grams the record shares with it, 8-grams by
default. An n-gram made only of function words, or found in many benchmark items (boilerplate
such as "This question refers to the following information"), is no evidence. A short item
(under two full n-grams) uses shorter grams to find candidates and counts only when the record
holds it with at most `max_edits` word edits, so one changed word never hides it and a generic
phrase ("Explain the concept of") never stands for it. Hits carry their layer (`ngram`), so
further layers (embeddings for rephrasings and translations, an LLM check) report beside it.

`action: drop` rejects a contaminated record (reason `contaminated`, the benchmark, item, layer
and score in the detail); `action: flag` keeps it with `meta.contamination`, so a dataset can be
audited without changing it. Either way the report counts, per benchmark, the items found and by
which layer, and per layer the records flagged.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import xxhash
from annotated_types import Interval, MinLen

from ..errors import InputError
from ..params import Positive
from ..records import Record
from ..text import is_cjk, normalize_for_match, record_text
from .base import Drop, MapOp, param, register
from .filters import TextField

# Function words: an n-gram made of these alone says nothing about where a text came from.
STOP_EN = frozenset("""a an the and or but if then than so as of at by for from in into on onto to with without
about above after again against all am any are aren't be because been before being below between both can could
did do does doing down during each few further had has have having he her here hers herself him himself his how i
is it its itself just me more most my myself no nor not now off once only other our ours ourselves out over own
same she should some such that their theirs them themselves there these they this those through too under until up
very was we were what when where which while who whom why will would you your yours yourself yourselves one two
three also may might must shall let us get got make made use used each every many much""".split())
STOP_ZH = frozenset("的了是在和有也就都而及与或这那一个不人我你他她它们吗呢吧啊之于以为上下中对把被从到给让")


_APOSTROPHE = re.compile(r"(?<=\w)['’](?=\w)")


def _units(text: str) -> tuple[list[str], bool]:
    norm = normalize_for_match(_APOSTROPHE.sub("", text))  # "it's" is one word, not "it s"
    if is_cjk(norm):
        return [c for c in norm if not c.isspace()], True
    return norm.split(), False


def _hashes(units: list[str]) -> list[int]:
    h = xxhash.xxh3_64_intdigest
    return [h(u.encode()) for u in units]


def _grams(ids: list[int], n: int) -> list[int]:
    """Hashes of the n-grams of unit ids, in order (tuple hashes of ints are stable across processes)."""
    return list(map(hash, zip(*[ids[i:] for i in range(n)]))) if len(ids) >= n else []


def substring_edits(item: list[int], text: list[int]) -> int:
    """The fewest word (or character) edits that turn `item` into some stretch of `text`
    (Sellers' approximate substring matching: the match may start and end anywhere)."""
    prev = [0] * (len(text) + 1)
    for i, a in enumerate(item, 1):
        cur = [i] + [0] * len(text)
        for j, b in enumerate(text, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a != b))
        prev = cur
    return min(prev)


def gram_size(length: int, n: int, smallest: int) -> int:
    """The n-gram size for an item of `length` units: `n`, or shorter for a short item, so that
    with any one unit changed, grams still cover the units on either side of it."""
    return max(smallest, min(n, (length - 1) // 2))


@dataclass
class Item:
    benchmark: str
    index: int  # 1-based row of the benchmark file
    text: str
    cjk: bool
    n: int
    grams: list[int]  # every n-gram of the item in order; 0 where the gram is no evidence
    raw: list[int]  # every n-gram, generic or not
    units: list[int]  # the item's unit hashes (short items are confirmed by edit distance)
    short: bool  # shorter than two full n-grams: held only when the text has it with few edits

    @property
    def name(self) -> str:
        return f"{self.benchmark}#{self.index}"


def read_benchmark(path: str, fmt: str | None = None, fields: dict | None = None, answers: bool = False) -> list[tuple[int, str]]:
    """(row number, text) of each item: any format ptdata reads (the prompt, plus the answer with
    `answers`), or a CSV with a question column (MMLU's layout, headerless: question, four options,
    answer; or a header naming `question`/`prompt`/`input`)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"decontaminate: benchmark file {path} not found")
    if fmt == "csv" or (fmt is None and p.suffix.lower() == ".csv"):
        try:
            rows = list(csv.reader(io.StringIO(p.read_text(encoding="utf-8-sig"))))
        except (UnicodeDecodeError, csv.Error) as e:
            raise InputError(f"decontaminate: {path}: cannot read it as CSV ({e})") from None
        if not rows:
            raise InputError(f"decontaminate: {path}: empty")
        head = [c.strip().lower() for c in rows[0]]
        col = (fields or {}).get("question")
        if col is None:
            col = next((c for c in ("question", "prompt", "input", "problem") if c in head), None)
        if col is not None:
            if col not in head:
                raise InputError(f"decontaminate: {path}: no column {col!r} (columns: {', '.join(head)})")
            k, body, first = head.index(col), rows[1:], 2
        else:
            k, body, first = 0, rows, 1  # MMLU: no header, the question first
        out = []
        for i, r in enumerate(body, first):
            if len(r) > k and r[k].strip():
                text = r[k] + ("\n" + "\n".join(r[k + 1:]) if answers else "")
                out.append((i, text))
        return out
    from ..reader import ReadOptions, read_records

    opts = {"fields": dict(fields)} if fields else {}
    try:
        records = read_records(path, ReadOptions(fmt=fmt, opts=opts, validate=False))
        return [(i, record_text(rec, "all" if answers else "prompt")) for i, (rec, _) in enumerate(records, 1)
                if rec is not None]
    except InputError as e:
        raise InputError(f"decontaminate: {str(e).removeprefix('error: ')}") from None


def _entry(value: Any) -> dict:
    if isinstance(value, str):
        return {"path": value, "format": None, "fields": None, "name": Path(value).name}
    if isinstance(value, dict):
        unknown = set(value) - {"path", "format", "fields", "name"}
        if unknown or not isinstance(value.get("path"), str):
            raise InputError("decontaminate: a benchmarks entry is a path or {path, format, fields, name}"
                             + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else ""))
        f = value.get("fields")
        if f is not None and not (isinstance(f, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in f.items())):
            raise InputError("decontaminate: fields must map names to column names")
        return {"path": value["path"], "format": value.get("format"), "fields": f,
                "name": str(value.get("name") or Path(value["path"]).name)}
    raise InputError(f"decontaminate: a benchmarks entry is a path or a mapping, got {type(value).__name__}")


@register
@dataclass
class Decontaminate(MapOp):
    """Find records holding a benchmark item by n-gram coverage (short items: by edit distance); drop
    them or flag them, with a per-benchmark report."""

    name: ClassVar[str] = "decontaminate"
    benchmarks: Annotated[list[str | dict[str, Any]], MinLen(1)] = param(
        [], "benchmark files: paths or {path, format, fields, name}; any ptdata format, or CSV with a question column (MMLU)")
    ngram: Positive = param(8, "n-gram size in words (layer 1)")
    char_ngram: Positive = param(12, "n-gram size in characters for CJK text")
    min_ngram: Positive = param(2, "smallest n-gram size, for the shortest items")
    min_coverage: Annotated[float, Interval(gt=0, le=1)] = param(
        0.5, "share of an item's tokens inside shared n-grams at which a record holds it")
    common_items: Positive = param(3, "an n-gram found in this many benchmark items, and in at least common_share of "
                                   "them, is boilerplate, not evidence")
    common_share: Annotated[float, Interval(ge=0, le=1)] = param(
        0.05, "share of the benchmark's items an n-gram must be in to be boilerplate (passages shared by a few "
        "questions stay evidence)")
    max_edits: Annotated[int, Interval(ge=0, le=5)] = param(
        1, "a short item (under two full n-grams) is held by a text that has it with at most this many word edits")
    field: TextField = param("all", "record text to check: all, prompt or response")
    include_answers: bool = param(False, "also index the benchmark answers")
    action: Literal["drop", "flag"] = param("drop", "drop (reject as contaminated) or flag (keep, with meta.contamination)")
    _items: list = dataclasses.field(default_factory=list, init=False, repr=False)
    _index: dict = dataclasses.field(default_factory=dict, init=False, repr=False)  # (cjk, n) -> gram -> item ids

    def __post_init__(self) -> None:
        self._entries = [_entry(b) for b in self.benchmarks]

    def setup(self) -> None:
        if self._items:
            return
        items: list[Item] = []
        for e in self._entries:
            for i, text in read_benchmark(e["path"], e["format"], e["fields"], self.include_answers):
                units, cjk = _units(text)
                if not units:
                    continue
                full = self.char_ngram if cjk else self.ngram
                n = gram_size(len(units), full, self.min_ngram)
                ids = _hashes(units)
                items.append(Item(e["name"], i, text, cjk, n, self._evidence(units, n, cjk), _grams(ids, n), ids,
                                  len(units) < 2 * full + 1))
        if not items:
            raise InputError("decontaminate: the benchmark files hold no items")
        # boilerplate: an n-gram in `common_items` items or more is not evidence
        seen: dict[tuple, int] = {}
        for it in items:
            for g in set(it.grams) - {0}:
                seen[(it.cjk, it.n, g)] = seen.get((it.cjk, it.n, g), 0) + 1
        index: dict[tuple, dict[int, list[int]]] = {}
        common = max(self.common_items, int(np.ceil(self.common_share * len(items))))
        for k, it in enumerate(items):
            it.grams = [0 if g and seen[(it.cjk, it.n, g)] >= common else g for g in it.grams]
            bucket = index.setdefault((it.cjk, it.n), {})
            for g in set(it.grams) - {0}:
                bucket.setdefault(g, []).append(k)
        self._items, self._index = items, index

    @staticmethod
    def _evidence(units: list[str], n: int, cjk: bool) -> list[int]:
        """The item's n-gram hashes in order, 0 for a gram of function words only."""
        stop = STOP_ZH if cjk else STOP_EN
        plain = [u in stop for u in units]
        grams = _grams(_hashes(units), n)
        return [0 if all(plain[i:i + n]) else g for i, g in enumerate(grams)]

    def coverage(self, rec_text: str) -> dict[int, float]:
        """Layer 1: item -> the share of its units covered by n-grams shared with the text."""
        units, cjk = _units(rec_text)
        ids = _hashes(units)
        out: dict[int, float] = {}
        for (icjk, n), bucket in self._index.items():
            if icjk != cjk:
                continue
            mine = set(_grams(ids, n))
            cands = {k for g in mine if g in bucket for k in bucket[g]}
            for k in cands:
                it = self._items[k]
                covered = np.zeros(len(it.grams) + n - 1, dtype=bool)
                # a long item counts evidence only; a short one every shared gram (its edit distance decides)
                for i, g in enumerate(it.raw if it.short else it.grams):
                    if g and g in mine:
                        covered[i:i + n] = True
                share = float(covered.sum()) / len(covered)
                if not it.short:
                    if share >= self.min_coverage:
                        out[k] = round(share, 4)
                    continue
                # a short item: the record must hold it with at most max_edits edits; one changed
                # unit leaves at most n units uncovered, so less coverage than that cannot be one
                edits = self.max_edits if len(it.units) > 4 else 0
                if share >= (len(it.units) - n * max(edits, 1)) / len(it.units):
                    d = substring_edits(it.units, ids)
                    if d <= edits:
                        out[k] = round(1 - d / len(it.units), 4)
        return out

    def check(self, rec: Record) -> Drop | None:
        """The drop one record gets (None: clean, or flagged with action flag)."""
        _, dropped = self.process([rec])
        return dropped[0][1] if dropped else None

    def process(self, batch: list[Record]) -> tuple[list[Record], list[tuple[Record, Drop]]]:
        self.setup()
        texts = [record_text(r, self.field) for r in batch]
        hits: list[list[dict]] = [[{"item": k, "layer": "ngram", "score": s} for k, s in self.coverage(t).items()]
                                  for t in texts]
        kept, dropped = [], []
        for rec, found in zip(batch, hits):
            if not found:
                kept.append(rec)
                continue
            found.sort(key=lambda h: (-h["score"], h["item"]))
            rec.meta["contamination"] = [{"benchmark": self._items[h["item"]].benchmark, "item": self._items[h["item"]].name,
                                          "layer": h["layer"], "score": h["score"]} for h in found[:5]]
            if self.action == "flag":
                kept.append(rec)
                continue
            detail = ", ".join(f"{c['item']} ({c['layer']} {c['score']:.2f})" for c in rec.meta["contamination"])
            dropped.append((rec, Drop("contaminated", "matches " + detail)))
        return kept, dropped
