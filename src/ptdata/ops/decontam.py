"""Decontamination: find training records that hold a benchmark item, in three layers.

Layer 1, n-gram coverage (Tulu 3 / OLMo style): the share of a benchmark item's tokens (words,
or characters for CJK text) that lie inside n-grams the record shares with it, 8-grams by
default. An n-gram made only of function words, or found in many benchmark items (boilerplate
such as "This question refers to the following information"), is no evidence. A short item
(under two full n-grams) uses shorter grams to find candidates and counts only when the record
holds it with at most `max_edits` word edits, so one changed word never hides it and a generic
phrase ("Explain the concept of") never stands for it.

Layer 2 (`semantic: true`), embeddings: rephrasings and translations share no n-grams, so each
item is embedded (whole, with its options; its question line; its passage) with a multilingual
sentence model from a package (USE v3 by default, chosen on bench/decontam.py's figures) and a
record holds the item when the cosine of its embedding to the item's best chunk reaches
`semantic_threshold`. Vectors go through ptdata.embed's cache, shared with semantic_dedup.

Layer 3 (`llm: {...}`), a judge through ptdata.llm, sees only the candidate pairs of layers 1-2
("is the training text a rephrasing or translation of the item?"): a yes adds an `llm` hit with
the judge's reason; a no dismisses the semantic hit (a topical neighbour), while n-gram hits,
lexical evidence, stay.

`action: drop` rejects a contaminated record (reason `contaminated`, the benchmark, item, layer
and score in the detail); `action: flag` keeps it with `meta.contamination`, so a dataset can be
audited without changing it. Either way the report counts, per benchmark, the items found and by
which layer, and per layer the records flagged.
"""
from __future__ import annotations

import csv
from collections import Counter
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
from ..llm import Request
from .base import Drop, param, register
from .llm import LLM_HELP, LLMOp
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
    options: str = ""  # an MMLU row's choices (the semantic layer embeds them with the item)

    @property
    def name(self) -> str:
        return f"{self.benchmark}#{self.index}"


def read_benchmark(path: str, fmt: str | None = None, fields: dict | None = None, answers: bool = False) -> list[tuple[int, str]]:
    """(row number, text) of each item: any format ptdata reads (the prompt, plus the answer with
    `answers`), or a CSV with a question column (MMLU's layout, headerless: question, four options,
    answer; or a header naming `question`/`prompt`/`input`)."""
    return [(i, text) for i, text, _ in read_items(path, fmt, fields, answers)]


def read_items(path: str, fmt: str | None = None, fields: dict | None = None,
               answers: bool = False) -> list[tuple[int, str, str]]:
    """(row number, text, options) of each item; `options` is an MMLU row's choices as "A. ...",
    one per line (the semantic layer embeds the item with them: a translation carries them too)."""
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
            k, body, first, mmlu = head.index(col), rows[1:], 2, False
        else:
            k, body, first, mmlu = 0, rows, 1, True  # MMLU: no header, the question first
        out = []
        for i, r in enumerate(body, first):
            if len(r) > k and r[k].strip():
                text = r[k] + ("\n" + "\n".join(r[k + 1:]) if answers else "")
                choices = r[k + 1:-1] if mmlu and len(r) > k + 2 else []
                out.append((i, text, "\n".join(f"{chr(65 + j)}. {c}" for j, c in enumerate(choices[:26]))))
        return out
    from ..reader import ReadOptions, read_records

    opts = {"fields": dict(fields)} if fields else {}
    try:
        records = read_records(path, ReadOptions(fmt=fmt, opts=opts, validate=False))
        return [(i, record_text(rec, "all" if answers else "prompt"), "") for i, (rec, _) in enumerate(records, 1)
                if rec is not None]
    except InputError as e:
        raise InputError(f"decontaminate: {str(e).removeprefix('error: ')}") from None


def item_chunks(text: str, options: str) -> list[str]:
    """What the semantic layer embeds of an item: the whole item (with its options), its last line
    (the question of a passage-based item: a rephrasing often keeps only that), and the passage."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    out = [text.strip() + ("\n" + options if options else "")]
    if len(lines) > 1:
        out += [lines[-1].strip(), "\n".join(lines[:-1]).strip()]
    return out


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


JUDGE_PROMPT = """You check training data for benchmark contamination.

Benchmark item:
<<<
{item}
>>>

Training text:
<<<
{text}
>>>

Is the training text this benchmark item itself, a rephrasing of it, or a translation of it (the same question, \
worded differently or in another language), rather than a different text on a similar topic? Answer YES or NO on \
the first line, then one short sentence saying why."""


LAYERS = ("ngram", "semantic", "llm")


def parse_verdict(text: str) -> str:
    """yes, no, or unclear, from the first word of a judge's answer."""
    m = re.match(r"\W*(yes|no)\b", text.strip(), re.I)
    return m.group(1).lower() if m else "unclear"


@register
@dataclass
class Decontaminate(LLMOp):
    """Find records holding a benchmark item: n-gram coverage (short items: by edit distance), a
    multilingual embedding layer for rephrasings and translations, an LLM check of the candidates;
    drop them or flag them, with a per-benchmark report."""

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
    semantic: bool = param(False, "layer 2: flag records whose embedding is close to an item's (rephrasings, translations)")
    semantic_model: str = param("use", "layer 2 embedding model: use (multilingual USE v3), e5, minilm, or a folder")
    semantic_threshold: Annotated[float, Interval(ge=-1, le=1)] = param(
        0.585, "layer 2: cosine at which a record holds an item (use, calibrated on decontam_dev: 0.1% of untouched Alpaca prompts reach it)")
    semantic_field: TextField = param("prompt", "layer 2: record text to embed")
    cache_dir: str = param(".ptdata-cache", "embedding cache folder (shared with semantic_dedup); empty: no cache")
    action: Literal["drop", "flag"] = param("drop", "drop (reject as contaminated) or flag (keep, with meta.contamination)")
    llm: dict[str, Any] = param({}, "layer 3 (optional): a judge that confirms each candidate (record, item) pair; "
                                + LLM_HELP)
    _items: list = dataclasses.field(default_factory=list, init=False, repr=False)
    _index: dict = dataclasses.field(default_factory=dict, init=False, repr=False)  # (cjk, n) -> gram -> item ids
    _sem: Any = dataclasses.field(default=None, init=False, repr=False)  # (Embeddings, chunk matrix, item starts)

    def __post_init__(self) -> None:
        if self.llm:  # layer 3 is optional: no judge, no model settings to check
            super().__post_init__()
        self._entries = [_entry(b) for b in self.benchmarks]
        self._counts: Counter = Counter()

    def rules(self) -> None:
        from ..embed import MODELS

        if self.semantic and self.semantic_model not in MODELS and not Path(self.semantic_model).is_dir():
            raise ValueError(f"semantic_model {self.semantic_model!r}: one of {', '.join(MODELS)}, or a "
                             "sentence-transformers folder")

    def __getstate__(self) -> dict:  # models are loaded again in each worker, never pickled
        state = super().__getstate__()
        state["_sem"] = None
        return state

    def setup(self) -> None:
        if self._items:
            return
        items: list[Item] = []
        for e in self._entries:
            for i, text, options in read_items(e["path"], e["format"], e["fields"], self.include_answers):
                units, cjk = _units(text)
                if not units:
                    continue
                full = self.char_ngram if cjk else self.ngram
                n = gram_size(len(units), full, self.min_ngram)
                ids = _hashes(units)
                items.append(Item(e["name"], i, text, cjk, n, self._evidence(units, n, cjk), _grams(ids, n), ids,
                                  len(units) < 2 * full + 1, options))
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

    def similar(self, texts: list[str]) -> list[dict[int, float]]:
        """Layer 2: per text, item -> cosine of the embeddings (the best of the item's chunks) where
        it reaches semantic_threshold, the 5 best. (ptdata.embed reads a text's first
        MAX_CHARS characters: a huge record costs what a long one does)."""
        if not texts:
            return []
        if self._sem is None:
            from ..embed import Embeddings

            embed = Embeddings(self.semantic_model, self.cache_dir)
            chunks = [item_chunks(it.text, it.options) for it in self._items]
            starts = np.cumsum([0] + [len(c) for c in chunks[:-1]])
            self._sem = (embed, embed([c for cs in chunks for c in cs]), starts)
        embed, mat, starts = self._sem
        sims = np.maximum.reduceat(embed(texts) @ mat.T, starts, axis=1)
        out = []
        for row in sims:
            top = np.flatnonzero(row >= self.semantic_threshold)
            top = top[np.argsort(-row[top], kind="stable")][:5]
            out.append({int(k): round(float(row[k]), 4) for k in top})
        return out

    def confirm(self, pairs: list[tuple[str, int]]) -> list[tuple[str, str]]:
        """Layer 3: the judge's (verdict, reason) on each (training text, item) candidate."""
        reqs = [Request(messages=[{"role": "user", "content": JUDGE_PROMPT.format(item=self._items[k].text[:4000],
                                                                                   text=t[:4000])}],
                        sampling=self.config.sampling(temperature=0, max_tokens=96), tag="decontaminate")
                for t, k in pairs]
        out = []
        for res in self.backend().generate(reqs):
            if not res.ok:
                out.append(("unclear", f"judge failed: {res.error}"))
                continue
            text = res.text.strip()
            out.append((parse_verdict(text), " ".join(text.split())[:200]))
        return out

    def counters(self) -> dict[str, int]:
        out = {**super().counters(), **{k: v for k, v in self._counts.items() if v}}
        self._counts.clear()
        return out

    def process(self, batch: list[Record]) -> tuple[list[Record], list[tuple[Record, Drop]]]:
        self.setup()
        texts = [record_text(r, self.field) for r in batch]
        hits: list[list[dict]] = [[{"item": k, "layer": "ngram", "score": s} for k, s in self.coverage(t).items()]
                                  for t in texts]
        if self.semantic:
            sem_texts = texts if self.semantic_field == self.field else [record_text(r, self.semantic_field) for r in batch]
            for found, near in zip(hits, self.similar(sem_texts)):
                found += [{"item": k, "layer": "semantic", "score": s} for k, s in near.items()]
        if self.llm and any(hits):
            self._judge(texts, hits)
        kept, dropped = [], []
        for rec, found in zip(batch, hits):
            if not found:
                kept.append(rec)
                continue
            best: dict[int, float] = {}
            for h in found:
                best[h["item"]] = max(best.get(h["item"], 0.0), h["score"])
            found.sort(key=lambda h: (-best[h["item"]], h["item"], LAYERS.index(h["layer"])))
            rec.meta["contamination"] = [{"benchmark": self._items[h["item"]].benchmark, "item": self._items[h["item"]].name,
                                          "layer": h["layer"], "score": h["score"], **({"verdict": h["verdict"]} if "verdict" in h else {})}
                                         for h in found[:6]]
            if self.action == "flag":
                kept.append(rec)
                continue
            detail = ", ".join(f"{c['item']} ({c['layer']} {c['score']:.2f}" + (f": {c['verdict']}" if "verdict" in c else "") + ")"
                               for c in rec.meta["contamination"])
            dropped.append((rec, Drop("contaminated", "matches " + detail)))
        return kept, dropped

    def _judge(self, texts: list[str], hits: list[list[dict]]) -> None:
        """Layer 3 on every candidate pair: a yes (or an unclear answer) adds an `llm` hit; a no
        dismisses the semantic hit (n-gram coverage is lexical evidence, and it stays)."""
        pairs = [(j, k) for j, found in enumerate(hits) for k in dict.fromkeys(h["item"] for h in found)]
        verdicts = self.confirm([(texts[j], k) for j, k in pairs])
        for (j, k), (verdict, why) in zip(pairs, verdicts):
            self._counts[f"llm_{verdict}"] += 1
            if verdict == "no":
                hits[j][:] = [h for h in hits[j] if not (h["item"] == k and h["layer"] == "semantic")]
                for h in hits[j]:
                    if h["item"] == k:
                        h["verdict"] = f"llm no: {why}"
            else:
                hits[j].append({"item": k, "layer": "llm", "score": 1.0 if verdict == "yes" else 0.5,
                                "verdict": f"{verdict}: {why}"})
