"""OpenAI fine-tuning JSONL: chat SFT (`messages`, `tools`, `weight`) and preference
(`input`, `preferred_output`, `non_preferred_output`).

Tool-call `arguments` are JSON *strings* in this format; the record model holds them as
objects, so they are parsed on read and serialized on write. Content arrays (text, image_url,
input_audio, file parts) are read into the record's text and `parts` and written back as
arrays; reasoning is read from `reasoning_content` / `reasoning` / `thinking` and written as
`reasoning_content` (``-o reasoning_key=…``). `weight` is written on assistant messages only
(the only ones OpenAI trains). A `messages` row with a boolean `kto_tag` or `label`
(LLaMA-Factory's kto_en_demo.json shape) is an unpaired (KTO) record.
"""
from __future__ import annotations

import orjson

from ..errors import RecordError
from ..content import openai_content
from ..records import Record, check_messages, kind_of
from ._common import not_representable, parse_tools, req_list, unpaired

NAME = "openai"
PREF_NAME = "openai-pref"


def detect(row: dict) -> bool:
    return isinstance(row.get("messages"), list) and "kind" not in row


def detect_pref(row: dict) -> bool:
    return "preferred_output" in row and "input" in row


def _meta(container: dict) -> dict:
    meta = {}
    tools = parse_tools(container.get("tools"))
    if tools:
        meta["tools"] = tools
    if "parallel_tool_calls" in container:
        meta["parallel_tool_calls"] = container["parallel_tool_calls"]
    return meta


def read(row: dict, opts: dict) -> Record:
    msgs = check_messages(req_list(row, "messages"), "messages")
    tag_key = "kto_tag" if "kto_tag" in row else "label" if isinstance(row.get("label"), bool) else None
    if tag_key is not None:
        return unpaired(msgs, row[tag_key], tag_key, _meta(row))
    return Record(kind_of(msgs), msgs, meta=_meta(row))


def read_pref(row: dict, opts: dict) -> Record:
    inp = row.get("input")
    if not isinstance(inp, dict):
        raise RecordError("wrong_type", "field 'input' must be an object with 'messages'")
    msgs = check_messages(req_list(inp, "messages"), "input.messages")
    chosen = check_messages(req_list(row, "preferred_output"), "preferred_output")
    rejected = check_messages(req_list(row, "non_preferred_output"), "non_preferred_output")
    return Record("preference", msgs, chosen, rejected, meta=_meta(inp))


_RECORD_ONLY = ("reasoning", "parts", "reasoning_wrap")


def _out_message(m: dict, opts: dict, fmt: str) -> dict:
    """A record message in OpenAI's shape: content array, reasoning_content, weight on assistants."""
    if len(m) == 2 or not any(k in m for k in (*_RECORD_ONLY, "weight")):
        return m
    if "weight" in m and m["role"] != "assistant":
        m = {k: v for k, v in m.items() if k != "weight"}  # never trained: OpenAI takes weight on assistant turns only
    if not any(k in m for k in _RECORD_ONLY):
        return m
    out: dict = {"role": m["role"], "content": openai_content(m, fmt, not_representable)}
    if "reasoning" in m:
        out[opts.get("reasoning_key", "reasoning_content")] = m["reasoning"]
    out.update((k, v) for k, v in m.items() if k not in out and k not in _RECORD_ONLY)
    return out


def _out_messages(msgs: list[dict], opts: dict | None = None, fmt: str = NAME) -> list[dict]:
    out = []
    for m in msgs:
        m = _out_message(m, opts or {}, fmt)
        if "tool_calls" in m:
            m = dict(m)
            m["tool_calls"] = [
                {
                    "id": c.get("id") or f"call_{i}",
                    "type": "function",
                    "function": {
                        "name": c["function"]["name"],
                        "arguments": a if isinstance(a := c["function"]["arguments"], str) else orjson.dumps(a).decode(),
                    },
                }
                for i, c in enumerate(m["tool_calls"])
            ]
        out.append(m)
    return out


def _container(rec: Record, msgs: list[dict], opts: dict | None = None, fmt: str = NAME) -> dict:
    row: dict = {"messages": _out_messages(msgs, opts, fmt)}
    if rec.meta.get("tools"):
        row["tools"] = rec.meta["tools"]
    if "parallel_tool_calls" in rec.meta:
        row["parallel_tool_calls"] = rec.meta["parallel_tool_calls"]
    return row


def write(rec: Record, opts: dict) -> list[dict]:
    if rec.kind == "preference":
        if "label" in rec.meta:
            raise not_representable(NAME, "it is an unpaired (KTO) record; write it with --to trl, alpaca or sharegpt")
        raise not_representable(NAME, f"it is a preference pair; write it with --to {PREF_NAME}")
    return [_container(rec, rec.messages, opts)]


def write_pref(rec: Record, opts: dict) -> list[dict]:
    if rec.kind != "preference":
        raise not_representable(PREF_NAME, f"it is a {rec.kind} record, not a preference pair")
    ch, rj = rec.chosen or [], rec.rejected or []
    if len(ch) != 1 or len(rj) != 1 or ch[0]["role"] != "assistant" or rj[0]["role"] != "assistant":
        raise not_representable(PREF_NAME, "each output must be exactly one assistant message")
    return [{
        "input": _container(rec, rec.messages, opts, PREF_NAME),
        "preferred_output": _out_messages(ch, opts, PREF_NAME),
        "non_preferred_output": _out_messages(rj, opts, PREF_NAME),
    }]
