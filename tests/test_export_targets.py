"""`ptdata export --to TARGET` and the one-type files of `ptdata convert`: each target takes the kinds
its trainer trains on (the rest are wrong_kind rejects), groups write one file per kind, LLaMA-Factory
entries merge into dataset_info.json, and a Parquet file has the columns of its one row type."""
from __future__ import annotations

import json

import orjson
import pyarrow.parquet as pq

from .conftest import load_jsonl, run_cli, write_jsonl

U = {"role": "user", "content": "What is 2+2?"}
A = {"role": "assistant", "content": "4"}
B = {"role": "assistant", "content": "5"}


def sft(i: int, **meta) -> dict:
    return {"kind": "sft", "messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}],
            "meta": meta}


def pair(i: int) -> dict:
    return {"kind": "preference", "messages": [{"role": "user", "content": f"pick {i}"}],
            "chosen": [{"role": "assistant", "content": f"good {i}"}], "rejected": [{"role": "assistant", "content": f"bad {i}"}],
            "meta": {}}


def unpaired(i: int, label: bool) -> dict:
    side = [{"role": "assistant", "content": f"rated {i}"}]
    return {"kind": "preference", "messages": [{"role": "user", "content": f"rate {i}"}], "chosen": side if label else [],
            "rejected": [] if label else side, "meta": {"label": label}}


def prompt(i: int) -> dict:
    return {"kind": "prompt", "messages": [{"role": "user", "content": f"open question {i}"}], "meta": {}}


def mixed(tmp_path):
    rows = [sft(0), pair(0), sft(1), unpaired(0, True), prompt(0), pair(1), unpaired(1, False), sft(2)]
    return write_jsonl(tmp_path / "mixed.jsonl", rows)


def test_single_targets_count_and_name_the_other_kinds(tmp_path):
    src = mixed(tmp_path)
    r = run_cli("export", src, "-o", tmp_path / "o", "--to", "trl-dpo")
    assert r.returncode == 0, r.stderr
    assert "in 8 · written 2 · rejected 6 (wrong_kind 6)" in r.stderr
    assert "3 sft records not written: export them with --to trl-sft" in r.stderr
    assert "2 unpaired (KTO) records not written: export them with --to trl-kto" in r.stderr
    assert "1 prompt records not written: no export trains on unlabeled prompts" in r.stderr
    assert [set(x) for x in load_jsonl(tmp_path / "o" / "train.trl-dpo.jsonl")] == [{"prompt", "chosen", "rejected"}] * 2
    rejects = load_jsonl(tmp_path / "o" / "train.trl-dpo.rejects.jsonl")
    assert [(x["line"], x["op"], x["reason"]) for x in rejects] == [(n, "export", "wrong_kind") for n in (1, 3, 4, 5, 7, 8)]
    assert "export it with --to trl-sft" in rejects[0]["detail"] and "label them first" in rejects[3]["detail"]
    # KTO takes the unpaired records and unpairs the pairs
    r = run_cli("export", src, "-o", tmp_path / "o", "--to", "trl-kto")
    rows = load_jsonl(tmp_path / "o" / "train.trl-kto.jsonl")
    assert r.returncode == 0 and len(rows) == 2 * 2 + 2 and [x["label"] for x in rows] == [True, False, True, True, False, False]
    assert "trl-kto: 4 unpaired (KTO) and preference records as 6 rows" in r.stderr


def test_nothing_of_the_kind_exits_4_and_writes_no_training_file(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [sft(0), sft(1)])
    r = run_cli("export", src, "-o", tmp_path / "o", "--to", "openai-pref")
    assert r.returncode == 4, r.stderr
    assert not (tmp_path / "o" / "train.openai-pref.jsonl").exists()
    assert [x["reason"] for x in load_jsonl(tmp_path / "o" / "train.openai-pref.rejects.jsonl")] == ["wrong_kind"] * 2
    assert "Traceback" not in r.stderr


def test_groups_write_one_file_per_kind_and_account_every_record(tmp_path):
    src = mixed(tmp_path)
    r = run_cli("export", src, "-o", tmp_path / "o", "--to", "trl")
    assert r.returncode == 0, r.stderr
    assert "in 8 · written 7 · rejected 1 (wrong_kind 1)" in r.stderr  # the prompt: no trainer takes it
    assert len(load_jsonl(tmp_path / "o" / "train.trl-sft.jsonl")) == 3
    assert len(load_jsonl(tmp_path / "o" / "train.trl-dpo.jsonl")) == 2
    assert len(load_jsonl(tmp_path / "o" / "train.trl-kto.jsonl")) == 6
    # two inputs go into one file per target
    other = write_jsonl(tmp_path / "more.jsonl", [sft(9)])
    r = run_cli("export", src, other, "-o", tmp_path / "two", "--to", "llamafactory")
    assert r.returncode == 0, r.stderr
    assert [len(json.loads((tmp_path / "two" / f"train.llamafactory-{k}.json").read_text())) for k in ("sft", "ranking", "kto")] == [4, 2, 2]
    rejects = load_jsonl(tmp_path / "two" / "train.llamafactory.rejects.jsonl")
    assert [(x["source"].rsplit("/", 1)[1], x["line"], x["reason"]) for x in rejects] == [("mixed.jsonl", 5, "wrong_kind")]


def test_llamafactory_entries_merge_into_dataset_info(tmp_path):
    src = mixed(tmp_path)
    out = tmp_path / "o"
    out.mkdir()
    theirs = {"alpaca_en_demo": {"file_name": "alpaca_en_demo.json"}, "train": {"file_name": "old.json"}}
    (out / "dataset_info.json").write_text(json.dumps(theirs))
    for _ in range(2):  # idempotent
        r = run_cli("export", src, "-o", out, "--to", "llamafactory")
        assert r.returncode == 0, r.stderr
    info = json.loads((out / "dataset_info.json").read_text())
    assert {k: info[k] for k in theirs} == theirs
    tags = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
            "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
    assert info["train.llamafactory-sft"] == {"file_name": "train.llamafactory-sft.json", "formatting": "sharegpt",
                                              "columns": {"messages": "conversations"}, "tags": tags}
    assert info["train.llamafactory-ranking"] == {"file_name": "train.llamafactory-ranking.json", "formatting": "sharegpt",
                                                  "ranking": True, "columns": {"messages": "conversations", "chosen": "chosen",
                                                                               "rejected": "rejected"}, "tags": tags}
    assert info["train.llamafactory-kto"] == {"file_name": "train.llamafactory-kto.json", "formatting": "sharegpt",
                                              "columns": {"messages": "conversations", "kto_tag": "kto_tag"}, "tags": tags}
    # the files read back through the entries
    from ptdata.reader import read_records

    back = [r for r, _ in read_records(out / "train.llamafactory-kto.json")]
    assert [r.meta["label"] for r in back] == [True, False]
    # a dataset_info.json that is not JSON is refused before anything is written
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "dataset_info.json").write_text("{not json")
    r = run_cli("export", src, "-o", bad, "--to", "llamafactory")
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert sorted(p.name for p in bad.iterdir()) == ["dataset_info.json"]
    r = run_cli("convert", src, tmp_path / "x.json.gz", "--to", "sharegpt", "--write-dataset-info")
    assert r.returncode == 1 and "gzip" in r.stderr


def test_convert_with_dataset_info_writes_one_type(tmp_path):
    src = mixed(tmp_path)
    r = run_cli("convert", src, tmp_path / "lf" / "data.json", "--to", "alpaca", "--write-dataset-info", "-q")
    assert r.returncode == 0, r.stderr
    assert len(json.loads((tmp_path / "lf" / "data.json").read_text())) == 3  # the first record's type: sft
    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())
    assert info == {"data": {"file_name": "data.json", "columns": {"prompt": "instruction", "query": "input", "response": "output"}}}
    rejects = load_jsonl(tmp_path / "lf" / "data.rejects.jsonl")
    assert [x["reason"] for x in rejects] == ["wrong_kind"] * 5
    assert "--to llamafactory-ranking" in rejects[0]["detail"] and "unlabeled prompt" in rejects[2]["detail"]


def test_parquet_has_the_columns_of_its_row_type_and_widens_for_late_tools(tmp_path):
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}]
    rows = [sft(i) for i in range(4100)] + [sft(4100, tools=tools)]  # past the first 4096-row batch
    src = write_jsonl(tmp_path / "s.jsonl", rows)
    r = run_cli("convert", src, tmp_path / "s.parquet", "--to", "trl", "-q")
    assert r.returncode == 0, r.stderr
    t = pq.read_table(tmp_path / "s.parquet")
    assert t.schema.names == ["messages", "tools"] and t.num_rows == 4101
    col = t.column("tools").to_pylist()
    assert col[:4100] == [None] * 4100 and json.loads(col[4100]) == tools
    assert t.column("messages").to_pylist()[7][1]["content"] == "answer 7"
    # without tools there is no tools column; pairs have their own columns; a mixed file keeps the first type
    write_jsonl(tmp_path / "p.jsonl", [pair(0), pair(1), sft(0)])
    r = run_cli("convert", tmp_path / "p.jsonl", tmp_path / "p.parquet", "--to", "trl", "-q")
    assert r.returncode == 0, r.stderr
    assert pq.read_schema(tmp_path / "p.parquet").names == ["prompt", "chosen", "rejected"]
    assert [x["reason"] for x in load_jsonl(tmp_path / "p.rejects.jsonl")] == ["wrong_kind"]
    r = run_cli("convert", tmp_path / "p.jsonl", tmp_path / "a.parquet", "--to", "alpaca", "-q")
    assert pq.read_schema(tmp_path / "a.parquet").names == ["instruction", "input", "chosen", "rejected"]
    # chat_template_kwargs has no Parquet column TRL can read: refused, not dropped
    write_jsonl(tmp_path / "k.jsonl", [{"messages": [U, A], "chat_template_kwargs": {"enable_thinking": False}}, {"messages": [U, B]}])
    r = run_cli("convert", tmp_path / "k.jsonl", tmp_path / "k.parquet", "--to", "trl", "--from", "trl", "-q")
    assert r.returncode == 0, r.stderr
    assert pq.read_metadata(tmp_path / "k.parquet").num_rows == 1
    (rej,) = load_jsonl(tmp_path / "k.rejects.jsonl")
    assert rej["reason"] == "not_representable" and "chat_template_kwargs" in rej["detail"]
    assert orjson.loads((tmp_path / "k.jsonl").read_bytes().splitlines()[0])["chat_template_kwargs"]  # input untouched


def test_bad_export_arguments_are_one_error_line(tmp_path):
    src = mixed(tmp_path)
    (tmp_path / "afile").write_text("x")
    for args in (["-o", tmp_path / "afile", "--to", "trl-sft"], ["-o", tmp_path / "o", "--to", "trl-sft", "--pack", "8"],
                 ["-o", tmp_path / "o", "--to", "nope"], ["-o", tmp_path / "o", "--to", "trl-sft", "--tokenizer", "qwen"]):
        r = run_cli("export", src, *args)
        assert r.returncode == 1, (args, r.stderr)
        assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()
