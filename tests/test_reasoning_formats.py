"""Reasoning traces, content parts, LLaMA-Factory v1, kto_tag / label without dataset_info,
unmapped fields in meta.extra and bare `#### N` answers (issue 15).

The v1 rows follow LLaMA-Factory's own data (hiyouga/LLaMA-Factory at ff6d4d1: data/v1_sft_demo.jsonl,
data/v1_dpo_demo.jsonl, data/reason_tool_use_demo_50.jsonl, data/v1_multimodal_demo.jsonl, and
what src/llamafactory/v1/plugins/data_plugins/converter.py writes: loss_weight 0.0/1.0, json.dumps
of tool calls and tools); the round trips at scale use the real datasets in ../shared/data.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
import xxhash

from ptdata import ReadOptions, convert, read_records
from ptdata.errors import RecordError
from ptdata.formats import FORMATS, guess_format
from ptdata.ops.pii import Pii
from ptdata.records import Record, normalize_text
from ptdata.validation import validate

from .conftest import ROOT, load_jsonl, shared, write_jsonl

NOVAL = ReadOptions(validate=False)
SYSTEM = ("You are a methodical and expert assistant. Your primary goal is to solve user requests by leveraging a set "
          "of available tools. You must reason for the best course of action in a structured manner before responding.")


def t(value: str) -> dict:
    return {"type": "text", "value": value}


def r(value: str) -> dict:
    return {"type": "reasoning", "value": value}


def call(name: str, **arguments) -> dict:
    return {"type": "tool_call", "value": json.dumps({"name": name, "arguments": arguments})}


def tools(*specs: dict) -> str:
    return json.dumps([{"type": "function", "function": s} for s in specs])


# data/v1_sft_demo.jsonl, rows 1-2 (verbatim)
V1_SFT = [
    {"messages": [{"role": "user", "content": [t("hi")], "loss_weight": 0.0},
                  {"role": "assistant", "content": [t("Hello! I am {{name}}, an AI assistant developed by {{author}}. How can I assist you today?")], "loss_weight": 1.0}]},
    {"messages": [{"role": "user", "content": [t("Who are you?")], "loss_weight": 0.0},
                  {"role": "assistant", "content": [t("I am {{name}}, an AI assistant developed by {{author}}. How can I assist you today?")], "loss_weight": 1.0}]},
]
_BAILEY_SYS = "You are an AI assistant that follows instruction extremely well. Help as much as you can."
_BAILEY = ("Answer the following question: Context: Bailey knew Taylor that well and got a few snacks for later tonight.  "
           "Question: How would you describe Bailey?  Which one of these answers best answers the question according to "
           "the context?  A: feeling proud  B: very hungry  C: feeling bored\nAnswer:")
# data/v1_dpo_demo.jsonl, row 2 (verbatim): the prompt is repeated in both conversations
V1_DPO = [{
    "chosen_messages": [{"role": "system", "content": [t(_BAILEY_SYS)], "loss_weight": 0.0},
                        {"role": "user", "content": [t(_BAILEY)], "loss_weight": 0.0},
                        {"role": "assistant", "content": [t("D: considerate")], "loss_weight": 1.0}],
    "rejected_messages": [{"role": "system", "content": [t(_BAILEY_SYS)], "loss_weight": 0.0},
                          {"role": "user", "content": [t(_BAILEY)], "loss_weight": 0.0},
                          {"role": "assistant", "content": [t(" Based on the context, the best answer to describe Bailey would be:\n\nC: feeling bored.\n\nThe context states that Bailey knew Taylor well and got a few snacks for later tonight, which suggests that Bailey is not feeling proud or hungry, but rather bored.")], "loss_weight": 1.0}],
}]
_REFUND_TOOLS = tools({"name": "track_refund_status", "description": "Track the status of a refund", "parameters": {
    "type": "dict", "properties": {"refund_transaction_id": {"type": "string", "description": "The unique identifier of the refund transaction"}},
    "required": ["refund_transaction_id"]}, "required": None})
_MOVIE_TOOLS = tools({"name": "get_movie_details", "description": "Get details of a movie", "parameters": {
    "type": "object", "properties": {"title": {"type": "string", "description": "The title of the movie"}}, "required": ["title"]}})
_PRODUCT_TOOLS = tools({"name": "get_products_in_category", "description": "Fetches products from a specific category using the Toolbench RapidAPI.",
                        "parameters": {"category": {"description": "The category from which to retrieve products.", "type": "str", "default": ""},
                                       "limit": {"description": "The maximum number of products to return.", "type": "int", "default": ""},
                                       "skip": {"description": "The number of products to skip in the results.", "type": "int", "default": ""}}})
# data/reason_tool_use_demo_50.jsonl: assistant parts reasoning + text / tool_call(s), tools as a JSON string, no loss_weight
V1_REASON_TOOLS = [
    {"messages": [  # row 29 (verbatim)
        {"role": "system", "content": [t(SYSTEM)]},
        {"role": "user", "content": [t("Can you track my recent refund?")]},
        {"role": "assistant", "content": [r("Okay, the user wants to track their recent refund. The available function is track_refund_status, which requires a refund_transaction_id. I need to figure out how to get that from the user. But the user hasn't provided any transaction ID. Maybe they forgot or didn't realize they needed to include it. I should ask them for the refund ID first so I can proceed with tracking."),
                                          t("I'm sorry, but I need the refund_transaction_id to track the status of your refund. Could you please provide me with the unique identifier for the refund you're inquiring about? Once you share that, I'll be able to check its status for you.")]}],
     "tools": _REFUND_TOOLS},
    {"messages": [  # the shape of row 2: a call, its result, the answer
        {"role": "system", "content": [t(SYSTEM)]},
        {"role": "user", "content": [t("Can you tell me about the movie \"Inception\"?")]},
        {"role": "assistant", "content": [r("Alright, the user wants information about the movie \"Inception\". I need to find the movie details using the get_movie_details function. Oh right, the title is the only required parameter."),
                                          call("get_movie_details", title="Inception")]},
        {"role": "tool", "content": [t(json.dumps([{"title": "Inception", "director": "Christopher Nolan", "release_year": 2010, "genre": "Science Fiction"}]))]},
        {"role": "assistant", "content": [r("The tool returned the details; I'll summarize them for the user."),
                                          t("\"Inception\" is a 2010 science fiction film directed by Christopher Nolan.")]}],
     "tools": _MOVIE_TOOLS},
    {"messages": [  # row 37's shape with "[]" tools (rows 36 and 48)
        {"role": "system", "content": [t(SYSTEM)]},
        {"role": "user", "content": [t("What is the capital of Australia?")]},
        {"role": "assistant", "content": [r("No tools are available, so I answer from what I know: Canberra."), t("The capital of Australia is Canberra.")]}],
     "tools": "[]"},
]
# Rows ending with the tool calls (rows 8, 9 and 18): LLaMA-Factory trains on them; ptdata's validation
# rejects an sft record that ends with a call (sft_not_ending_with_assistant), so they round-trip unvalidated.
V1_ENDS_WITH_CALLS = [
    {"messages": [  # row 9 (verbatim)
        {"role": "system", "content": [t(SYSTEM)]},
        {"role": "user", "content": [t("Retrieve 15 products from the 'Books' category starting from the 20th product.")]},
        {"role": "assistant", "content": [r("Okay, the user wants me to retrieve 15 products from the 'Books' category but starting from the 20th product. Let me think about how to use the get_products_in_category tool for this. The function has parameters: category, limit, and skip. The category is 'Books', limit is 15, and skip is 20. So I need to set skip to 20 and limit to 15. Let me check the parameters again to make sure. Yes, that's right. The function call should have category: 'Books', limit:15, skip:20."),
                                          call("get_products_in_category", category="Books", limit=15, skip=20)]}],
     "tools": _PRODUCT_TOOLS},
    {"messages": [
        {"role": "system", "content": [t(SYSTEM)]},
        {"role": "user", "content": [t("Get products 1-5 of 'Books' and of 'Games'.")]},
        {"role": "assistant", "content": [r("Two categories: two calls."), call("get_products_in_category", category="Books", limit=5, skip=0),
                                          call("get_products_in_category", category="Games", limit=5, skip=0)]}],
     "tools": _PRODUCT_TOOLS},
]
# data/v1_multimodal_demo.jsonl, rows 1-2 (verbatim): image parts before or after the text
V1_MULTIMODAL = [
    {"messages": [{"role": "user", "content": [{"type": "image_url", "value": "data/mllm_demo_data/1.jpg"}, t("Who are they?")]},
                  {"role": "assistant", "content": [t("They're Kane and Gretzka from Bayern Munich.")]},
                  {"role": "user", "content": [t("What are they doing?"), {"type": "image_url", "value": "data/mllm_demo_data/1.jpg"}]},
                  {"role": "assistant", "content": [t("They are celebrating on the soccer field.")]}]},
    {"messages": [{"role": "user", "content": [{"type": "image_url", "value": "data/mllm_demo_data/2.jpg"}, t("Who is he?")]},
                  {"role": "assistant", "content": [t("He's Thomas Muller from Bayern Munich.")]},
                  {"role": "user", "content": [t("Why is he on the ground?")]},
                  {"role": "assistant", "content": [t("Because he's sliding on his knees to celebrate.")]}]},
]
# What LLaMA-Factory's sharegpt_converter makes of a glaive tool-call row (function_call -> tool_call parts, loss_weight 1.0)
V1_FROM_SHAREGPT = [{"messages": [
    {"role": "user", "content": [t("Hi, I need to convert 500 USD to Euros. Can you help me with that?")], "loss_weight": 0.0},
    {"role": "assistant", "content": [call("convert_currency", amount=500, from_currency="USD", to_currency="EUR")], "loss_weight": 1.0},
    {"role": "tool", "content": [t('{"converted_amount": 420.5, "from_currency": "USD", "to_currency": "EUR"}')], "loss_weight": 0.0},
    {"role": "assistant", "content": [t("Sure, 500 USD is approximately 420.50 Euros.")], "loss_weight": 1.0}],
    "tools": tools({"name": "convert_currency", "description": "Convert currency from one to another", "parameters": {
        "type": "object", "properties": {"amount": {"type": "number"}, "from_currency": {"type": "string"}, "to_currency": {"type": "string"}},
        "required": ["amount", "from_currency", "to_currency"]}})}]
# Layouts LLaMA-Factory accepts that are not reasoning-text-calls: kept in the record's `parts`
V1_ODD_LAYOUTS = [{"messages": [
    {"role": "user", "content": [t("Part one, "), t("part two.")]},
    {"role": "assistant", "content": [t("Let me check. "), r("The user wrote two parts."), t("Both parts read."),
                                      call("lookup", q="parts")]},
    {"role": "tool", "content": [t("ok")]},
    {"role": "assistant", "content": [r("first thought; "), r("second thought"), t("Done.")], "loss_weight": 0.0},
    {"role": "user", "content": [t("And now?")]},
    {"role": "assistant", "content": [t("Now it is done.")], "loss_weight": 1.0}]}]

ALL_V1 = V1_SFT + V1_DPO + V1_REASON_TOOLS + V1_ENDS_WITH_CALLS + V1_MULTIMODAL + V1_FROM_SHAREGPT + V1_ODD_LAYOUTS


def dumps_rows(path: Path) -> list[bytes]:
    """Each row of a JSON/JSONL/Parquet file as canonical bytes (key order kept)."""
    if path.suffix == ".parquet":
        return [orjson.dumps(x) for x in pq.read_table(path).to_pylist()]
    return [orjson.dumps(x) for x in load_jsonl(path)]


def ptdata_bin() -> list[str]:
    exe = ROOT / ".venv" / "bin" / "ptdata"
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from ptdata.cli import main; main()"]


SUMMARY = re.compile(r"in ([\d,]+) · kept ([\d,]+) · rejected ([\d,]+)")


def cli(*args, cwd: Path) -> tuple[subprocess.CompletedProcess, tuple[int, int, int] | None]:
    """The real `ptdata` command; (result, (in, kept, rejected)) with in = kept + rejected checked."""
    res = subprocess.run([*ptdata_bin(), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600,
                         env={**os.environ, "COLUMNS": "200"})
    assert "Traceback" not in res.stderr, res.stderr
    m = SUMMARY.search(res.stderr)
    counts = tuple(int(x.replace(",", "")) for x in m.groups()) if m else None
    if counts:
        assert counts[0] == counts[1] + counts[2], res.stderr
    return res, counts


def v1_roundtrip(tmp_path: Path, rows: list[dict], ro: ReadOptions, via: str = "jsonl") -> list[bytes]:
    src = write_jsonl(tmp_path / "v1.jsonl", rows)
    mid = tmp_path / f"records.{via}"
    c1 = convert(src, mid, "ptdata", ro)
    c2 = convert(mid, tmp_path / "back.jsonl", "llamafactory-v1", ro)
    assert (c1.records_in, c1.kept, c2.kept) == (len(rows),) * 3, (c1.reasons, c2.reasons)
    assert c1.fmt_in == "llamafactory-v1"
    return dumps_rows(tmp_path / "back.jsonl")


# --- LLaMA-Factory v1 ---------------------------------------------------------------------------

@pytest.mark.parametrize("via", ["jsonl", "parquet"])
def test_v1_sft_dpo_reasoning_tools_media_roundtrip_byte_identical(tmp_path, via):
    """Every v1 shape -> ptdata (JSONL or Parquet) -> v1 gives the very same rows."""
    rows = ALL_V1
    assert all(guess_format(x) == "llamafactory-v1" for x in rows)
    assert v1_roundtrip(tmp_path, rows, NOVAL, via) == [orjson.dumps(x) for x in rows]
    if via == "parquet":  # and v1's own Parquet (its message structs) back to JSONL
        assert convert(tmp_path / "v1.jsonl", tmp_path / "v1.parquet", "llamafactory-v1", NOVAL).kept == len(rows)
        convert(tmp_path / "v1.parquet", tmp_path / "v1.back.jsonl", "llamafactory-v1", NOVAL)
        assert dumps_rows(tmp_path / "v1.back.jsonl") == [orjson.dumps(x) for x in rows]


def test_v1_records_hold_reasoning_tool_calls_weights_and_parts():
    read = FORMATS["llamafactory-v1"].read
    sft = read(V1_SFT[0], {})
    assert sft.kind == "sft" and sft.messages == [{"role": "user", "content": "hi", "weight": 0},
                                                   {"role": "assistant", "content": V1_SFT[0]["messages"][1]["content"][0]["value"], "weight": 1}]
    pair = read(V1_DPO[0], {})
    assert pair.kind == "preference" and [m["role"] for m in pair.messages] == ["system", "user"]
    assert pair.chosen == [{"role": "assistant", "content": "D: considerate", "weight": 1}] and len(pair.rejected) == 1
    tool = read(V1_REASON_TOOLS[1], {})
    a = tool.messages[2]
    assert a["content"] == "" and a["reasoning"].startswith("Alright") and "parts" not in a
    assert a["tool_calls"] == [{"type": "function", "function": {"name": "get_movie_details", "arguments": {"title": "Inception"}}}]
    assert tool.meta["tools"] == json.loads(_MOVIE_TOOLS)
    odd = read(V1_ODD_LAYOUTS[0], {})
    u, a = odd.messages[0], odd.messages[1]
    assert u["content"] == "Part one, part two." and u["parts"] == [{"type": "text", "chars": 10}, {"type": "text", "chars": 9}]
    assert a["content"] == "Let me check. Both parts read." and a["reasoning"] == "The user wrote two parts."
    assert [p["type"] for p in a["parts"]] == ["text", "reasoning", "text", "tool_call"]
    assert odd.messages[3]["reasoning"] == "first thought; second thought" and odd.messages[3]["weight"] == 0
    img = read(V1_MULTIMODAL[0], {})
    assert img.messages[0]["parts"] == [{"type": "image", "url": "data/mllm_demo_data/1.jpg"}, {"type": "text", "chars": 13}]


def test_v1_through_the_cli(tmp_path):
    """Auto-detected (SFT and DPO files alike, no --from), converted, and back identical; bad rows are rejects."""
    for name, rows in (("sft", V1_SFT + V1_REASON_TOOLS + V1_FROM_SHAREGPT), ("dpo", V1_DPO * 3)):
        write_jsonl(tmp_path / f"{name}.jsonl", rows)
        res, counts = cli("convert", f"{name}.jsonl", f"{name}.pt.jsonl", "--to", "ptdata", "-q", cwd=tmp_path)
        assert res.returncode == 0 and counts == (len(rows), len(rows), 0), res.stderr
        res, counts = cli("convert", f"{name}.pt.jsonl", f"{name}.back.jsonl", "--to", "llamafactory-v1", "-q", cwd=tmp_path)
        assert res.returncode == 0 and counts == (len(rows), len(rows), 0)
        assert dumps_rows(tmp_path / f"{name}.back.jsonl") == [orjson.dumps(x) for x in rows]
    # LLaMA-Factory's rows that end with the calls: rejected by ptdata's validation, with the reason, none lost
    write_jsonl(tmp_path / "calls.jsonl", V1_REASON_TOOLS + V1_ENDS_WITH_CALLS)
    res, counts = cli("convert", "calls.jsonl", "calls.openai.jsonl", "--to", "openai", "-q", cwd=tmp_path)
    assert res.returncode == 0 and counts == (5, 3, 2)
    assert {x["reason"] for x in load_jsonl(tmp_path / "calls.openai.rejects.jsonl")} == {"sft_not_ending_with_assistant"}
    # weights LLaMA-Factory uses but ptdata cannot hold, unknown parts, a string content: rejects, not a traceback
    bad = [V1_SFT[0],
           {"messages": [{"role": "user", "content": [t("hi")]}, {"role": "assistant", "content": [t("yo")], "loss_weight": 0.5}]},
           {"messages": [{"role": "user", "content": [{"type": "hologram", "value": "x"}]}, {"role": "assistant", "content": [t("?")]}]},
           {"messages": [{"role": "user", "content": [t("hi")]}, {"role": "assistant", "content": [{"type": "tool_call", "value": "{not json"}]}]},
           {"chosen_messages": [{"role": "user", "content": "hi"}], "rejected_messages": []}]
    write_jsonl(tmp_path / "bad.jsonl", bad)
    res, counts = cli("convert", "bad.jsonl", "bad.out.jsonl", "--to", "ptdata", "-q", cwd=tmp_path)
    assert res.returncode == 0 and counts == (5, 1, 4)
    reasons = [(x["line"], x["reason"]) for x in load_jsonl(tmp_path / "bad.out.rejects.jsonl")]
    assert reasons == [(2, "wrong_type"), (3, "wrong_type"), (4, "bad_tool_call"), (5, "wrong_type")]
    write_jsonl(tmp_path / "allbad.jsonl", bad[1:3])
    res, counts = cli("convert", "allbad.jsonl", "allbad.out.jsonl", "--to", "ptdata", "-q", cwd=tmp_path)
    assert res.returncode == 4 and counts == (2, 0, 2) and not (tmp_path / "allbad.out.jsonl").exists()


def test_v1_weights_to_other_formats():
    """loss_weight 0.0 on prompt turns (what LLaMA-Factory's converters write) does not block formats
    without weights; an untrained assistant turn does, and OpenAI gets weights on assistant turns only."""
    rec = FORMATS["llamafactory-v1"].read(V1_FROM_SHAREGPT[0], {})
    (sg,) = FORMATS["sharegpt"].write(rec, {})
    assert [x["from"] for x in sg["conversations"]] == ["human", "function_call", "observation", "gpt"]
    (oa,) = FORMATS["openai"].write(rec, {})
    assert [m.get("weight") for m in oa["messages"]] == [None, 1, None, 1]
    with pytest.raises(RecordError) as e:
        FORMATS["sharegpt"].write(FORMATS["llamafactory-v1"].read(V1_ODD_LAYOUTS[0], {}), {})
    assert e.value.reason == "not_representable"
    plain = next(iter(read_records_rows([{"instruction": "Name a color.", "input": "", "output": "Blue."}], "alpaca")))
    (v1,) = FORMATS["llamafactory-v1"].write(plain, {"loss_weight": "all"})
    assert v1 == {"messages": [{"role": "user", "content": [t("Name a color.")], "loss_weight": 0.0},
                               {"role": "assistant", "content": [t("Blue.")], "loss_weight": 1.0}]}
    (v1,) = FORMATS["llamafactory-v1"].write(plain, {})
    assert "loss_weight" not in v1["messages"][1]
    kto = FORMATS["alpaca"].read({"instruction": "2+2?", "input": "", "output": "5", "kto_tag": False}, {})
    with pytest.raises(RecordError, match="KTO"):
        FORMATS["llamafactory-v1"].write(kto, {})


def read_records_rows(rows: list[dict], fmt: str):
    for row in rows:
        yield FORMATS[fmt].read(row, {})


# --- reasoning --------------------------------------------------------------------------------------

THINK_ROWS = [  # OpenAI-style chat rows with the reasoning inline, as Qwen3 / DeepSeek-R1 write it
    {"messages": [{"role": "user", "content": "What is 17 * 23?"},
                  {"role": "assistant", "content": "<think>\n17 * 23 = 17 * 20 + 17 * 3 = 340 + 51 = 391.\n</think>\n\n17 * 23 = 391."}]},
    {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "<think>\n\n</think>\n\nHi!"}]},
    {"messages": [{"role": "system", "content": "Think step by step."}, {"role": "user", "content": "Is 91 prime?"},
                  {"role": "assistant", "content": "<think>\n91 = 7 * 13.\n</think>\n\nNo: 91 = 7 × 13."},
                  {"role": "user", "content": "And 97?"},
                  {"role": "assistant", "content": "<think>\nNot divisible by 2, 3, 5 or 7, and 11² > 97.\n</think>\n\nYes, 97 is prime."}]},
]


def _as(rows: list[dict], key: str) -> list[dict]:
    """THINK_ROWS with the reasoning split out under `key` (reasoning_content, thinking, ...)."""
    out = []
    for row in rows:
        msgs = []
        for m in row["messages"]:
            if m["role"] == "assistant":
                reasoning, _, content = m["content"].partition("\n</think>\n\n")
                m = {"role": "assistant", "content": content, key: reasoning.removeprefix("<think>\n")}
            msgs.append(m)
        out.append({"messages": msgs})
    return out


def test_think_inline_reasoning_content_and_v1_parts_are_one_record(tmp_path):
    """Inline <think> -> reasoning_content -> v1 reasoning parts -> inline again: identical, and the
    same record (same id) from each."""
    src = write_jsonl(tmp_path / "think.jsonl", THINK_ROWS)
    convert(src, tmp_path / "rc.jsonl", "openai")
    assert dumps_rows(tmp_path / "rc.jsonl") == [orjson.dumps(x) for x in _as(THINK_ROWS, "reasoning_content")]
    convert(tmp_path / "rc.jsonl", tmp_path / "v1.jsonl", "llamafactory-v1")
    v1 = load_jsonl(tmp_path / "v1.jsonl")
    assert v1[0]["messages"][1]["content"] == [r("17 * 23 = 17 * 20 + 17 * 3 = 340 + 51 = 391."), t("17 * 23 = 391.")]
    assert v1[1]["messages"][1]["content"] == [r(""), t("Hi!")]
    convert(tmp_path / "v1.jsonl", tmp_path / "rc2.jsonl", "openai")
    assert (tmp_path / "rc2.jsonl").read_bytes() == (tmp_path / "rc.jsonl").read_bytes()
    convert(tmp_path / "v1.jsonl", tmp_path / "inline.jsonl", "openai", write_opts={"reasoning": "inline"})
    assert (tmp_path / "inline.jsonl").read_bytes() == src.read_bytes()
    ids = {name: [rec.id for rec, _ in read_records(tmp_path / name)] for name in ("think.jsonl", "rc.jsonl", "v1.jsonl")}
    assert ids["think.jsonl"] == ids["rc.jsonl"] == ids["v1.jsonl"]
    # the other spellings read the same: `reasoning` (vLLM, OpenRouter), `thinking` (GPT-OSS datasets)
    for key in ("reasoning", "thinking"):
        write_jsonl(tmp_path / f"{key}.jsonl", _as(THINK_ROWS, key))
        assert [rec.id for rec, _ in read_records(tmp_path / f"{key}.jsonl")] == ids["think.jsonl"]
    convert(src, tmp_path / "gptoss.jsonl", "trl", write_opts={"reasoning_key": "thinking"})
    assert dumps_rows(tmp_path / "gptoss.jsonl") == [orjson.dumps(x) for x in _as(THINK_ROWS, "thinking")]


def test_reasoning_in_each_format_own_way_or_rejected(tmp_path):
    src = write_jsonl(tmp_path / "think.jsonl", THINK_ROWS[:2])
    # alpaca / sharegpt / trl standard hold it inline (LLaMA-Factory's convention), byte for byte back
    c = convert(src, tmp_path / "a.jsonl", "alpaca")
    assert c.kept == 2 and load_jsonl(tmp_path / "a.jsonl")[0]["output"] == THINK_ROWS[0]["messages"][1]["content"]
    convert(tmp_path / "a.jsonl", tmp_path / "a.back.jsonl", "openai", write_opts={"reasoning": "inline"})
    assert (tmp_path / "a.back.jsonl").read_bytes() == src.read_bytes()
    convert(src, tmp_path / "s.jsonl", "trl", write_opts={"style": "standard", "sft": "prompt-completion"})
    assert load_jsonl(tmp_path / "s.jsonl")[1] == {"prompt": "Say hi.", "completion": "<think>\n\n</think>\n\nHi!"}
    # a qa answer is free text: the block stays in it (R1-style math data), and qa -> qa is exact
    c = convert(src, tmp_path / "q.jsonl", "qa")
    assert c.kept == 2 and load_jsonl(tmp_path / "q.jsonl")[0]["answer"] == THINK_ROWS[0]["messages"][1]["content"]
    convert(tmp_path / "q.jsonl", tmp_path / "q2.jsonl", "qa")
    assert (tmp_path / "q2.jsonl").read_bytes() == (tmp_path / "q.jsonl").read_bytes()
    c = convert(src, tmp_path / "q.jsonl", "qa", write_opts={"reasoning": "drop"})
    assert [x["answer"] for x in load_jsonl(tmp_path / "q.jsonl")] == ["17 * 23 = 391.", "Hi!"]
    # hh transcripts have no place for it: rejected with the reason, never dropped; inline or drop on request
    pair = {"prompt": [{"role": "user", "content": "2+2?"}],
            "chosen": [{"role": "assistant", "content": "4", "reasoning_content": "2 and 2 make 4."}],
            "rejected": [{"role": "assistant", "content": "5", "reasoning_content": "Off by one."}]}
    write_jsonl(tmp_path / "pairs.jsonl", [pair])
    c = convert(tmp_path / "pairs.jsonl", tmp_path / "hh.jsonl", "hh")
    assert (c.kept, dict(c.reasons)) == (0, {"not_representable": 1})
    (rej,) = load_jsonl(tmp_path / "hh.rejects.jsonl")
    assert "reasoning=inline" in rej["detail"] and rej["record"]["chosen"][0]["reasoning"] == "2 and 2 make 4."
    (hh,) = FORMATS["hh"].write(FORMATS["trl"].read(pair, {}), {"reasoning": "inline"})
    assert hh["chosen"] == "\n\nHuman: 2+2?\n\nAssistant: <think>\n2 and 2 make 4.\n</think>\n\n4"
    (pref,) = FORMATS["openai-pref"].write(FORMATS["trl"].read(pair, {}), {})
    assert pref["preferred_output"] == pair["chosen"] and pref["non_preferred_output"] == pair["rejected"]
    # a non-canonical wrapper (LLaMA-Factory's README writes `<think>cot</think>output`) comes back exactly
    row = {"instruction": "2+2?", "input": "", "output": "<think>cot</think>4"}
    rec = FORMATS["alpaca"].read(row, {})
    assert rec.messages[1] == {"role": "assistant", "content": "4", "reasoning": "cot", "reasoning_wrap": ["<think>", "</think>"]}
    assert FORMATS["alpaca"].write(rec, {}) == [row]
    assert FORMATS["ptdata"].write(FORMATS["ptdata"].read(rec.to_dict(), {}), {}) == [rec.to_dict()]
    # a bad option value is one error line, exit 1, nothing written
    res, _ = cli("convert", "think.jsonl", "x.jsonl", "--to", "openai", "-O", "reasoning=keepp", cwd=tmp_path)
    assert res.returncode == 1 and res.stderr.strip().splitlines() == ["error: -o reasoning: must be keep, drop or inline, got 'keepp'"]
    assert not (tmp_path / "x.jsonl").exists()


def test_ids_without_reasoning_unchanged_and_with_it_distinct(alpaca_rows):
    """The id of a record without reasoning is the hash it always was (roles, stripped text)."""
    for row in alpaca_rows[:3000]:
        rec = FORMATS["alpaca"].read(row, {})
        key = ["sft", [[m["role"], normalize_text(m["content"])] for m in rec.messages]]
        assert rec.id == xxhash.xxh3_128_hexdigest(orjson.dumps(key, option=orjson.OPT_SORT_KEYS))
    plain = FORMATS["openai"].read({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}, {})
    think = FORMATS["openai"].read({"messages": [{"role": "user", "content": "Hi"},
                                                 {"role": "assistant", "content": "Hello", "reasoning_content": "Greet back."}]}, {})
    assert plain.id != think.id


def test_validation_of_the_new_message_shape():
    def rec(*msgs, kind="sft", **kw):
        return Record(kind, list(msgs), **kw)
    U = {"role": "user", "content": "What is in the picture?"}
    with pytest.raises(RecordError, match="reasoning but no answer") as e:
        validate(rec(U, {"role": "assistant", "content": "", "reasoning": "Thinking only."}))
    assert e.value.reason == "empty_turn"
    image_only = {"role": "user", "content": "", "parts": [{"type": "image", "url": "a.jpg"}]}
    assert validate(rec(image_only, {"role": "assistant", "content": "A cat."})) == []
    with pytest.raises(RecordError) as e:
        validate(rec({"role": "user", "content": ""}, {"role": "assistant", "content": "A cat."}))
    assert e.value.reason == "empty_turn"
    from ptdata.validation import ValidationConfig
    with pytest.raises(RecordError) as e:
        validate(rec(U, {"role": "assistant", "content": "ok", "reasoning": "x" * 50}), ValidationConfig(max_turn_chars=20))
    assert e.value.reason == "turn_too_long"
    # multi-turn checks still hold around reasoning and tool calls
    call_turn = {"role": "assistant", "content": "", "reasoning": "Look it up.",
                 "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {}}}]}
    tool = {"role": "tool", "content": "42"}
    assert validate(rec(U, call_turn, tool, {"role": "assistant", "content": "42.", "reasoning": "The tool said 42."})) == []
    with pytest.raises(RecordError) as e:
        validate(rec(U, call_turn, {"role": "assistant", "content": "42."}))
    assert e.value.reason == "missing_tool_result"
    with pytest.raises(RecordError) as e:
        validate(rec(U, {"role": "assistant", "content": "A cat.", "reasoning": "r"}, U))
    assert e.value.reason == "sft_not_ending_with_assistant"
    # a turn repeating the one before is still caught; the same words with an image are another turn
    a = {"role": "assistant", "content": "A cat.", "reasoning": "Whiskers, fur."}
    with pytest.raises(RecordError) as e:
        validate(rec(U, a, {"role": "user", "content": "A cat."}, {"role": "assistant", "content": "Yes."}))
    assert e.value.reason == "repeated_turn"
    with_image = {"role": "user", "content": "A cat.", "parts": [{"type": "text", "chars": 6}, {"type": "image", "url": "2.jpg"}]}
    assert validate(rec(U, a, with_image, {"role": "assistant", "content": "Another cat."})) == []
    pair = Record("preference", [U], [{"role": "assistant", "content": "A cat.", "reasoning": "fur"}],
                  [{"role": "assistant", "content": "A cat.", "reasoning": "whiskers"}])
    assert validate(pair) == []
    with pytest.raises(RecordError) as e:
        Record.from_dict({"kind": "sft", "messages": [{"role": "user", "content": "hi", "reasoning": "no"}, a]})
    assert e.value.reason == "wrong_type"


def test_pii_is_redacted_in_reasoning_too():
    rec = FORMATS["openai"].read({"messages": [
        {"role": "user", "content": "Who should I email?"},
        {"role": "assistant", "content": "Write to the support desk.", "reasoning_content": "Their address is jane.doe@example.com."}]}, {})
    old = rec.id
    assert Pii().check(rec) is None
    assert "jane.doe@example.com" not in rec.messages[1]["reasoning"] and rec.meta["pii"] and rec.id != old


# --- content parts --------------------------------------------------------------------------------

OPENAI_PARTS = [
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is in this image?"},
                                               {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/wikipedia/commons/3/3f/Fronalpstock_big.jpg", "detail": "high"}}]},
                  {"role": "assistant", "content": "A mountain landscape with a lake."}]},
    {"messages": [{"role": "system", "content": [{"type": "text", "text": "Describe images briefly."}]},
                  {"role": "user", "content": [{"type": "text", "text": "Compare "}, {"type": "text", "text": "these two:"},
                                               {"type": "image_url", "image_url": {"url": "data/mllm_demo_data/1.jpg"}},
                                               {"type": "image_url", "image_url": {"url": "data/mllm_demo_data/2.jpg"}}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "Both show football players celebrating."}]}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "Transcribe this."},
                                               {"type": "input_audio", "input_audio": {"data": "UklGRiQAAABXQVZFZm10IBAAAAABAAEA", "format": "wav"}}]},
                  {"role": "assistant", "content": "Hello there."}]},
]


def test_openai_content_parts_kept_by_ptdata_and_openai(tmp_path):
    src = write_jsonl(tmp_path / "parts.jsonl", OPENAI_PARTS)
    for mid in ("records.jsonl", "records.parquet"):
        c = convert(src, tmp_path / mid, "ptdata")
        assert c.kept == 3
        convert(tmp_path / mid, tmp_path / "back.jsonl", "openai")
        assert (tmp_path / "back.jsonl").read_bytes() == src.read_bytes(), mid
    recs = [rec for rec, _ in read_records(tmp_path / "records.jsonl")]
    assert recs[1].messages[1]["content"] == "Compare these two:"
    assert recs[1].messages[1]["parts"][2:] == [{"type": "image", "url": "data/mllm_demo_data/1.jpg"},
                                                {"type": "image", "url": "data/mllm_demo_data/2.jpg"}]
    # images travel to v1 and back (a detail setting or inline audio has no v1 form: rejected, not dropped)
    c = convert(src, tmp_path / "v1.jsonl", "llamafactory-v1")
    assert (c.kept, dict(c.reasons)) == (1, {"not_representable": 2})
    convert(tmp_path / "v1.jsonl", tmp_path / "v1.back.jsonl", "openai")
    # every v1 content is a list, so only the message with media comes back as an OpenAI array
    msgs = OPENAI_PARTS[1]["messages"]
    assert load_jsonl(tmp_path / "v1.back.jsonl") == [{"messages": [
        {"role": "system", "content": "Describe images briefly."}, msgs[1],
        {"role": "assistant", "content": "Both show football players celebrating."}]}]
    # v1's own multimodal rows: through openai and back, identical
    write_jsonl(tmp_path / "mm.jsonl", V1_MULTIMODAL)
    convert(tmp_path / "mm.jsonl", tmp_path / "mm.openai.jsonl", "openai")
    convert(tmp_path / "mm.openai.jsonl", tmp_path / "mm.back.jsonl", "llamafactory-v1")
    assert dumps_rows(tmp_path / "mm.back.jsonl") == [orjson.dumps(x) for x in V1_MULTIMODAL]


@pytest.mark.parametrize("fmt", ["alpaca", "sharegpt", "hh", "qa", "trl"])
def test_media_rejected_not_dropped_where_a_format_cannot_hold_it(tmp_path, fmt):
    pref = {"input": {"messages": OPENAI_PARTS[0]["messages"][:1]},
            "preferred_output": [{"role": "assistant", "content": "A mountain."}],
            "non_preferred_output": [{"role": "assistant", "content": "A cat."}]}
    src = write_jsonl(tmp_path / "in.jsonl", [pref] if fmt == "hh" else OPENAI_PARTS)
    c = convert(src, tmp_path / "out.jsonl", fmt)
    assert c.records_in == c.rejected == c.reasons["not_representable"] and c.kept == 0
    rej = load_jsonl(tmp_path / "out.rejects.jsonl")
    assert all(x["op"] == "write" and "content parts" in x["detail"] and x["record"]["messages"] for x in rej)
    assert any("parts" in m for x in rej for m in x["record"]["messages"])


def test_parquet_without_a_column_for_reasoning_rejects_instead_of_dropping(tmp_path):
    src = write_jsonl(tmp_path / "think.jsonl", THINK_ROWS)
    c = convert(src, tmp_path / "t.parquet", "trl")
    assert c.kept == 0 and c.reasons["not_representable"] == 3
    assert "reasoning_content" in load_jsonl(tmp_path / "t.rejects.jsonl")[0]["detail"]
    assert convert(src, tmp_path / "t.parquet", "trl", write_opts={"reasoning": "inline"}).kept == 3
    assert pq.read_table(tmp_path / "t.parquet").to_pylist()[0]["messages"][1]["content"] == THINK_ROWS[0]["messages"][1]["content"]
    assert convert(src, tmp_path / "p.parquet", "ptdata").kept == 3
    convert(tmp_path / "p.parquet", tmp_path / "p.back.jsonl", "openai", write_opts={"reasoning": "inline"})
    assert (tmp_path / "p.back.jsonl").read_bytes() == src.read_bytes()


# --- kto_tag / label, meta.extra, #### N ------------------------------------------------------------

def _kto_rows(alpaca_rows: list[dict], n: int) -> list[dict]:
    """LLaMA-Factory's data/kto_en_demo.json shape (messages of role/content, a boolean `label`),
    built from real Alpaca answers, alternating labels."""
    rows = []
    for i, row in enumerate(x for x in alpaca_rows if x["output"].strip() and not x["input"]):
        if len(rows) == n:
            break
        rows.append({"messages": [{"content": row["instruction"], "role": "user"}, {"content": row["output"], "role": "assistant"}],
                     "label": i % 3 != 0})
    return rows


def test_kto_file_without_dataset_info_keeps_every_label(tmp_path, alpaca_rows):
    rows = _kto_rows(alpaca_rows, 300)
    (tmp_path / "kto_en_demo.json").write_bytes(orjson.dumps(rows))
    res, counts = cli("convert", "kto_en_demo.json", "kto.jsonl", "--to", "ptdata", "-q", cwd=tmp_path)
    assert res.returncode == 0 and counts[0] == 300
    recs = load_jsonl(tmp_path / "kto.jsonl")
    rejected = load_jsonl(tmp_path / "kto.rejects.jsonl") if counts[2] else []
    assert len(recs) + len(rejected) == 300 and len(recs) > 250
    by_line = {int(x["meta"]["source"].rsplit(":", 1)[1]): x for x in recs}
    for line, x in by_line.items():
        assert x["kind"] == "preference" and x["meta"]["label"] is rows[line - 1]["label"]
        side = x["chosen"] if rows[line - 1]["label"] else x["rejected"]
        assert side == [{"role": "assistant", "content": rows[line - 1]["messages"][1]["content"]}]
    # and on to LLaMA-Factory's own KTO columns, every label kept
    res, counts2 = cli("convert", "kto_en_demo.json", "kto.sharegpt.jsonl", "--to", "sharegpt", "-q", cwd=tmp_path)
    assert res.returncode == 0 and counts2 == counts
    assert [x["kto_tag"] for x in load_jsonl(tmp_path / "kto.sharegpt.jsonl")] == [x["meta"]["label"] for x in recs]
    # a boolean kto_tag is recognized by itself in every row shape that can carry it
    tagged = [{"messages": rows[0]["messages"], "kto_tag": False},
              {"instruction": "2+2?", "input": "", "output": "5", "kto_tag": False},
              {"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}], "kto_tag": True}]
    for row in tagged:
        rec = FORMATS[guess_format(row)].read(row, {})
        assert rec.kind == "preference" and rec.meta["label"] is row["kto_tag"] and "extra" not in rec.meta
    write_jsonl(tmp_path / "tagged.jsonl", [tagged[0]] * 4)
    res, counts = cli("convert", "tagged.jsonl", "tagged.alpaca.jsonl", "--to", "alpaca", "-q", cwd=tmp_path)
    assert res.returncode == 0 and counts == (4, 4, 0)
    assert {x["kto_tag"] for x in load_jsonl(tmp_path / "tagged.alpaca.jsonl")} == {False}
    res, counts = cli("convert", "tagged.jsonl", "tagged.openai.jsonl", "--to", "openai", "-q", cwd=tmp_path)
    assert res.returncode == 4 and counts == (4, 0, 4)  # OpenAI SFT has no label: rejected, never written without it


SEED_TASKS = [  # yizhongw/self-instruct data/seed_tasks.jsonl, rows 1-2 (verbatim), and its shape with two instances
    {"id": "seed_task_0", "name": "breakfast_suggestion", "instruction": "Is there anything I can eat for a breakfast that doesn't include eggs, yet includes protein, and has roughly 700-1000 calories?", "instances": [{"input": "", "output": "Yes, you can have 1 oatmeal banana protein shake and 4 strips of bacon. The oatmeal banana protein shake may contain 1/2 cup oatmeal, 60 grams whey protein powder, 1/2 medium banana, 1tbsp flaxseed oil and 1/2 cup watter, totalling about 550 calories. The 4 strips of bacon contains about 200 calories."}], "is_classification": False},
    {"id": "seed_task_1", "name": "antonym_relation", "instruction": "What is the relation between the given pairs?", "instances": [{"input": "Night : Day :: Right : Left", "output": "The relation between the given pairs is that they are opposites."}], "is_classification": False},
    {"id": "seed_task_2", "name": "sentiment", "instruction": "Classify the sentiment of the sentence into positive, negative or mixed.", "instances": [{"input": "I enjoy the flavor of the restaurant but their service is too slow.", "output": "mixed"}, {"input": "I had a great day today.", "output": "positive"}], "is_classification": True},
]


def test_unmapped_fields_kept_in_meta_extra_and_counted(tmp_path):
    rows = [dict(SEED_TASKS[i % 3], id=f"seed_task_{i}") for i in range(175)]
    write_jsonl(tmp_path / "seed_tasks.jsonl", rows)
    res, counts = cli("convert", "seed_tasks.jsonl", "o.jsonl", "--to", "ptdata", "-q", cwd=tmp_path)
    assert res.returncode == 0 and counts == (175, 175, 0)
    assert ("kept 4 unmapped fields in meta.extra: id (175 records), instances (175 records), "
            "is_classification (175 records), name (175 records)") in res.stderr
    out = load_jsonl(tmp_path / "o.jsonl")
    for row, rec in zip(rows, out, strict=True):
        assert rec["meta"]["extra"] == {k: row[k] for k in ("id", "name", "instances", "is_classification")}
        assert list(rec["meta"])[-1] == "source"  # meta stays last-keyed by source, as the copy plan expects
    # free-form rows get them back as fields; OpenAI and Parquet cannot, and the summary says so
    res, _ = cli("convert", "o.jsonl", "back.alpaca.jsonl", "--to", "alpaca", "-q", cwd=tmp_path)
    assert "written as alpaca row fields" in res.stderr
    assert [{k: v for k, v in x.items() if k != "input"} for x in load_jsonl(tmp_path / "back.alpaca.jsonl")] == rows
    res, counts = cli("convert", "seed_tasks.jsonl", "o.openai.jsonl", "--to", "openai", "-q", cwd=tmp_path)
    assert res.returncode == 0 and counts == (175, 175, 0) and "4 unmapped fields not written (openai rows have no place" in res.stderr
    res, _ = cli("convert", "seed_tasks.jsonl", "o.parquet", "--to", "alpaca", "-q", cwd=tmp_path)
    assert res.returncode == 0 and "Parquet has no column for them" in res.stderr
    # a field the target would read as its own is never written over it
    qa = FORMATS["qa"].read({"question": "2+2?", "answer": "4", "input": "extra context"}, {})
    assert qa.meta["extra"] == {"input": "extra context"}
    with pytest.raises(RecordError) as e:
        FORMATS["alpaca"].write(qa, {})
    assert e.value.reason == "not_representable" and "'input'" in e.value.detail
    assert FORMATS["alpaca"].write(qa, {"extra": "drop"}) == [{"instruction": "2+2?", "input": "", "output": "4"}]


def test_bare_final_answer_is_a_reference(tmp_path):
    rows = [{"question": "What is 5 + 7?", "answer": "#### 12"},
            {"question": "Natalia sold 48 clips in April and half as many in May. How many in all?",
             "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"},
            {"question": "Name a prime.", "answer": "7"}]
    write_jsonl(tmp_path / "qa.jsonl", rows)
    res, counts = cli("convert", "qa.jsonl", "qa.out.jsonl", "--to", "ptdata", "--from", "qa", "-q", cwd=tmp_path)
    assert res.returncode == 0 and counts == (3, 3, 0)
    out = load_jsonl(tmp_path / "qa.out.jsonl")
    assert [x["meta"].get("reference") for x in out] == ["12", "72", None]
    assert out[0]["messages"][1]["content"] == "#### 12"


# --- real data at scale -----------------------------------------------------------------------------

def _head(name: str, n: int) -> list[dict]:
    out = []
    with gzip.open(shared(name), "rb") as f:
        for line in f:
            out.append(orjson.loads(line))
            if len(out) == n:
                break
    return out


@pytest.mark.parametrize("name,fmt,n", [("alpaca_en_52k.jsonl.gz", "alpaca", 4000), ("gsm8k_train.jsonl.gz", "qa", 3000),
                                        ("hh_rlhf_harmless_test.jsonl.gz", "hh", 2312)])
def test_real_records_through_v1_and_back(tmp_path, name, fmt, n):
    """Thousands of real records -> llamafactory-v1 -> their own format: the same rows as a direct
    round trip, the same records (ids), and for ptdata the same bytes."""
    rows = _head(name, n)
    src = write_jsonl(tmp_path / f"in.{fmt}.jsonl", rows)
    ro = ReadOptions(fmt=fmt, validate=False)
    c1 = convert(src, tmp_path / "v1.jsonl", "llamafactory-v1", ro)
    assert (c1.records_in, c1.kept) == (len(rows), len(rows))
    c2 = convert(tmp_path / "v1.jsonl", tmp_path / f"back.{fmt}.jsonl", fmt, NOVAL)
    assert c2.kept == len(rows) and c2.fmt_in == "llamafactory-v1"
    convert(src, tmp_path / f"direct.{fmt}.jsonl", fmt, ro)
    back = dumps_rows(tmp_path / f"back.{fmt}.jsonl")
    assert back == dumps_rows(tmp_path / f"direct.{fmt}.jsonl")
    if fmt in ("qa", "hh"):  # these rebuild the original rows exactly
        assert back == [orjson.dumps(x) for x in rows]
    ids = [rec.id for rec, _ in read_records(src, ro)]
    assert [rec.id for rec, _ in read_records(tmp_path / "v1.jsonl", NOVAL)] == ids
    # ptdata -> v1 -> ptdata: the same conversations, byte for byte (v1 rows have no place for meta
    # such as GSM8K's meta.reference, which --to qa derives again from the answer)
    convert(src, tmp_path / "pt.jsonl", "ptdata", ro)
    convert(tmp_path / "pt.jsonl", tmp_path / "pt.v1.jsonl", "llamafactory-v1", NOVAL)
    convert(tmp_path / "pt.v1.jsonl", tmp_path / "pt.back.jsonl", "ptdata", NOVAL)
    strip = lambda d: orjson.dumps({k: v for k, v in d.items() if k not in ("meta", "scores")})  # noqa: E731
    assert [strip(x) for x in load_jsonl(tmp_path / "pt.back.jsonl")] == [strip(x) for x in load_jsonl(tmp_path / "pt.jsonl")]


def test_real_reasoning_traces_through_every_reasoning_form(tmp_path):
    """GSM8K's worked solutions as reasoning traces (the calculation as the thinking, the final
    answer as the reply): inline <think> -> openai reasoning_content -> v1 parts -> trl -> inline, identical."""
    rows = []
    for row in _head("gsm8k_train.jsonl.gz", 3000):
        work, _, final = row["answer"].rpartition("\n#### ")
        rows.append({"messages": [{"role": "user", "content": row["question"]},
                                  {"role": "assistant", "content": f"<think>\n{work}\n</think>\n\nThe answer is {final}."}]})
    src = write_jsonl(tmp_path / "r1.jsonl", rows)
    steps = [("rc.jsonl", "openai", {}), ("v1.jsonl", "llamafactory-v1", {}), ("trl.jsonl", "trl", {}),
             ("pt.parquet", "ptdata", {}), ("inline.jsonl", "openai", {"reasoning": "inline"})]
    prev = src
    for out, fmt, opts in steps:
        c = convert(prev, tmp_path / out, fmt, NOVAL, write_opts=opts)
        assert (c.records_in, c.kept) == (3000, 3000), (out, c.reasons)
        prev = tmp_path / out
    assert (tmp_path / "inline.jsonl").read_bytes() == src.read_bytes()
    v1 = load_jsonl(tmp_path / "v1.jsonl")
    assert all([p["type"] for p in x["messages"][1]["content"]] == ["reasoning", "text"] for x in v1)
    assert dumps_rows(tmp_path / "trl.jsonl") == dumps_rows(tmp_path / "rc.jsonl")
