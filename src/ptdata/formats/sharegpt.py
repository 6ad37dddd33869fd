"""ShareGPT / LLaMA-Factory sharegpt: `conversations` of {from, value}.

Roles human/gpt/system/function_call/observation (names configurable through a
`dataset_info.json` `tags` block); `function_call` values are JSON {name, arguments}
(or a list of them) and become assistant tool calls, `observation` becomes a tool turn.
The DPO variant adds single `chosen`/`rejected` message objects, the KTO variant `kto_tag`.
"""
from __future__ import annotations

import orjson

from ..errors import RecordError
from ..records import Record, kind_of, message, normalize_tool_calls
from ._common import not_representable, opt_str, parse_tools, req_list

NAME = "sharegpt"

DEFAULT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
# Spellings seen in the wild, accepted when no explicit tags were configured.
ALIASES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant", "chatgpt": "assistant", "bard": "assistant",
    "system": "system",
    "function_call": "function_call",
    "observation": "tool", "tool": "tool", "function": "tool",
}


def detect(row: dict) -> bool:
    return isinstance(row.get("conversations"), list)


def _role_map(tags: dict) -> dict[str, str]:
    t = {**DEFAULT_TAGS, **tags}
    return {
        t["user_tag"]: "user", t["assistant_tag"]: "assistant", t["system_tag"]: "system",
        t["function_tag"]: "function_call", t["observation_tag"]: "tool",
    }


def _turn(item: object, where: str, roles: dict, rt: str, ct: str) -> dict:
    if not isinstance(item, dict):
        raise RecordError("wrong_type", f"{where} must be an object, got {type(item).__name__}")
    if rt not in item and "role" in item:  # "OpenAI-style" sharegpt (role/content tags)
        rt, ct = "role", "content"
    raw_role, value = item.get(rt), item.get(ct)
    role = roles.get(raw_role)
    if role is None:
        raise RecordError("unknown_role", f"{where}.{rt} is {raw_role!r}")
    if not isinstance(value, str):
        raise RecordError("wrong_type", f"{where}.{ct} must be a string, got {type(value).__name__}")
    if role == "function_call":
        return message("assistant", "", tool_calls=normalize_tool_calls(value, where))
    return message(role, value)


def read(row: dict, opts: dict) -> Record:
    tags = opts.get("tags") or {}
    roles = _role_map(tags) if tags else ALIASES
    rt = tags.get("role_tag", DEFAULT_TAGS["role_tag"])
    ct = tags.get("content_tag", DEFAULT_TAGS["content_tag"])
    msgs = [_turn(t, f"conversations[{i}]", roles, rt, ct) for i, t in enumerate(req_list(row, "conversations"))]
    system = opt_str(row, "system")
    if system:
        msgs.insert(0, message("system", system))
    meta = {}
    tools = parse_tools(row.get("tools"))
    if tools:
        meta["tools"] = tools
    if "chosen" in row or "rejected" in row:
        ch = _turn(row.get("chosen"), "chosen", roles, rt, ct)
        rj = _turn(row.get("rejected"), "rejected", roles, rt, ct)
        return Record("preference", msgs, [ch], [rj], meta=meta)
    if "kto_tag" in row:
        tag = row["kto_tag"]
        if not isinstance(tag, bool):
            raise RecordError("wrong_type", f"field 'kto_tag' must be true or false, got {tag!r}")
        if not msgs or msgs[-1]["role"] != "assistant":
            raise RecordError("not_ending_with_assistant", "a KTO row must end with the rated assistant turn")
        out = [msgs.pop()]
        return Record("preference", msgs, out if tag else [], [] if tag else out, meta={**meta, "label": tag})
    return Record(kind_of(msgs), msgs, meta=meta)


def _out_turn(m: dict) -> dict:
    if m.get("weight") == 0 and m["role"] == "assistant":  # a weight on another turn changes nothing
        raise not_representable(NAME, "it has a message with weight 0")
    if m["role"] == "assistant" and m.get("tool_calls"):
        if m["content"]:
            raise not_representable(NAME, "an assistant turn has both text and tool calls")
        calls = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in m["tool_calls"]]
        value = orjson.dumps(calls[0] if len(calls) == 1 else calls).decode()
        return {"from": "function_call", "value": value}
    role = {"user": "human", "assistant": "gpt", "system": "system", "tool": "observation"}[m["role"]]
    return {"from": role, "value": m["content"]}


def write(rec: Record, opts: dict) -> list[dict]:
    msgs = rec.messages
    for a, b in zip(msgs, msgs[1:]):
        if a["role"] == "tool" and b["role"] == "tool":
            raise not_representable(NAME, "consecutive tool results (parallel calls) have no observation slot")
    row: dict = {"conversations": [_out_turn(m) for m in msgs]}
    if rec.meta.get("tools"):
        row["tools"] = orjson.dumps(rec.meta["tools"]).decode()
    if rec.kind == "preference":
        ch, rj = rec.chosen or [], rec.rejected or []
        if "label" in rec.meta:
            side = ch or rj
            if len(side) != 1:
                raise not_representable(NAME, "KTO rows hold exactly one assistant turn")
            row["conversations"].append(_out_turn(side[0]))
            row["kto_tag"] = bool(rec.meta["label"])
        else:
            if len(ch) != 1 or len(rj) != 1:
                raise not_representable(NAME, "the DPO variant holds one message per side")
            row["chosen"], row["rejected"] = _out_turn(ch[0]), _out_turn(rj[0])
    return [row]
