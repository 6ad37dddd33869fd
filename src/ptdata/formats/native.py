"""ptdata's own record format: the record model as JSON (`id`, `kind`, `messages`, …).

Lossless for every kind. The id is derived state: it is recomputed from the content on
read, so a hand-edited record never carries a stale id. In Parquet, `meta` is a JSON string
(free-form) and `scores` a map column.
"""
from __future__ import annotations

import orjson

from ..errors import RecordError
from ..records import Record

NAME = "ptdata"


def detect(row: dict) -> bool:
    return "kind" in row and "messages" in row


def read(row: dict, opts: dict) -> Record:
    if isinstance(row.get("meta"), str):
        try:
            row["meta"] = orjson.loads(row["meta"])
        except orjson.JSONDecodeError:
            raise RecordError("wrong_type", "field 'meta' is a string that is not JSON") from None
    if isinstance(row.get("scores"), list):  # Arrow map columns read back as (key, value) pairs
        row["scores"] = dict(row["scores"])
    return Record.from_dict(row)


def write(rec: Record, opts: dict) -> list[dict]:
    return [rec.to_dict()]
