"""Round trips on the real public datasets in ../shared/data."""
from __future__ import annotations

import re

import orjson
import pytest

from ptdata import ReadOptions, convert, read_records
from ptdata.formats import FORMATS
from ptdata.records import normalize_text

from .conftest import load_jsonl, shared


def _user_turn(row: dict) -> str:
    return f"{row['instruction']}\n{row['input']}" if row["input"] else row["instruction"]


def test_alpaca_openai_sharegpt_alpaca_roundtrip(tmp_path, alpaca_rows):
    """All 52,002 records survive Alpaca -> OpenAI -> ShareGPT -> Alpaca with the same content."""
    ro = ReadOptions(validate=False)  # structure only: the defects are checked in the next test
    src = shared("alpaca_en_52k.jsonl.gz")
    c1 = convert(src, tmp_path / "a.openai.jsonl", "openai", ro)
    c2 = convert(tmp_path / "a.openai.jsonl", tmp_path / "a.sharegpt.parquet", "sharegpt", ro)
    c3 = convert(tmp_path / "a.sharegpt.parquet", tmp_path / "back.alpaca.json.gz", "alpaca", ro)
    for c in (c1, c2, c3):
        assert (c.records_in, c.kept, c.rejected) == (52_002, 52_002, 0)
    back = [r for r, _ in read_records(tmp_path / "back.alpaca.json.gz", ro)]
    orig = [r for r, _ in read_records(src, ro)]
    assert [r.id for r in back] == [r.id for r in orig]
    raw_back = list(_iter_json_array(tmp_path / "back.alpaca.json.gz"))
    assert len(raw_back) == 52_002
    for o, b in zip(alpaca_rows, raw_back):
        # the instruction/input split is not kept by chat formats; the user turn and answer are
        assert b["instruction"] == _user_turn(o) and b["input"] == "" and b["output"] == o["output"]


def _iter_json_array(path):
    import gzip

    with gzip.open(path, "rb") as f:
        yield from orjson.loads(f.read())


def test_alpaca_validation_counts_match_independent_count(tmp_path, alpaca_rows):
    """in = kept + rejected, and the rejects are exactly the empty and parroted answers."""
    empty = sum(1 for r in alpaca_rows if not r["output"].strip() or not _user_turn(r).strip())
    parrot = sum(1 for r in alpaca_rows if r["output"].strip() and normalize_text(r["output"]) == normalize_text(_user_turn(r)))
    c = convert(shared("alpaca_en_52k.jsonl.gz"), tmp_path / "o.jsonl", "openai")
    assert c.records_in == 52_002 == c.kept + c.rejected
    assert dict(c.reasons) == {"empty_turn": empty, "repeated_turn": parrot}
    rejects = load_jsonl(tmp_path / "o.rejects.jsonl")
    assert len(rejects) == c.rejected
    assert all(r["op"] == "validate" and r["source"].endswith("alpaca_en_52k.jsonl.gz") and r["line"] >= 1 for r in rejects)
    assert sum(1 for _ in open(tmp_path / "o.jsonl", "rb")) == c.kept


def render_hh(msgs: list[dict]) -> str:
    return "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in msgs)


def test_hh_to_trl_conversational_rebuilds_transcripts(tmp_path, hh_rows):
    """Every one of the 2,312 pairs: prompt + chosen and prompt + rejected rebuild the originals exactly."""
    c = convert(shared("hh_rlhf_harmless_test.jsonl.gz"), tmp_path / "hh.trl.jsonl", "trl", ReadOptions(validate=False))
    assert (c.records_in, c.kept, c.rejected) == (2312, 2312, 0)
    out = load_jsonl(tmp_path / "hh.trl.jsonl")
    for orig, row in zip(hh_rows, out, strict=True):
        assert set(row) == {"prompt", "chosen", "rejected"}
        assert row["prompt"][-1]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
        assert render_hh(row["prompt"] + row["chosen"]) == orig["chosen"]
        assert render_hh(row["prompt"] + row["rejected"]) == orig["rejected"]
    # and back to HH transcripts byte for byte
    convert(tmp_path / "hh.trl.jsonl", tmp_path / "hh.back.jsonl", "hh", ReadOptions(validate=False))
    assert load_jsonl(tmp_path / "hh.back.jsonl") == hh_rows


def test_hh_validation_rejects_real_defects(tmp_path, hh_rows):
    c = convert(shared("hh_rlhf_harmless_test.jsonl.gz"), tmp_path / "hh.jsonl", "trl")
    assert c.records_in == 2312 == c.kept + c.rejected
    # independent count of the structural defects in the transcripts
    turn = re.compile(r"\n\n(Human|Assistant): ?")
    bad = 0
    for r in hh_rows:
        for side in ("chosen", "rejected"):
            parts = turn.split(r[side])[1:]
            roles, texts = parts[0::2], parts[1::2]
            consecutive = any(a == b for a, b in zip(roles, roles[1:]))
            empty = any(not t.strip() for t in texts)
            repeated = any(normalize_text(a) == normalize_text(b) for a, b in zip(texts, texts[1:]))
            ends_user = roles[-1] == "Human"
            if consecutive or empty or repeated or ends_user:
                bad += 1
                break
    assert c.rejected == bad
    assert set(c.reasons) <= {"roles_out_of_order", "empty_turn", "repeated_turn", "bad_side"}


def test_gsm8k_keeps_final_answer(tmp_path):
    rows = load_jsonl(shared("gsm8k_train.jsonl.gz"))
    c = convert(shared("gsm8k_train.jsonl.gz"), tmp_path / "g.jsonl", "ptdata")
    assert (c.records_in, c.kept, c.fmt_in) == (7473, 7473, "qa")
    out = load_jsonl(tmp_path / "g.jsonl")
    for row, rec in zip(rows, out, strict=True):
        assert rec["messages"] == [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["answer"]}]
        assert "\n#### " in rec["messages"][1]["content"]
        assert rec["meta"]["reference"] == row["answer"].rsplit("#### ", 1)[1].strip()
    # and back to question/answer columns, renamed by --field
    c2 = convert(tmp_path / "g.jsonl", tmp_path / "g.parquet", "qa", write_opts={"fields": {"question": "problem", "answer": "solution"}})
    assert c2.kept == 7473
    import pyarrow.parquet as pq

    t = pq.read_table(tmp_path / "g.parquet").to_pylist()
    assert [r["solution"] for r in t] == [r["answer"] for r in rows]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_writer_handles_alpaca_sample(tmp_path, fmt):
    """Each writer either writes a record or rejects it as not_representable; nothing vanishes."""
    src = tmp_path / "sample.jsonl"
    with open(src, "wb") as f:
        for row in load_jsonl(shared("alpaca_en_52k.jsonl.gz"))[:500]:
            f.write(orjson.dumps(row) + b"\n")
    c = convert(src, tmp_path / f"out.{fmt}.jsonl", fmt)
    assert c.records_in == 500 == c.kept + c.rejected
    expected_unrepresentable = 500 - c.reasons.get("empty_turn", 0) - c.reasons.get("repeated_turn", 0) if fmt in ("hh", "openai-pref", "rated") else 0
    assert c.reasons.get("not_representable", 0) == expected_unrepresentable
