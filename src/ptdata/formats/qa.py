"""Question/answer pairs such as GSM8K (`question`, `answer`), fields renamed by
``--field question=COL --field answer=COL [--field system=COL]``.

The answer is kept verbatim (GSM8K's `#### N` line included); when it has such a final
line, or is a bare `#### N`, its value is also stored as `meta.reference` for verifiers and
distillation.
"""
from __future__ import annotations

import re

from ..records import Record, message
from ._common import alternating_pairs, not_representable, opt_str, req_str

NAME = "qa"
_FINAL = re.compile(r"(?:^|\n)\s*####\s*(.+?)\s*$")


def fields(opts: dict) -> dict[str, str]:
    return {"question": "question", "answer": "answer", "system": "system", **(opts.get("fields") or {})}


def detect(row: dict) -> bool:
    return "question" in row and "answer" in row


def read(row: dict, opts: dict) -> Record:
    f = fields(opts)
    msgs = []
    system = opt_str(row, f["system"])
    if system:
        msgs.append(message("system", system))
    msgs.append(message("user", req_str(row, f["question"])))
    answer = opt_str(row, f["answer"])
    if answer is None:
        return Record("prompt", msgs)
    meta = {}
    final = _FINAL.search(answer)
    if final:
        meta["reference"] = final.group(1)
    return Record("sft", msgs + [message("assistant", answer)], meta=meta)


def write(rec: Record, opts: dict) -> list[dict]:
    f = fields(opts)
    if rec.kind == "preference":
        raise not_representable(NAME, "it is a preference pair")
    if rec.kind == "prompt":
        msgs = rec.messages
        system, pairs = alternating_pairs(NAME, msgs[:-1])
        if pairs or not msgs or msgs[-1]["role"] != "user":
            raise not_representable(NAME, "it is not a single question")
        row = {f["question"]: msgs[-1]["content"]}
    else:
        system, pairs = alternating_pairs(NAME, rec.messages)
        if len(pairs) != 1:
            raise not_representable(NAME, "it is not a single question and answer")
        row = {f["question"]: pairs[0][0], f["answer"]: pairs[0][1]}
    if system is not None:
        row[f["system"]] = system
    return [row]
