"""What the report counts of the kept records (response lengths, scores, languages, kinds,
flags), per shard, summed across shards by the writer.

A segment whose only successor is the last, apply-only one (a global op's drops, nothing else)
saves these fields as columns beside its records, so the last segment counts the kept ones from
the columns and copies kept lines without parsing them again."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .shards import load_bundle, save_bundle

PII_FLAG = "pii:"  # a flag-channel entry counting one redaction of that type


def response_len(d: dict) -> int:
    if d["kind"] == "sft":
        return len(d["messages"][-1]["content"])
    if d["kind"] == "preference":
        return sum(len(m["content"]) for m in (d.get("chosen") or d.get("rejected") or []) if m["role"] == "assistant")
    return len(d["messages"][-1]["content"]) if d["messages"] else 0


def record_fields(d: dict) -> tuple[int, str, Any, Any, list[tuple[str, float]]]:
    """What the report counts of a record: response length, kind, language, flags and the
    scores that are finite numbers (a record about to be written may hold a NaN, which JSON
    writes as null, so it is not counted either way)."""
    meta = d["meta"]
    scores = [(k, float(v)) for k, v in d["scores"].items() if isinstance(v, (int, float)) and (isinstance(v, int) or math.isfinite(v))]
    flags = meta.get("flags", ())
    pii = meta.get("pii")
    if pii:  # redactions travel with the flags (one entry each) and are split out in the merged stats
        flags = [*flags, *(f"{PII_FLAG}{t}" for t, n in pii.items() for _ in range(int(n)))]
    return response_len(d), d["kind"], meta.get("lang", "?"), flags, scores


class Columns(NamedTuple):
    """A shard's saved report fields (HistColumns.load): what Hist.add_columns counts from."""

    lengths: np.ndarray
    codes: np.ndarray
    table: list[tuple[str, Any, tuple, tuple]]
    scores: dict[str, np.ndarray]


class Hist:
    """Fixed-bin histograms of lengths and scores of the kept records, summed across shards for the report."""

    LEN_BINS = [0, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 10**9]
    UNIT_BINS = [i / 20 for i in range(21)]

    def __init__(self) -> None:
        self.len_resp: list[int] = []
        self.scores: dict[str, list[float]] = {}
        self.langs: Counter = Counter()
        self.flags: Counter = Counter()
        self.kinds: Counter = Counter()

    def add(self, d: dict) -> None:
        length, kind, lang, flags, scores = record_fields(d)
        self.len_resp.append(length)
        for k, v in scores:
            self.scores.setdefault(k, []).append(v)
        self.langs[lang] += 1
        self.kinds[kind] += 1
        for f in flags:
            self.flags[f] += 1

    def add_columns(self, cols: Columns, keep: np.ndarray) -> None:
        """The records of `cols` where `keep` is true, counted as `add` would count them one by
        one in order (first appearances, which order the report's keys, included)."""
        self.len_resp.extend(cols.lengths[keep].tolist())
        uniq, first, counts = np.unique(cols.codes[keep], return_index=True, return_counts=True)
        done: set[str] = set()
        for c in np.argsort(first, kind="stable").tolist():
            kind, lang, flags, names = cols.table[int(uniq[c])]
            n = int(counts[c])
            self.langs[lang] += n
            self.kinds[kind] += n
            for f in flags:
                self.flags[f] += n
            for k in names:
                if k not in done:
                    done.add(k)
                    v = cols.scores[k][keep]
                    self.scores.setdefault(k, []).extend(v[~np.isnan(v)].tolist())

    def as_dict(self) -> dict:
        hist = {"length": np.histogram(self.len_resp, bins=self.LEN_BINS)[0].tolist()}
        for k, vals in self.scores.items():
            a = np.asarray(vals)
            bins = self.LEN_BINS if k.startswith("tokens.") or a.max(initial=0) > 1 or a.min(initial=0) < 0 else self.UNIT_BINS
            hist[f"score:{k}"] = {"bins": bins, "counts": np.histogram(a, bins=bins)[0].tolist()}
        return {"hist": hist, "langs": dict(self.langs), "flags": dict(self.flags), "kinds": dict(self.kinds)}


class HistColumns:
    """The report's fields of a shard's records, gathered record by record and saved as columns:
    response lengths, a code per record into a table of distinct (kind, language, flags, names of
    its finite scores), and each score (NaN where a record has none)."""

    def __init__(self) -> None:
        self.lengths: list[int] = []
        self.codes: list[int] = []
        self.table: list[tuple[str, Any, tuple, tuple]] = []
        self._code: dict[tuple, int] = {}
        self.scores: dict[str, tuple[list[int], list[float]]] = {}  # name -> (record positions, values)

    def add(self, d: dict) -> None:
        length, kind, lang, flags, scores = record_fields(d)
        key = (kind, lang, tuple(flags), tuple(k for k, _ in scores))
        code = self._code.get(key)
        if code is None:
            code = self._code[key] = len(self.table)
            self.table.append(key)
        for k, v in scores:
            at, vals = self.scores.setdefault(k, ([], []))
            at.append(len(self.lengths))
            vals.append(v)
        self.lengths.append(length)
        self.codes.append(code)

    def save(self, path: Path) -> None:
        arrays = {"lengths": np.asarray(self.lengths, dtype=np.int64), "codes": np.asarray(self.codes, dtype=np.int32)}
        for i, (at, vals) in enumerate(self.scores.values()):
            col = np.full(len(self.lengths), np.nan)
            col[at] = vals
            arrays[f"s{i}"] = col
        save_bundle(path, arrays, {"table": [list(t) for t in self.table], "scores": list(self.scores)})

    @staticmethod
    def load(path: Path) -> Columns:
        arrays, meta = load_bundle(path)
        return Columns(arrays["lengths"], arrays["codes"],
                       [(kind, lang, tuple(flags), tuple(names)) for kind, lang, flags, names in meta["table"]],
                       {k: arrays[f"s{i}"] for i, k in enumerate(meta["scores"])})
