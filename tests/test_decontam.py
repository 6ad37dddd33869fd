"""Decontamination, layer 1 (n-gram coverage, short items by edit distance), the benchmark
inputs (ptdata formats, MMLU's headerless CSV), action flag and the per-benchmark report."""
from __future__ import annotations

import csv
import gzip
import random

import orjson
import pytest

from ptdata.errors import InputError
from ptdata.formats import FORMATS
from ptdata.ops.decontam import Decontaminate, read_benchmark, substring_edits
from ptdata.pipeline import Input, Output, Recipe, run

from .conftest import load_jsonl, shared, write_jsonl

MMLU = shared("decontam_dev/high_school_us_history_test.csv")


@pytest.fixture(scope="module")
def alpaca_rows() -> list[dict]:
    return [orjson.loads(x) for x in gzip.open(shared("alpaca_en_52k.jsonl.gz")).read().splitlines()]


def test_short_items_with_one_word_changed_are_found_without_generic_hits(alpaca_rows, tmp_path):
    """300 Alpaca instructions of 5-12 words and 200 longer ones as the benchmark, each planted back
    with one word replaced: all are found; of the 51,502 untouched records, the few flagged hold a
    benchmark item with at most one word edited (templated instructions such as "Fix the following
    sentence"), never a generic phrase alone ("Explain the concept of ..." is not enough)."""
    rng = random.Random(7)
    idx = list(range(len(alpaca_rows)))
    rng.shuffle(idx)
    short = [i for i in idx if 5 <= len(alpaca_rows[i]["instruction"].split()) <= 12][:300]
    longer = [i for i in idx if len(alpaca_rows[i]["instruction"].split()) > 12][:200]
    bench = write_jsonl(tmp_path / "bench.jsonl", [{"question": alpaca_rows[i]["instruction"], "answer": ""} for i in short + longer])
    op = Decontaminate(benchmarks=[str(bench)], field="prompt")
    planted = []
    for i in short + longer:
        w = alpaca_rows[i]["instruction"].split()
        w[rng.randrange(len(w))] = "banana"
        planted.append(FORMATS["alpaca"].read({**alpaca_rows[i], "instruction": " ".join(w)}, {}))
    kept, dropped = op.process(planted)
    assert kept == []
    for k, (rec, d) in enumerate(dropped):
        assert d.reason == "contaminated" and f"bench.jsonl#{k + 1} (ngram" in d.detail
    taken = set(short + longer)
    untouched = [FORMATS["alpaca"].read(r, {}) for k, r in enumerate(alpaca_rows) if k not in taken]
    _, flagged = op.process(untouched)
    assert len(flagged) <= 35  # 0.07% of 51,502
    from ptdata.ops.decontam import _hashes, _units

    items = {it.name: it for it in op._items}
    for rec, d in flagged:
        it = items[rec.meta["contamination"][0]["item"]]
        if it.short:  # the record holds the whole item with at most one word edited
            assert substring_edits(it.units, _hashes(_units(rec.messages[0]["content"])[0])) <= 1
        else:
            assert rec.meta["contamination"][0]["score"] >= 0.5
    generic = FORMATS["alpaca"].read({"instruction": "Explain the concept of artificial intelligence in simple terms.",
                                      "input": "", "output": "x"}, {})
    assert op.check(generic) is None


def test_gsm8k_test_against_untouched_alpaca_finds_nothing(alpaca_rows):
    op = Decontaminate(benchmarks=[str(shared("gsm8k_test.jsonl.gz"))])
    recs = [FORMATS["alpaca"].read(r, {}) for r in alpaca_rows]
    kept, dropped = op.process(recs)
    assert dropped == [] and len(kept) == len(recs)


def test_mmlu_csv_without_header_and_boilerplate_is_not_evidence():
    items = read_benchmark(str(MMLU))
    with open(MMLU, encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert len(items) == len(rows) == 204 and items[0] == (1, rows[0][0])
    op = Decontaminate(benchmarks=[str(MMLU)])
    op.setup()
    # "This question refers to the following information." opens most items: boilerplate, no evidence
    probe = FORMATS["alpaca"].read({"instruction": "This question refers to the following information. What is 2 + 2?",
                                    "input": "", "output": "4"}, {})
    assert op.check(probe) is None
    copied = FORMATS["alpaca"].read({"instruction": "Answer this: " + rows[5][0], "input": "", "output": "x"}, {})
    d = op.check(copied)
    assert d is not None and "high_school_us_history_test.csv#6 (ngram" in d.detail


def test_benchmark_entries_and_bad_values(tmp_path):
    src = write_jsonl(tmp_path / "b.jsonl", [{"problem": "Compute the number of primes below one hundred exactly.", "solution": "25"}])
    op = Decontaminate(benchmarks=[{"path": str(src), "format": "qa", "fields": {"question": "problem", "answer": "solution"},
                                    "name": "primes"}])
    rec = FORMATS["alpaca"].read({"instruction": "compute the number of primes below one hundred, exactly", "input": "", "output": "x"}, {})
    d = op.check(rec)
    assert d is not None and "primes#1" in d.detail
    with pytest.raises(InputError, match="unknown: colour"):
        Decontaminate(benchmarks=[{"path": str(src), "colour": "red"}])
    with pytest.raises(InputError, match="not found"):
        Decontaminate(benchmarks=[str(tmp_path / "nope.jsonl")]).setup()


def test_flag_keeps_everything_and_the_report_names_benchmark_item_layer_score(tmp_path):
    gsm = load_jsonl(shared("gsm8k_test.jsonl.gz"))[:50]
    rows = [{"instruction": f"Write a haiku about the number {i}.", "input": "", "output": "..."} for i in range(40)]
    rows += [{"instruction": r["question"], "input": "", "output": "step by step"} for r in gsm[:10]]
    src = write_jsonl(tmp_path / "train.jsonl", rows)
    bench = str(shared("gsm8k_test.jsonl.gz"))
    outs = {}
    for action in ("drop", "flag"):
        res = run(Recipe(inputs=[Input(str(src))], ops=[Decontaminate(benchmarks=[bench], action=action)],
                         output=Output(dir=str(tmp_path / action)), base_dir=tmp_path), workers=1)
        outs[action] = res
    drop, flag = outs["drop"], outs["flag"]
    assert (drop.kept, drop.rejected) == (40, 10) and (flag.kept, flag.rejected) == (50, 0)
    for res in (drop, flag):
        rep = res.stats["contamination"]
        assert rep["benchmarks"]["gsm8k_test.jsonl.gz"] == {"items": 1319, "found": 10, "by_layer": {"ngram": 10}}
        assert rep["records_by_layer"] == {"ngram": 10}
        assert sorted(rep["items"]) == sorted(f"gsm8k_test.jsonl.gz#{i}" for i in range(1, 11))
        assert all(h["layer"] == "ngram" and h["score"] == 1.0 for hits in rep["items"].values() for h in hits)
    flagged = [r for r in load_jsonl(flag.kept_path) if "contamination" in r["meta"]]
    assert len(flagged) == 10
    assert all(c["benchmark"] == "gsm8k_test.jsonl.gz" and c["layer"] == "ngram" and c["score"] == 1.0
               for r in flagged for c in r["meta"]["contamination"])
    rejects = load_jsonl(drop.rejects_path)
    assert all(r["reason"] == "contaminated" and "gsm8k_test.jsonl.gz#" in r["detail"] and "(ngram 1.00)" in r["detail"]
               for r in rejects)
    html = (tmp_path / "flag" / "report.html").read_text()
    assert "gsm8k_test.jsonl.gz" in html and "found by ngram" in html
