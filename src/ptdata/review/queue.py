"""Make a review queue: records from any file ptdata reads, or a mined flywheel version (its
records with the interactions they came from and those interactions' feedback events)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from ..errors import InputError
from ..reader import ReadOptions, read_records
from ..records import Record
from .rubric import Rubric
from .store import ReviewStore


def view_of(rec: Record, context: dict | None) -> str:
    """How a record is shown: a pair side by side, a distillation label with its samples and
    confidence, a flywheel interaction with its feedback events, or a chat."""
    if rec.kind == "preference":
        return "pair"
    if "distill" in rec.meta or rec.meta.get("candidates"):
        return "distill"
    if context and context.get("interactions"):
        return "interaction"
    return "chat"


def item_row(rec: Record, context: dict | None = None) -> dict[str, Any]:
    return {"record_id": rec.id, "kind": rec.kind, "view": view_of(rec, context),
            "record": orjson.loads(orjson.dumps(rec.to_dict(), default=str)), "context": context}


def from_file(path: Path, limit: int | None = None) -> tuple[list[dict], dict[str, int]]:
    """Item rows from a file in any format ptdata reads, and the reject counts by reason."""
    rows, rejected = [], {}
    for rec, bad in read_records(path, ReadOptions()):
        if rec is None:
            rejected[bad["reason"]] = rejected.get(bad["reason"], 0) + 1
            continue
        rows.append(item_row(rec))
        if limit and len(rows) >= limit:
            break
    return rows, rejected


def from_flywheel(store_url: str, version: str, out_dir: Path, limit: int | None = None) -> list[dict]:
    """Item rows from a mined version: its SFT records and pairs, each with its interactions'
    model, time and feedback events (what users said), read from the flywheel store."""
    import sqlalchemy as sa

    from ..flywheel.mine import version_dir
    from ..flywheel.store import Store, versions

    if "://" not in store_url and not Path(store_url).exists():  # opening it would make an empty store
        raise InputError(f"--flywheel-store {store_url}: no such file (the store `flywheel mine` read)")
    fw = Store(store_url)
    try:
        with fw.engine.connect() as c:
            if c.execute(sa.select(versions.c.name).where(versions.c.name == version)).first() is None:
                raise InputError(f"--flywheel-version {version!r}: no such version in the flywheel store")
        vdir = version_dir(out_dir, version)
        recs: list[Record] = []
        for name in ("sft.jsonl", "pairs.jsonl"):
            p = vdir / name
            if not p.exists():
                raise InputError(f"{p}: missing (the version's files are under --flywheel-out)")
            with open(p, "rb") as f:
                recs += [Record.from_trusted(orjson.loads(line)) for line in f if line.strip()]
        recs = recs[:limit] if limit else recs
        ids = sorted({i for r in recs for i in r.meta.get("interaction_ids", [])})
        events: dict[str, list[dict]] = {}
        for i in range(0, len(ids), 500):
            for e in fw.feedback_for(ids[i:i + 500]):
                events.setdefault(e["interaction_id"], []).append(
                    {"kind": e["kind"], "value": e["value"], "created_at": e["created_at"]})
        rows = []
        for r in recs:
            inter = []
            for iid in r.meta.get("interaction_ids", []):
                row = fw.interaction(iid) or {}
                inter.append({"id": iid, "created_at": row.get("created_at"), "model": row.get("model"),
                              "model_version": row.get("model_version"), "feedback": events.get(iid, [])})
            rows.append(item_row(r, {"interactions": inter, "mined_from": r.meta.get("mined_from"), "version": version}))
        return rows
    finally:
        fw.close()


def safe_url(url: str) -> str:
    """A store URL without its password, as the queue records it (export asks for the URL again
    when the recorded one cannot open the store)."""
    if "://" not in url:
        return url
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url.split("@")[-1]


def create_queue(store: ReviewStore, name: str, rubric: Rubric, overlap: int, reviewers: list[str] | None,
                 data: Path | None = None, flywheel: dict | None = None, limit: int | None = None) -> dict:
    if (data is None) == (flywheel is None):
        raise InputError("give --data FILE or --flywheel-version V (one of them)")
    rejected: dict[str, int] = {}
    if data is not None:
        rows, rejected = from_file(data, limit)
        source: dict = {"data": str(data)}
    else:
        rows = from_flywheel(flywheel["store"], flywheel["version"], Path(flywheel["out"]), limit)
        source = {"flywheel": {"store": safe_url(flywheel["store"]), "version": flywheel["version"], "out": str(flywheel["out"])}}
    if not rows:
        raise InputError(f"no records to review ({'rejected: ' + ', '.join(f'{k} {v}' for k, v in rejected.items()) if rejected else 'the input is empty'})")
    made = store.create_queue(name, rubric.as_dict(), rubric.version, overlap, reviewers, iter(rows), source)
    return {**made, "rejected": rejected, "rubric_version": rubric.version, "source": source}


