"""Anthropic HH-RLHF transcripts: `chosen` / `rejected` strings of "\\n\\nHuman: …\\n\\nAssistant: …".

The prompt is the longest common prefix of turns, the rest of each transcript is its side.
Parsing is lossless: writing the record back rebuilds both transcripts byte for byte.
"""
from __future__ import annotations

import re

from ..errors import RecordError
from ..records import Record, common_prefix_len, message
from ._common import not_representable, req_str

NAME = "hh"
_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}
_TAG = {"user": "Human", "assistant": "Assistant"}


def detect(row: dict) -> bool:
    ch = row.get("chosen")
    return isinstance(ch, str) and "\n\nHuman:" in ch and "\n\nAssistant:" in ch


def parse_transcript(text: str, field: str) -> list[dict]:
    parts = _TURN.split(text)
    if parts[0] != "" or len(parts) < 3:
        raise RecordError("bad_transcript", f"'{field}' does not start with '\\n\\nHuman:'")
    turns = []
    for i in range(1, len(parts), 2):
        raw = parts[i + 1]
        if raw and not raw.startswith(" "):
            raise RecordError("bad_transcript", f"'{field}' has a turn without a space after its role tag")
        turns.append(message(_ROLE[parts[i]], raw[1:]))
    return turns


def render_transcript(msgs: list[dict]) -> str:
    out = []
    for m in msgs:
        if m["role"] not in _TAG or m.get("tool_calls"):
            raise not_representable(NAME, f"HH transcripts have no {m['role']} turns or tool calls")
        out.append(f"\n\n{_TAG[m['role']]}: {m['content']}")
    return "".join(out)


def read(row: dict, opts: dict) -> Record:
    ch = parse_transcript(req_str(row, "chosen"), "chosen")
    rj = parse_transcript(req_str(row, "rejected"), "rejected")
    if ch == rj:
        raise RecordError("chosen_equals_rejected", "the chosen and rejected transcripts are identical")
    n = common_prefix_len(ch, rj)
    return Record("preference", ch[:n], ch[n:], rj[n:])


def write(rec: Record, opts: dict) -> list[dict]:
    if rec.kind != "preference" or "label" in rec.meta:
        raise not_representable(NAME, f"it is a {rec.kind} record; HH holds preference pairs")
    if rec.messages and rec.messages[0]["role"] == "system":
        raise not_representable(NAME, "HH transcripts have no system turn")
    return [{
        "chosen": render_transcript(rec.messages + (rec.chosen or [])),
        "rejected": render_transcript(rec.messages + (rec.rejected or [])),
    }]
