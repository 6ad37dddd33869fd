"""`ptdata flywheel diff V1 V2`: what changed between two dataset version folders, per file.

A record's key is its prompt: a hash of the prompt messages (every turn before the final answer
of an SFT record, the `messages` of a pair or an eval prompt), roles and normalized text
(`normalize_for_match`: case, Unicode form and whitespace do not count). Its content is the
record's normalized content hash (`mine.content_key`: the answer, or chosen and rejected, with
the prompt). Per key, a version has the set of contents of its records with that prompt:

- added: a prompt only V2 has; removed: a prompt only V1 has;
- changed: a prompt both have, with other content (another answer, another pair);
- unchanged: a prompt both have with the same content.

Metadata (scores, interaction ids, the version name) is not content: the same conversation
mined twice is unchanged.
"""
from __future__ import annotations

from pathlib import Path

import orjson
import xxhash

from ..errors import InputError
from ..records import Record
from ..text import normalize_for_match
from .mine import content_key

FILES = ("sft", "pairs", "eval")


def prompt_of(rec: Record) -> list[dict]:
    return rec.messages[:-1] if rec.kind == "sft" else rec.messages


def record_key(rec: Record) -> str:
    """The prompt messages' hash: roles and normalized text."""
    return xxhash.xxh3_128_hexdigest(orjson.dumps([[m.get("role"), normalize_for_match(m.get("content") or "")]
                                                   for m in prompt_of(rec)]))


def _content(rec: Record) -> str:
    if rec.kind == "prompt":  # an eval prompt: its stored answer (and correction) are the content
        extra = [normalize_for_match(rec.meta.get("answer") or ""), normalize_for_match(rec.meta.get("correction") or "")]
        return xxhash.xxh3_128_hexdigest("\x1f".join([content_key(rec)] + extra).encode("utf-8", "surrogatepass"))
    return content_key(rec)


def read_version(vdir: Path, name: str) -> tuple[dict[str, set[str]], int] | None:
    """({prompt key: {content hashes}}, records) for one file of a version folder; None when absent."""
    path = vdir / f"{name}.jsonl"
    if not path.exists():
        return None
    out: dict[str, set[str]] = {}
    lines = 0
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = Record.from_trusted(orjson.loads(line))
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                raise InputError(f"{path}:{n}: not a ptdata record") from None
            out.setdefault(record_key(rec), set()).add(_content(rec))
            lines += 1
    return out, lines


def diff_versions(a: Path, b: Path, top: int | None = None) -> dict:
    """Per file: added, removed, changed and unchanged prompt keys (the keys themselves, the
    first `top` of each, sorted; all of them by default)."""
    for d in (a, b):
        if not d.is_dir():
            raise InputError(f"{d}: not a version folder (give two folders `flywheel mine` wrote)")
        if not any((d / f"{n}.jsonl").exists() for n in FILES):
            raise InputError(f"{d}: no sft.jsonl, pairs.jsonl or eval.jsonl in it")
    files = {}
    for name in FILES:
        ra, rb = read_version(a, name), read_version(b, name)
        if ra is None and rb is None:
            continue
        (x, na), (y, nb) = ra or ({}, 0), rb or ({}, 0)
        added = sorted(set(y) - set(x))
        removed = sorted(set(x) - set(y))
        both = set(x) & set(y)
        changed = sorted(k for k in both if x[k] != y[k])
        files[name] = {"records_a": na, "records_b": nb,
                       "prompts_a": len(x), "prompts_b": len(y), "added": len(added), "removed": len(removed),
                       "changed": len(changed), "unchanged": len(both) - len(changed),
                       "keys": {"added": added[:top], "removed": removed[:top], "changed": changed[:top]}}
    return {"a": str(a), "b": str(b), "key": "prompt messages hash (roles, normalized text)", "files": files}
