"""What the report counts of the kept records (response lengths, scores, languages, kinds,
flags), per shard, summed across shards by the writer.

A segment whose only successor is the last, apply-only one (a global op's drops, nothing else)
saves these fields as columns beside its records, so the last segment counts the kept ones from
the columns and copies kept lines without parsing them again."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

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


class Hist:
    """Fixed-bin histograms of lengths and scores of the kept records, summed across shards for the report."""

    LEN_BINS = [0, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 10**9]
    UNIT_BINS = [i / 20 for i in range(21)]

    def __init__(self) -> None:
        self.len_resp: list[Any] = []  # ints, or whole arrays from columns
        self.scores: dict[str, list[Any]] = {}
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

    def add_columns(self, cols: "HistColumns", keep: np.ndarray) -> None:
        """The records of `cols` where `keep` is true, counted as `add` would count them one by
        one in order (first appearances, which order the report's keys, included)."""
        codes = cols.codes[keep]
        self.len_resp.append(cols.lengths[keep])
        uniq, first, counts = np.unique(codes, return_index=True, return_counts=True)
        for c in np.argsort(first, kind="stable").tolist():
            kind, lang, flags, names = cols.table[int(uniq[c])]
            n = int(counts[c])
            self.langs[lang] += n
            self.kinds[kind] += n
            for f in flags:
                self.flags[f] += n
            for k in names:
                if k not in self.scores:
                    v = cols.scores[k][keep]
                    self.scores[k] = [v[~np.isnan(v)]]

    def as_dict(self) -> dict:
        lengths = np.concatenate([np.atleast_1d(np.asarray(x, dtype=np.int64)) for x in self.len_resp]) if self.len_resp else np.empty(0)
        hist = {"length": np.histogram(lengths, bins=self.LEN_BINS)[0].tolist()}
        for k, vals in self.scores.items():
            a = np.concatenate([np.atleast_1d(np.asarray(x, dtype=np.float64)) for x in vals])
            bins = self.LEN_BINS if k.startswith("tokens.") or a.max(initial=0) > 1 or a.min(initial=0) < 0 else self.UNIT_BINS
            hist[f"score:{k}"] = {"bins": bins, "counts": np.histogram(a, bins=bins)[0].tolist()}
        return {"hist": hist, "langs": dict(self.langs), "flags": dict(self.flags), "kinds": dict(self.kinds)}


class HistColumns:
    """The report's fields of a shard's records as columns: response lengths, a code per record
    into a table of distinct (kind, language, flags, names of its finite scores), and each score
    (NaN where a record has none)."""

    def __init__(self) -> None:
        self.lengths_list: list[int] = []
        self.codes_list: list[int] = []
        self.table: list[tuple[str, Any, tuple, tuple]] = []  # (kind, language, flags, names of its scores)
        self._code: dict[tuple, int] = {}
        self.scores_list: dict[str, list[float]] = {}
        self.n = 0

    def add(self, d: dict) -> None:
        length, kind, lang, flags, scores = record_fields(d)
        self.lengths_list.append(length)
        key = (kind, lang, tuple(flags), tuple(k for k, _ in scores))
        code = self._code.get(key)
        if code is None:
            code = self._code[key] = len(self.table)
            self.table.append(key)
        self.codes_list.append(code)
        for k, v in scores:
            col = self.scores_list.get(k)
            if col is None:
                col = self.scores_list[k] = [math.nan] * self.n
            col.append(v)
        self.n += 1
        for col in self.scores_list.values():
            if len(col) < self.n:
                col.append(math.nan)

    def save(self, path: Path) -> None:
        arrays = {"lengths": np.asarray(self.lengths_list, dtype=np.int64), "codes": np.asarray(self.codes_list, dtype=np.int32)}
        names = list(self.scores_list)
        for i, k in enumerate(names):
            arrays[f"s{i}"] = np.asarray(self.scores_list[k], dtype=np.float64)
        save_bundle(path, arrays, {"table": [list(t) for t in self.table], "scores": names})

    @classmethod
    def load(cls, path: Path) -> "HistColumns":
        arrays, meta = load_bundle(path)
        cols = cls()
        cols.lengths, cols.codes = arrays["lengths"], arrays["codes"]
        cols.table = [(kind, lang, tuple(flags), tuple(names)) for kind, lang, flags, names in meta["table"]]
        cols.scores = {k: arrays[f"s{i}"] for i, k in enumerate(meta["scores"])}
        cols.n = len(cols.lengths)
        return cols
