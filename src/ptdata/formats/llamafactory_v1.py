"""LLaMA-Factory v1 data: `messages` of ``{role, content: [{type, value}], loss_weight?}``
(SFT), or `chosen_messages` / `rejected_messages` (DPO), with `tools` as a JSON string.

Followed from hiyouga/LLaMA-Factory at ff6d4d12eeb035d6ce06805a5733dd7b29f2ac30:
- src/llamafactory/v1/utils/types.py: `Content` (type text | reasoning | tool_call | image_url |
  video_url | audio_url, value a string), `Message` (role, content list, loss_weight default
  1.0), `SFTSample` (messages, tools as a JSON string, extra_info, _dataset_name), `DPOSample`
  (chosen_messages, rejected_messages, tools, extra_info, _dataset_name).
- src/llamafactory/v1/core/rendering/format.py `_to_hf_messages`: text parts are concatenated
  with no separator, reasoning parts likewise into `reasoning_content`, a tool_call value is a
  JSON object with `name` and `arguments`; so the record's content is the text parts joined
  exactly, and `reasoning` the reasoning parts joined.
- src/llamafactory/v1/plugins/data_plugins/converter.py: how LLaMA-Factory itself writes v1
  (loss_weight 0.0 on system/user/tool turns and 1.0 on assistant turns, `json.dumps` of each
  tool call and of the tools, a chosen and a rejected conversation each holding the prompt).
- src/llamafactory/v1/core/rendering/rendering.py and core/data_engine.py `_prefix_cuts`: the
  supervised turns are the assistant turns with loss_weight > 0 (default 1.0).
- data/v1_sft_demo.jsonl, data/v1_dpo_demo.jsonl, data/reason_tool_use_demo_50.jsonl (assistant
  parts `reasoning` then `text` or `tool_call`s, no loss_weight) and data/v1_multimodal_demo.jsonl.

Mapping: `loss_weight` is the record's per-message `weight` (ptdata weights are 0 or 1, so
another value is a `wrong_type` reject rather than a rounded weight); written back only where
the record has one (``-o loss_weight=all`` writes it on every message, as LLaMA-Factory's own
converters do). Part layouts other than reasoning, text, tool calls (and every media part)
are kept in the message's `parts`, so writing back gives the same parts. A preference pair is
written with the prompt repeated in both conversations; an unpaired (KTO) record has no v1
form and is rejected `not_representable`.
"""
from __future__ import annotations

import json
from typing import Any

import orjson

from ..content import layout_or_none, resolve
from ..errors import RecordError
from ..records import ROLES, Record, common_prefix_len, kind_of, message, normalize_tool_calls
from ._common import not_representable, parse_tools, req_list

NAME = "llamafactory-v1"
KEYS = ("messages", "chosen_messages", "rejected_messages", "tools")
_MEDIA_IN = {"image_url": "image", "video_url": "video", "audio_url": "audio"}
_MEDIA_OUT = {v: k for k, v in _MEDIA_IN.items()}


def detect(row: dict) -> bool:
    if isinstance(row.get("chosen_messages"), list) and isinstance(row.get("rejected_messages"), list):
        return True
    msgs = row.get("messages")
    if not isinstance(msgs, list) or "kind" in row:
        return False
    empty_list = False  # only empty content lists: v1 (OpenAI arrays are never empty in practice)
    for m in msgs:
        if isinstance(m, dict):
            if "loss_weight" in m:
                return True
            c = m.get("content")
            if isinstance(c, list):
                if c:
                    return all(isinstance(p, dict) and "value" in p for p in c)
                empty_list = True
    return empty_list


def _message(m: Any, where: str) -> dict:
    if not isinstance(m, dict):
        raise RecordError("wrong_type", f"{where} must be an object, got {type(m).__name__}")
    role = m.get("role")
    if role not in ROLES:
        raise RecordError("unknown_role", f"{where}.role is {role!r}; expected one of {', '.join(ROLES)}")
    parts = m.get("content")
    if not isinstance(parts, list):
        raise RecordError("wrong_type", f"{where}.content must be a list of content parts ({{type, value}}), got {type(parts).__name__}")
    texts: list[str] = []
    reasons: list[str] = []
    calls: list[dict] = []
    layout: list[dict] = []
    for j, p in enumerate(parts):
        at = f"{where}.content[{j}]"
        if not isinstance(p, dict):
            raise RecordError("wrong_type", f"{at} must be an object ({{type, value}}), got {type(p).__name__}")
        t, v = p.get("type"), p.get("value")
        if not isinstance(v, str):
            raise RecordError("wrong_type", f"{at}.value must be a string, got {type(v).__name__}")
        if t == "text":
            texts.append(v)
            layout.append({"type": "text", "chars": len(v)})
        elif t == "reasoning":
            if role != "assistant":
                raise RecordError("wrong_type", f"{at} is reasoning in a {role} turn; only assistant turns have it")
            reasons.append(v)
            layout.append({"type": "reasoning", "chars": len(v)})
        elif t == "tool_call":
            if role != "assistant":
                raise RecordError("bad_tool_call", f"{at} is a tool call in a {role} turn; only assistant turns make them")
            try:
                call = orjson.loads(v)
            except orjson.JSONDecodeError:
                raise RecordError("bad_tool_call", f"{at}.value is not JSON") from None
            if not isinstance(call, dict) or "name" not in call or "arguments" not in call:
                raise RecordError("bad_tool_call", f"{at}.value must be a JSON object with name and arguments")
            calls.append(call)
            layout.append({"type": "tool_call"})
        elif t in _MEDIA_IN:
            layout.append({"type": _MEDIA_IN[t], "url": v})
        else:
            raise RecordError("wrong_type", f"{at} has type {str(t)[:40]!r}; v1 parts are text, reasoning, tool_call, "
                              "image_url, video_url, audio_url")
    weight = m.get("loss_weight")
    if weight is not None:
        if type(weight) not in (int, float) or weight not in (0, 1):
            raise RecordError("wrong_type", f"{where}.loss_weight is {weight!r}; ptdata keeps per-message weights of 0 or 1")
        weight = int(weight)
    content = "".join(texts)
    reasoning = "".join(reasons) if reasons else None
    return message(role, content, reasoning=reasoning,
                   tool_calls=normalize_tool_calls(calls, f"{where}.content") if calls else None,
                   weight=weight, parts=layout_or_none(layout, content, reasoning, len(calls)))


def _messages(row: dict, key: str) -> list[dict]:
    return [_message(m, f"{key}[{i}]") for i, m in enumerate(req_list(row, key))]


def read(row: dict, opts: dict) -> Record:
    meta: dict = {}
    tools = parse_tools(row.get("tools"))
    if tools:
        meta["tools"] = tools
    elif row.get("tools") in ("[]", []):  # kept, so that the row writes back as it came (other writers skip it)
        meta["tools"] = []
    if row.get("messages") is not None:
        if row.get("chosen_messages") is not None or row.get("rejected_messages") is not None:
            raise RecordError("wrong_type", "a v1 row holds messages or chosen_messages / rejected_messages, not both")
        msgs = _messages(row, "messages")
        return Record(kind_of(msgs), msgs, meta=meta)
    ch, rj = _messages(row, "chosen_messages"), _messages(row, "rejected_messages")
    n = common_prefix_len(ch, rj)
    return Record("preference", ch[:n], ch[n:], rj[n:], meta=meta)


def _call_json(c: dict) -> str:
    # v1's ToolCall is {name, arguments} (no call id, as in sharegpt), written as its converters do: json.dumps
    return json.dumps({"name": c["function"]["name"], "arguments": c["function"]["arguments"]})


def _out(m: dict, opts: dict) -> dict:
    parts = []
    for t, v in resolve(m):
        if t in ("text", "reasoning"):
            parts.append({"type": t, "value": v})
        elif t == "tool_call":
            parts.append({"type": "tool_call", "value": _call_json(v)})
        elif t in _MEDIA_OUT and "url" in v and "detail" not in v:
            parts.append({"type": _MEDIA_OUT[t], "value": v["url"]})
        else:
            what = "a file part" if t == "file" else "an image detail setting" if "detail" in v else f"inline {t} data"
            raise not_representable(NAME, f"v1 content parts have no place for {what}")
    out: dict = {"role": m["role"], "content": parts}
    if "weight" in m:
        out["loss_weight"] = float(m["weight"])
    elif opts.get("loss_weight") == "all":
        out["loss_weight"] = 1.0 if m["role"] == "assistant" else 0.0
    return out


def write(rec: Record, opts: dict) -> list[dict]:
    if rec.kind == "preference":
        if "label" in rec.meta:
            raise not_representable(NAME, "v1 has no unpaired (KTO) rows; write it with --to alpaca, sharegpt or trl")
        ch, rj = rec.chosen or [], rec.rejected or []
        row: dict = {"chosen_messages": [_out(m, opts) for m in rec.messages + ch],
                     "rejected_messages": [_out(m, opts) for m in rec.messages + rj]}
    else:
        row = {"messages": [_out(m, opts) for m in rec.messages]}
    if rec.meta.get("tools") or rec.meta.get("tools") == []:
        row["tools"] = json.dumps(rec.meta["tools"])
    return [row]
