"""TRL dataset types, standard (strings) and conversational (message lists).

Reads: language modeling `messages`, prompt-only, prompt-completion, preference with an
explicit or implicit prompt, unpaired preference (`completion` + `label`). The implicit
prompt is extracted exactly as `trl.data_utils.extract_prompt` does. Writer options:
``style=conversational|standard``, ``sft=messages|prompt-completion``,
``preference=explicit|implicit|unpaired``.
"""
from __future__ import annotations

from typing import Any

from ..errors import RecordError
from ..records import Record, check_messages, common_prefix_len, kind_of, message
from ._common import not_representable, parse_tools, unpaired

NAME = "trl"


def detect(row: dict) -> bool:
    """prompt-*, unpaired, or implicit-prompt preference (HH transcripts are detected before this)."""
    return "prompt" in row or ("completion" in row and "label" in row) or ("chosen" in row and "rejected" in row)


def _side(value: Any, field: str, role: str) -> list[dict]:
    if isinstance(value, str):
        return [message(role, value)]
    return check_messages(value, field)


def extract_prompt_str(chosen: str, rejected: str) -> int:
    """Index where the prompt ends, TRL's rule: first differing char, a space before it goes to the completion."""
    idx = 0
    for idx in range(min(len(chosen), len(rejected))):
        if chosen[idx] != rejected[idx]:
            if chosen[idx - 1] == " ":
                idx -= 1
            break
    return idx


def _meta(row: dict) -> dict:
    meta: dict = {}
    tools = parse_tools(row.get("tools"))
    if tools:
        meta["tools"] = tools
    if isinstance(row.get("chat_template_kwargs"), dict):
        meta["chat_template_kwargs"] = row["chat_template_kwargs"]
    return meta


def read(row: dict, opts: dict) -> Record:
    meta = _meta(row)
    if "messages" in row and "prompt" not in row:
        msgs = check_messages(row["messages"], "messages")
        if isinstance(row.get("label"), bool):  # a rated conversation (LLaMA-Factory's kto_en_demo shape)
            return unpaired(msgs, row["label"], "label", meta)
        return Record(kind_of(msgs), msgs, meta=meta)
    if "prompt" not in row:
        if "chosen" in row and "rejected" in row:
            return read_implicit(row, opts)
        raise RecordError("missing_field", "field 'prompt' is missing")
    prompt = _side(row["prompt"], "prompt", "user")
    if "chosen" in row or "rejected" in row:
        if "chosen" not in row or "rejected" not in row:
            raise RecordError("missing_field", "a preference row needs both 'chosen' and 'rejected'")
        return Record("preference", prompt, _side(row["chosen"], "chosen", "assistant"),
                      _side(row["rejected"], "rejected", "assistant"), meta=meta)
    if "completion" in row:
        completion = _side(row["completion"], "completion", "assistant")
        if "label" in row:
            label = row["label"]
            if not isinstance(label, bool):
                raise RecordError("wrong_type", f"field 'label' must be true or false, got {label!r}")
            meta["label"] = label
            return Record("preference", prompt, completion if label else [], [] if label else completion, meta=meta)
        return Record(kind_of(prompt + completion), prompt + completion, meta=meta)
    return Record("prompt", prompt, meta=meta)


def read_implicit(row: dict, opts: dict) -> Record:
    ch, rj = row.get("chosen"), row.get("rejected")
    if ch == rj:
        raise RecordError("chosen_equals_rejected", "chosen and rejected are identical, so no prompt can be extracted")
    meta = _meta(row)
    if isinstance(ch, str) and isinstance(rj, str):
        i = extract_prompt_str(ch, rj)
        return Record("preference", [message("user", ch[:i])], [message("assistant", ch[i:])],
                      [message("assistant", rj[i:])], meta=meta)
    chm, rjm = check_messages(ch, "chosen"), check_messages(rj, "rejected")
    n = common_prefix_len(chm, rjm)
    return Record("preference", chm[:n], chm[n:], rjm[n:], meta=meta)


def _std(fmt_msgs: list[dict], what: str, role: str) -> str:
    if len(fmt_msgs) != 1 or fmt_msgs[0]["role"] != role or fmt_msgs[0].get("tool_calls"):
        raise not_representable("trl standard", f"the {what} is not a single {role} turn")
    return fmt_msgs[0]["content"]


def write(rec: Record, opts: dict) -> list[dict]:
    standard = opts.get("style", "conversational") == "standard"
    conv = (lambda msgs, what, role: _std(msgs, what, role)) if standard else (lambda msgs, what, role: _out(msgs))
    extra: dict = {}
    if rec.meta.get("tools"):
        extra["tools"] = rec.meta["tools"]
    if rec.meta.get("chat_template_kwargs"):
        extra["chat_template_kwargs"] = rec.meta["chat_template_kwargs"]
    if rec.kind == "prompt":
        return [{"prompt": conv(rec.messages, "prompt", "user"), **extra}]
    if rec.kind == "sft":
        if opts.get("sft", "prompt-completion" if standard else "messages") == "messages":
            if standard:
                raise not_representable("trl standard", "language-modeling text needs a chat template; use sft=prompt-completion")
            return [{"messages": _out(rec.messages), **extra}]
        prompt, completion = rec.messages[:-1], rec.messages[-1:]
        return [{"prompt": conv(prompt, "prompt", "user"), "completion": conv(completion, "completion", "assistant"), **extra}]
    ch, rj = rec.chosen or [], rec.rejected or []
    mode = opts.get("preference", "explicit")
    prompt = conv(rec.messages, "prompt", "user")
    if "label" in rec.meta:  # already unpaired
        return [{"prompt": prompt, "completion": conv(ch or rj, "completion", "assistant"), "label": bool(rec.meta["label"]), **extra}]
    if mode == "unpaired":
        return [
            {"prompt": prompt, "completion": conv(ch, "chosen", "assistant"), "label": True, **extra},
            {"prompt": prompt, "completion": conv(rj, "rejected", "assistant"), "label": False, **extra},
        ]
    if mode == "implicit":
        if standard:
            return [{"chosen": prompt + conv(ch, "chosen", "assistant"), "rejected": prompt + conv(rj, "rejected", "assistant"), **extra}]
        return [{"chosen": _out(rec.messages + ch), "rejected": _out(rec.messages + rj), **extra}]
    return [{"prompt": prompt, "chosen": conv(ch, "chosen", "assistant"), "rejected": conv(rj, "rejected", "assistant"), **extra}]


def _out(msgs: list[dict]) -> list[dict]:
    """TRL and HF chat templates take tool-call arguments as objects, as the record holds them."""
    return msgs
