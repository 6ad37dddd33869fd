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
    scores = row.get("scores")
    if isinstance(scores, list):  # Arrow map columns read back as (key, value) pairs
        if not all(isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str) for p in scores):
            raise RecordError("wrong_type", "field 'scores' must be an object of named numbers, got a list")
        row["scores"] = dict(scores)
    return Record.from_dict(row)


def write(rec: Record, opts: dict) -> list[dict]:
    return [rec.to_dict()]
