"""Field checks shared by the format readers: each failure is a RecordError with a reason."""
from __future__ import annotations

from typing import Any

import orjson

from ..errors import RecordError
from ..records import Record


def req_str(row: dict, key: str, allow_empty: bool = True) -> str:
    if key not in row or row[key] is None:
        raise RecordError("missing_field", f"field '{key}' is missing")
    v = row[key]
    if not isinstance(v, str):
        raise RecordError("wrong_type", f"field '{key}' must be a string, got {type(v).__name__}")
    if not allow_empty and not v:
        raise RecordError("empty_field", f"field '{key}' is empty")
    return v


def opt_str(row: dict, key: str) -> str | None:
    v = row.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise RecordError("wrong_type", f"field '{key}' must be a string, got {type(v).__name__}")
    return v


def req_list(row: dict, key: str) -> list:
    if key not in row or row[key] is None:
        raise RecordError("missing_field", f"field '{key}' is missing")
    v = row[key]
    if not isinstance(v, list):
        raise RecordError("wrong_type", f"field '{key}' must be a list, got {type(v).__name__}")
    return v


def parse_tools(value: Any) -> list | None:
    """`tools` arrives as a list of JSON-schema specs or (LLaMA-Factory, Parquet) a JSON string."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise RecordError("bad_tools", "field 'tools' is a string that is not JSON") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise RecordError("bad_tools", f"field 'tools' must be a list, got {type(value).__name__}")
    return value


def not_representable(fmt: str, why: str) -> RecordError:
    return RecordError("not_representable", f"{fmt} cannot hold this record: {why}")


def only_plain_turns(fmt: str, msgs: list[dict]) -> None:
    """Formats without tool support must refuse tool turns rather than drop them."""
    for m in msgs:
        if m["role"] == "tool" or m.get("tool_calls"):
            raise not_representable(fmt, "it has tool calls or tool turns")
        if m.get("weight") == 0 and m["role"] == "assistant":  # weights matter on assistant turns only
            raise not_representable(fmt, "it has a message with weight 0")


def alternating_pairs(fmt: str, msgs: list[dict]) -> tuple[str | None, list[tuple[str, str]]]:
    """(system, [(user, assistant), ...]) for strictly alternating conversations."""
    only_plain_turns(fmt, msgs)
    system = None
    if msgs and msgs[0]["role"] == "system":
        system, msgs = msgs[0]["content"], msgs[1:]
    pairs = []
    for i in range(0, len(msgs) - 1, 2):
        u, a = msgs[i], msgs[i + 1]
        if u["role"] != "user" or a["role"] != "assistant":
            raise not_representable(fmt, "turns do not alternate user/assistant")
        pairs.append((u["content"], a["content"]))
    if len(msgs) % 2:
        raise not_representable(fmt, "it does not end with an assistant turn")
    return system, pairs


def unpaired(msgs: list[dict], tag: object, key: str, meta: dict) -> Record:
    """A conversation whose last assistant turn is rated by a boolean `key` (kto_tag, label): an
    unpaired (KTO) preference record, label in meta.label."""
    if not isinstance(tag, bool):
        raise RecordError("wrong_type", f"field '{key}' must be true or false, got {tag!r}")
    if not msgs or msgs[-1]["role"] != "assistant":
        raise RecordError("not_ending_with_assistant", "a KTO row must end with the rated assistant turn")
    out = [msgs[-1]]
    return Record("preference", msgs[:-1], out if tag else [], [] if tag else out, meta={**meta, "label": tag})
