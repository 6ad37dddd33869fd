"""Each format's reader and writer on small hand-made rows, including the awkward variants."""
from __future__ import annotations

import json

import orjson
import pytest

from ptdata import ReadOptions, convert, read_records
from ptdata.errors import RecordError
from ptdata.formats import FORMATS, guess_format
from ptdata.records import Record

from .conftest import write_jsonl


def read(fmt: str, row: dict, **opts) -> Record:
    return FORMATS[fmt].read(row, opts)


def write(fmt: str, rec: Record, **opts) -> list[dict]:
    return FORMATS[fmt].write(rec, opts)


def test_alpaca_system_history_input():
    row = {"instruction": "Translate", "input": "chat", "output": "cat", "system": "Be brief.", "history": [["q1", "a1"]]}
    rec = read("alpaca", row)
    assert rec.kind == "sft"
    assert rec.messages == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "Translate\nchat"}, {"role": "assistant", "content": "cat"}]
    assert write("alpaca", rec) == [{"instruction": "Translate\nchat", "input": "", "output": "cat", "system": "Be brief.", "history": [["q1", "a1"]]}]


def test_alpaca_ranking_kto_and_prompt_only():
    pref = read("alpaca", {"instruction": "2+2?", "input": "", "chosen": "4", "rejected": "5"})
    assert pref.kind == "preference" and pref.chosen == [{"role": "assistant", "content": "4"}]
    assert write("alpaca", pref) == [{"instruction": "2+2?", "input": "", "chosen": "4", "rejected": "5"}]
    kto = read("alpaca", {"instruction": "2+2?", "input": "", "output": "5", "kto_tag": False})
    assert kto.kind == "preference" and kto.rejected[0]["content"] == "5" and kto.chosen == [] and kto.meta["label"] is False
    assert write("alpaca", kto) == [{"instruction": "2+2?", "input": "", "output": "5", "kto_tag": False}]
    prompt = read("alpaca", {"instruction": "Write a haiku.", "input": ""})
    assert prompt.kind == "prompt" and write("alpaca", prompt) == [{"instruction": "Write a haiku.", "input": ""}]


def test_sharegpt_function_call_observation_tools_roundtrip():
    tools = json.dumps([{"name": "get_weather", "parameters": {"type": "object"}}])
    row = {"conversations": [
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
        {"from": "observation", "value": '{"temp": 20}'},
        {"from": "gpt", "value": "20 degrees."}], "system": "You are helpful.", "tools": tools}
    rec = read("sharegpt", row)
    assert [m["role"] for m in rec.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert rec.messages[2]["tool_calls"] == [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert rec.meta["tools"] == json.loads(tools)
    (back,) = write("sharegpt", rec)
    assert back["conversations"][0] == {"from": "system", "value": "You are helpful."}
    assert back["conversations"][2] == {"from": "function_call", "value": '{"name":"get_weather","arguments":{"city":"Paris"}}'}
    assert json.loads(back["tools"]) == json.loads(tools)
    assert read("sharegpt", back).id == rec.id
    # and to OpenAI: arguments become a JSON string, a call id is assigned
    (oa,) = write("openai", rec)
    assert oa["messages"][2]["tool_calls"][0]["function"]["arguments"] == '{"city":"Paris"}'
    assert oa["tools"] == json.loads(tools)
    assert read("openai", oa).id == rec.id


def test_sharegpt_dpo_variant_and_custom_tags(tmp_path):
    row = {"conv": [{"speaker": "usr", "text": "Hi"}], "good": {"speaker": "bot", "text": "Hello!"}, "bad": {"speaker": "bot", "text": "Go away."}}
    info = {"mine": {"file_name": "d.jsonl", "formatting": "sharegpt", "ranking": True,
                     "columns": {"messages": "conv", "chosen": "good", "rejected": "bad"},
                     "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "usr", "assistant_tag": "bot"}}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    write_jsonl(tmp_path / "d.jsonl", [row])
    # picked up automatically from the dataset_info.json beside the file
    (rec, bad), = list(read_records(tmp_path / "d.jsonl"))
    assert bad is None and rec.kind == "preference"
    assert rec.messages == [{"role": "user", "content": "Hi"}] and rec.chosen[0]["content"] == "Hello!"
    assert write("sharegpt", rec) == [{"conversations": [{"from": "human", "value": "Hi"}],
                                       "chosen": {"from": "gpt", "value": "Hello!"}, "rejected": {"from": "gpt", "value": "Go away."}}]


def test_alpaca_dataset_info_columns(tmp_path):
    info = {"x": {"file_name": "q.jsonl", "columns": {"prompt": "question", "query": "ctx", "response": "reply"}}}
    info_path = tmp_path / "info.json"
    info_path.write_text(json.dumps(info))
    write_jsonl(tmp_path / "q.jsonl", [{"question": "Sum?", "ctx": "1 2", "reply": "3"}])
    (rec, _), = list(read_records(tmp_path / "q.jsonl", ReadOptions(dataset_info=str(info_path), dataset="x")))
    assert rec.messages == [{"role": "user", "content": "Sum?\n1 2"}, {"role": "assistant", "content": "3"}]


def test_openai_weight_tools_and_preference():
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "draft", "weight": 0},
                        {"role": "user", "content": "Again"}, {"role": "assistant", "content": "Hello!", "weight": 1}],
           "parallel_tool_calls": False}
    rec = read("openai", row)
    assert rec.messages[1]["weight"] == 0 and rec.meta["parallel_tool_calls"] is False
    assert write("openai", rec) == [row]
    with pytest.raises(RecordError) as e:
        write("sharegpt", rec)
    assert e.value.reason == "not_representable" and "weight 0" in e.value.detail
    pref = {"input": {"messages": [{"role": "user", "content": "2+2?"}]},
            "preferred_output": [{"role": "assistant", "content": "4"}], "non_preferred_output": [{"role": "assistant", "content": "5"}]}
    prec = read("openai-pref", pref)
    assert prec.kind == "preference" and write("openai-pref", prec) == [pref]
    with pytest.raises(RecordError, match="openai-pref"):
        write("openai", prec)


def test_openai_content_parts_and_bad_roles():
    with pytest.raises(RecordError) as e:
        read("openai", {"messages": [{"role": "wizard", "content": "x"}]})
    assert e.value.reason == "unknown_role"
    with pytest.raises(RecordError) as e:
        read("openai", {"messages": [{"role": "user", "content": 5}]})
    assert e.value.reason == "wrong_type"


CONV_P = [{"role": "user", "content": "2+2?"}]
CH = [{"role": "assistant", "content": "4"}]
RJ = [{"role": "assistant", "content": "5"}]


@pytest.mark.parametrize("row,kind", [
    ({"prompt": "2+2="}, "prompt"),
    ({"prompt": CONV_P}, "prompt"),
    ({"prompt": "2+2=", "completion": " 4"}, "sft"),
    ({"prompt": CONV_P, "completion": CH}, "sft"),
    ({"prompt": "2+2=", "chosen": " 4", "rejected": " 5"}, "preference"),
    ({"prompt": CONV_P, "chosen": CH, "rejected": RJ}, "preference"),
    ({"chosen": "2+2= 4", "rejected": "2+2= 5"}, "preference"),
    ({"chosen": CONV_P + CH, "rejected": CONV_P + RJ}, "preference"),
    ({"prompt": "2+2=", "completion": " 5", "label": False}, "preference"),
    ({"prompt": CONV_P, "completion": CH, "label": True}, "preference"),
])
def test_trl_every_type_reads_and_writes_back(row, kind):
    assert guess_format(row) == "trl"
    rec = read("trl", row)
    assert rec.kind == kind
    standard = isinstance(next(iter(row.values())), str)
    opts = {"style": "standard" if standard else "conversational"}
    if kind == "sft":
        opts["sft"] = "prompt-completion"
    if "chosen" in row and "prompt" not in row:
        opts["preference"] = "implicit"
    assert write("trl", rec, **opts) == [row]


def test_trl_implicit_standard_prompt_rule():
    rec = read("trl", {"chosen": "2+2= 4", "rejected": "2+2= 5"})
    assert rec.messages[0]["content"] == "2+2=" and rec.chosen[0]["content"] == " 4"


def test_trl_unpaired_writer_splits_a_pair():
    rec = read("trl", {"prompt": CONV_P, "chosen": CH, "rejected": RJ})
    assert write("trl", rec, preference="unpaired") == [
        {"prompt": CONV_P, "completion": CH, "label": True}, {"prompt": CONV_P, "completion": RJ, "label": False}]


def test_qa_field_mapping_and_reference():
    rec = read("qa", {"problem": "1+1?", "solution": "It is 2.\n#### 2"}, fields={"question": "problem", "answer": "solution"})
    assert rec.meta["reference"] == "2" and rec.messages[1]["content"] == "It is 2.\n#### 2"


def test_native_roundtrip_all_kinds_jsonl_and_parquet(tmp_path):
    recs = [
        Record("sft", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello", "weight": 1}], scores={"q": 0.5}, meta={"tags": ["a"]}),
        Record("preference", CONV_P, CH, RJ, scores={"margin": 1.0}),
        Record("prompt", [{"role": "user", "content": "你好"}]),
        Record("sft", [{"role": "user", "content": "Mul"}, {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "mul", "arguments": {"a": 2}}}]},
            {"role": "tool", "content": "4", "tool_call_id": "c1"}, {"role": "assistant", "content": "4"}], meta={"tools": [{"name": "mul"}]}),
    ]
    src = write_jsonl(tmp_path / "r.jsonl", [r.to_dict() for r in recs])
    for ext in ("jsonl", "json", "parquet", "jsonl.gz", "parquet.gz"):
        out = tmp_path / f"copy.{ext}"
        c = convert(src, out, "ptdata")
        assert c.kept == 4, ext
        back = [r for r, _ in read_records(out)]
        assert [r.to_dict() for r in back] == [r.to_dict() | {"meta": {**r.meta, "source": f"{src}:{i + 1}"}} for i, r in enumerate(recs)], ext  # the path as given


def test_ids_are_format_independent_and_content_sensitive():
    a = read("alpaca", {"instruction": "Hi ", "input": "", "output": "Hello"})
    b = read("sharegpt", {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": " Hello"}]})
    c = read("openai", {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]})
    assert a.id == b.id != c.id
    assert len(a.id) == 32


def test_write_dataset_info_for_llamafactory(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", [{"prompt": CONV_P, "chosen": CH, "rejected": RJ}])
    convert(src, tmp_path / "lf" / "prefs.json", "sharegpt", write_dataset_info=True)
    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())
    assert info["prefs"]["ranking"] is True and info["prefs"]["formatting"] == "sharegpt" and info["prefs"]["file_name"] == "prefs.json"
    # LLaMA-Factory's description reads back through our own dataset_info support
    (rec, _), = list(read_records(tmp_path / "lf" / "prefs.json"))
    assert rec.chosen == CH


def test_write_reject_names_the_line_of_this_file(tmp_path):
    """Records already carrying meta.source from an earlier file are rejected at their line here."""
    recs = [Record("sft", [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
                   meta={"source": "older.jsonl:99"}).to_dict() for i in range(3)]
    src = write_jsonl(tmp_path / "recs.jsonl", recs)
    c = convert(src, tmp_path / "out.hh.jsonl", "hh")  # HH holds only preference pairs
    assert c.reasons == {"not_representable": 3}
    rejects = [orjson.loads(l) for l in (tmp_path / "out.hh.rejects.jsonl").read_bytes().splitlines()]
    assert [(r["source"], r["line"], r["op"]) for r in rejects] == [(str(src), i, "write") for i in (1, 2, 3)]
