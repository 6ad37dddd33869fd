"""Alpaca / LLaMA-Factory alpaca: instruction, input, output, system, history.

The user turn is ``instruction + "\\n" + input`` (LLaMA-Factory's rule); history pairs come
first and their answers are trained. The ranking variant holds `chosen`/`rejected` strings,
the KTO variant a boolean `kto_tag`. A row without `output` is an unlabeled prompt.
"""
from __future__ import annotations

from ..errors import RecordError
from ..records import Record, message
from ._common import alternating_pairs, not_representable, opt_str, req_str

NAME = "alpaca"


def detect(row: dict) -> bool:
    return "instruction" in row and not ("conversations" in row or "messages" in row)


def _prompt(row: dict) -> list[dict]:
    instruction = req_str(row, "instruction")
    inp = opt_str(row, "input") or ""
    msgs = []
    system = opt_str(row, "system")
    if system:
        msgs.append(message("system", system))
    history = row.get("history") or []
    if not isinstance(history, list):
        raise RecordError("wrong_type", f"field 'history' must be a list of [query, answer] pairs, got {type(history).__name__}")
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise RecordError("wrong_type", f"history[{i}] must be a [query, answer] pair of strings")
        msgs.append(message("user", pair[0]))
        msgs.append(message("assistant", pair[1]))
    msgs.append(message("user", f"{instruction}\n{inp}" if inp else instruction))
    return msgs


def read(row: dict, opts: dict) -> Record:
    if len(row) == 3:  # fast path for the common plain row (instruction, input, output)
        ins, inp, out = row.get("instruction"), row.get("input"), row.get("output")
        if type(ins) is str and type(inp) is str and type(out) is str:
            user = {"role": "user", "content": f"{ins}\n{inp}" if inp else ins}
            return Record("sft", [user, {"role": "assistant", "content": out}])
    msgs = _prompt(row)
    if "chosen" in row or "rejected" in row:
        chosen, rejected = req_str(row, "chosen"), req_str(row, "rejected")
        return Record("preference", msgs, [message("assistant", chosen)], [message("assistant", rejected)])
    if "kto_tag" in row:
        tag = row["kto_tag"]
        if not isinstance(tag, bool):
            raise RecordError("wrong_type", f"field 'kto_tag' must be true or false, got {tag!r}")
        out = [message("assistant", req_str(row, "output"))]
        return Record("preference", msgs, out if tag else [], [] if tag else out, meta={"label": tag})
    if row.get("output") is None:
        return Record("prompt", msgs)
    return Record("sft", msgs + [message("assistant", req_str(row, "output"))])


def write(rec: Record, opts: dict) -> list[dict]:
    if rec.kind == "sft":
        system, pairs = alternating_pairs(NAME, rec.messages)
        if not pairs:
            raise not_representable(NAME, "it has no user/assistant exchange")
        last_q, last_a = pairs[-1]
        row = {"instruction": last_q, "input": "", "output": last_a}
    else:
        msgs = rec.messages
        if not msgs or msgs[-1]["role"] != "user":
            raise not_representable(NAME, "the prompt does not end with a user turn")
        system, pairs = alternating_pairs(NAME, msgs[:-1])
        row = {"instruction": msgs[-1]["content"], "input": ""}
        if rec.kind == "preference":
            ch, rj = rec.chosen or [], rec.rejected or []
            if "label" in rec.meta:  # unpaired: LLaMA-Factory KTO
                side = ch or rj
                if len(side) != 1:
                    raise not_representable(NAME, "KTO rows hold exactly one assistant turn")
                row["output"], row["kto_tag"] = side[0]["content"], bool(rec.meta["label"])
            else:
                if len(ch) != 1 or len(rj) != 1 or ch[0]["role"] != "assistant" or rj[0]["role"] != "assistant":
                    raise not_representable(NAME, "ranking rows hold one assistant turn per side")
                row["chosen"], row["rejected"] = ch[0]["content"], rj[0]["content"]
        pairs = pairs + [(None, None)]  # the open user turn is not history
    if system is not None:
        row["system"] = system
    history = [list(p) for p in pairs[:-1]]
    if history:
        row["history"] = history
    return [row]
