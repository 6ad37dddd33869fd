"""Mine the store into an immutable, versioned dataset of SFT records and preference pairs.

A version reads the interactions that came in since its parent was mined, and the earlier
ones that got feedback since then (a late correction, a human review's decisions).

SFT: answers with positive feedback (thumbs up or a rating >= `min_rating`) and no negative
event, and corrected answers. Pairs: correction vs original; an up-voted vs a down-voted
answer to the same prompt; a regenerated answer vs the one it replaced (unless the new one was
voted down); "chose A over B". Then: consent (no content, no record), PII scrubbing, the
curation ops given, exact dedup within the version and against every earlier version. Every
record names its interactions (`meta.interaction_ids`); every interaction that yields nothing
is listed in the rejects with the reason, so mined + unused = interactions read. Mined records
go through the same validation as every other command's (an answer of spaces is no answer).

Held-out evaluation split: before anything is mined, a share of the conversations
(`eval_share`, 0.1 by default) is set aside. The conversation of an interaction is its
conversation id when the client sent one (`X-PTData-Conversation`), else its prompt up to and
including the first user message (later turns of one chat repeat that prefix, and so does the
same question asked again). The first version that sees a conversation decides its side: held
out when the salted hash of its key (the store's salt) falls below the share. The side is kept
for good (the `conversation_split` table holds the hashes and sides, never the text), so a
conversation held out once stays held out and one trained on is never evaluated on, whatever
share a later `mine` is given; no version mines a held-out conversation into training data.
The held-out interactions go to `eval.jsonl` (prompt records, PII-scrubbed like everything
mined, with the stored answer, the model version that answered and the human rating, thumbs
and correction where there are), for `ptdata flywheel eval`. Interactions read = interactions
in records or rejects + held-out interactions.

A version is a name matching `VERSION_PATTERN` (`[A-Za-z0-9][A-Za-z0-9._-]{0,63}`): it is
also a folder name under `--out`. Mining holds the store's mining lock, so concurrent runs
take turns; the version's files are written to a temporary folder and moved into place in
the transaction that registers the version, so a version is registered with its files or not
at all, and an existing version's files are never touched.
"""
from __future__ import annotations

import hashlib
import math
import re
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
import xxhash

from ..errors import InputError, RecordError
from ..ops.base import MapOp, Op
from ..ops.pii import Pii
from ..records import Record
from ..text import normalize_for_match
from ..validation import validate
from .store import Store, conversation_split, version_records, versions

VERSION_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_VERSION_RX = re.compile(VERSION_PATTERN)


@dataclass
class MineConfig:
    min_rating: int = 4
    ops: list[Op] = field(default_factory=list)  # map ops run on the mined records (after PII scrubbing)
    pii: str = "redact"  # redact or reject
    pii_ner: bool = False  # also look for names and street addresses (the pii-ner extra)
    eval_share: float = 0.1  # share of conversations held out for evaluation (never mined into training data)


def check_version_name(name: str) -> str:
    """A version name is a plain folder name: no separators, no `..`, not empty."""
    if not isinstance(name, str) or not _VERSION_RX.fullmatch(name):
        raise InputError(f"--version {name!r}: a version name is 1-64 letters, digits, '.', '_' or '-', "
                         f"starting with a letter or digit ({VERSION_PATTERN})")
    return name


def version_dir(out_dir: Path, name: str) -> Path:
    """OUT/NAME, refused unless it resolves to a direct child of OUT."""
    root = Path(out_dir).resolve()
    d = (root / check_version_name(name)).resolve()
    if d.parent != root:
        raise InputError(f"--version {name!r}: {d} is not inside --out {root}")
    return d


def parse_since(s: str | float | None, what: str = "--since") -> float:
    """Epoch seconds from epoch seconds or an ISO date/time (UTC unless it says); finite only."""
    if s is None or s == "":
        return 0.0
    try:
        t = float(s)
    except (TypeError, ValueError):
        t = None
    if t is None:
        try:
            d = datetime.fromisoformat(str(s))
        except ValueError:
            raise InputError(f"{what} {s!r}: give an ISO date/time (2026-11-01 or 2026-11-01T12:00) or epoch seconds") from None
        t = (d if d.tzinfo else d.replace(tzinfo=timezone.utc)).timestamp()
    if not math.isfinite(t):
        raise InputError(f"{what} {s!r}: not a finite time")
    return t


def content_key(rec: Record) -> str:
    """Normalized content: the same conversation mined twice (in any version) has one key."""
    parts = [rec.kind] + [normalize_for_match(m.get("content") or "") for m in rec.messages]
    if rec.kind == "preference":
        parts += ["|chosen|"] + [normalize_for_match(m.get("content") or "") for m in rec.chosen or []]
        parts += ["|rejected|"] + [normalize_for_match(m.get("content") or "") for m in rec.rejected or []]
    return xxhash.xxh3_128_hexdigest("\x1f".join(parts).encode("utf-8", "surrogatepass"))


def _answer(row: dict) -> str | None:
    resp = row.get("response") or {}
    ch = resp.get("choices") or []
    if not ch:
        return None
    msg = ch[0].get("message") or {}
    c = msg.get("content")
    return c if isinstance(c, str) and c.strip() else None


def _prompt(row: dict) -> list[dict] | None:
    req = row.get("request") or {}
    msgs = req.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return None
    out = []
    for m in msgs:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool"):
            return None
        c = m.get("content")
        if not isinstance(c, str):
            return None
        out.append({"role": m["role"], "content": c})
    return out if out[-1]["role"] in ("user", "tool") else None


def _prompt_key(msgs: list[dict]) -> str:
    return xxhash.xxh3_64_hexdigest(orjson.dumps([[m["role"], normalize_for_match(m["content"])] for m in msgs]))


def conversation_key(row: dict) -> str | None:
    """The conversation an interaction belongs to: `c:` + its conversation id when the client
    sent one, else `p:` + a hash of its prompt up to and including the first user message (a
    later turn of the same chat, or the same question asked again, has the same prefix). None
    for an interaction without a usable prompt (no consent, an unsupported request)."""
    if row.get("conversation_id"):
        return "c:" + row["conversation_id"]
    msgs = _prompt(row) if row.get("consent") else None
    if msgs is None:
        return None
    first = next((i for i, m in enumerate(msgs) if m["role"] == "user"), len(msgs) - 1)
    prefix = [[m["role"], normalize_for_match(m["content"])] for m in msgs[:first + 1]]
    return "p:" + xxhash.xxh3_128_hexdigest(orjson.dumps(prefix))


def held_out_hash(key: str, salt: str) -> str:
    """The salted hash a conversation is known by (the `conversation_split` table keeps only this)."""
    return hashlib.sha256(f"{salt}\0held-out\0{key}".encode("utf-8", "surrogatepass")).hexdigest()


def hash_share(h: str) -> float:
    """Where a hash falls in [0, 1): a conversation is held out when this is below the share."""
    return int(h[:16], 16) / float(1 << 64)


def _usable(row: dict) -> tuple[list[dict], str] | None:
    if not row["consent"] or row["status"] != 200:
        return None
    p, a = _prompt(row), _answer(row)
    return (p, a) if p is not None and a is not None else None


def split_held_out(rows: list[dict], salt: str, share: float, known: dict[str, str]
                   ) -> tuple[list[dict], list[tuple[dict, str]], dict[str, str]]:
    """(rows to mine, [(held-out row, its conversation hash)], {new conversation hash: side}): a
    usable interaction is held out when its conversation was held out before (`known`), or is new
    and its hash is below `share`. Unusable interactions stay in the rows to mine, where they are
    rejected with their reason."""
    train, held = [], []
    new: dict[str, str] = {}
    for r in rows:
        k = conversation_key(r) if _usable(r) is not None else None
        if k is None:
            train.append(r)
            continue
        h = held_out_hash(k, salt)
        side = known.get(h) or new.get(h) or ("eval" if hash_share(h) < share else "train")
        if h not in known:
            new[h] = side
        if side == "eval":
            held.append((r, h))
        else:
            train.append(r)
    return train, held, new


def eval_records(held: list[tuple[dict, str]], events: list[dict], pii_op: Pii, redactor: Pii, version: str,
                 late: set[str] | None = None) -> tuple[list[Record], list[dict]]:
    """The held-out interactions as prompt records for `eval.jsonl`, PII handled as for every mined
    record (`pii_op`), and a reject row (redacted) for each one that cannot be an eval prompt.
    No curation op runs on them: they are the traffic as it came."""
    fb: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        fb[e["interaction_id"]].append(e)
    out: list[Record] = []
    rejects: list[dict] = []
    for row, h in held:
        msgs, ans = _usable(row)  # type: ignore[misc]
        evs = fb.get(row["id"], [])
        last = lambda kind: next((e["value"] for e in reversed(evs) if e["kind"] == kind), None)  # noqa: E731
        correction = last("correction")

        def carrier() -> Record:
            """One record that carries every text (prompt, stored answer, correction): one PII pass scrubs them all."""
            return Record("preference", [dict(m) for m in msgs], [{"role": "assistant", "content": ans}],
                          [{"role": "assistant", "content": correction}] if correction else [])

        def as_eval(c: Record) -> Record:
            meta = {"interaction_ids": [row["id"]], "conversation": h[:32], "mined_from": "held_out", "version": version,
                    "created_at": row.get("created_at"), **_model(row), "answer": c.chosen[0]["content"],
                    "correction": c.rejected[0]["content"] if correction else None,
                    "rating": last("rating"), "thumbs": last("thumbs")}
            if late and row["id"] in late:
                meta["late_feedback"] = True
            if c.meta.get("pii"):
                meta["pii"] = c.meta["pii"]
            return Record("prompt", c.messages, meta=meta)

        c = carrier()
        drop = pii_op.check(c)
        op, reason, detail = ("pii", drop.reason, drop.detail) if drop else ("eval", None, "")
        rec = as_eval(c)
        if reason is None:
            try:
                validate(Record("sft", rec.messages + [{"role": "assistant", "content": rec.meta["answer"]}]))
            except RecordError as e:
                reason, detail = e.reason, e.detail
        if reason is not None:
            safe = carrier()
            redactor.check(safe)
            rejects.append({"op": op, "reason": reason, "detail": detail, "held_out": True,
                            "record": as_eval(safe).to_dict(), "interaction_ids": [row["id"]]})
            continue
        out.append(rec)
    return out, rejects


def build_records(rows: list[dict], events: list[dict], min_rating: int) -> tuple[list[Record], list[dict]]:
    """Records from interactions and their feedback, and one reject per unused interaction."""
    by_id = {r["id"]: r for r in rows}
    fb: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        fb[e["interaction_id"]].append(e)
    unusable: dict[str, str] = {}
    usable: dict[str, tuple[list[dict], str]] = {}
    for r in rows:
        if not r["consent"]:
            unusable[r["id"]] = "no_consent"
        elif r["status"] != 200:
            unusable[r["id"]] = "upstream_error"
        elif (p := _prompt(r)) is None:
            unusable[r["id"]] = "unsupported_request"
        elif (a := _answer(r)) is None:
            unusable[r["id"]] = "empty_answer"
        else:
            usable[r["id"]] = (p, a)

    chosen_side = {e["value"]["chosen"] for e in events if e["kind"] == "choice"}
    rejected_side = {e["value"]["rejected"] for e in events if e["kind"] == "choice"}

    def verdict(iid: str, choices: bool = True) -> tuple[bool, bool]:
        """(positive, negative) feedback on an interaction; `choices`: count choice events too."""
        pos = neg = False
        for e in fb.get(iid, []):
            k, v = e["kind"], e["value"]
            if k == "thumbs":
                pos, neg = pos or v == "up", neg or v == "down"
            elif k == "rating":
                pos, neg = pos or v >= min_rating, neg or v <= 2
            elif k in ("correction", "regenerate"):
                neg = True
        if not choices:
            return pos, neg
        # being the chosen side of a choice is positive, the rejected side negative
        return pos or iid in chosen_side, neg or iid in rejected_side

    recs: list[Record] = []
    used: set[str] = set()

    def sft(iid: str, msgs: list[dict], answer: str, source: str, extra: list[str] | None = None) -> None:
        ids = [iid] + (extra or [])
        recs.append(Record("sft", msgs + [{"role": "assistant", "content": answer}],
                           meta={"interaction_ids": ids, "mined_from": source, **_model(by_id[iid])}))
        used.update(ids)

    def pair(msgs: list[dict], chosen: str, rejected: str, source: str, ids: list[str]) -> None:
        recs.append(Record("preference", msgs, [{"role": "assistant", "content": chosen}],
                           [{"role": "assistant", "content": rejected}],
                           meta={"interaction_ids": ids, "mined_from": source, **_model(by_id[ids[0]])}))
        used.update(ids)

    verdicts = {iid: verdict(iid) for iid in usable}
    for iid, (msgs, ans) in usable.items():
        pos, neg = verdicts[iid]
        if pos and not neg:
            sft(iid, msgs, ans, "positive_feedback")
        corrections = [e for e in fb.get(iid, []) if e["kind"] == "correction"]
        if corrections:
            fix = corrections[-1]["value"]
            sft(iid, msgs, fix, "correction")
            if fix.strip() != ans.strip():
                pair(msgs, fix, ans, "correction_vs_original", [iid])
    # up vs down answers to the same prompt (explicit votes; choice events make their own pairs)
    votes = {iid: verdict(iid, choices=False) for iid in usable}
    groups: dict[str, list[str]] = defaultdict(list)
    for iid, (msgs, _) in usable.items():
        groups[_prompt_key(msgs)].append(iid)
    for ids in groups.values():
        ups = [i for i in ids if votes[i][0] and not votes[i][1]]
        downs = [i for i in ids if votes[i][1] and not votes[i][0] and not any(
            e["kind"] == "correction" for e in fb.get(i, []))]
        if ups:
            for d in downs:
                if usable[ups[0]][1].strip() != usable[d][1].strip():
                    pair(usable[ups[0]][0], usable[ups[0]][1], usable[d][1], "up_vs_down", [ups[0], d])
    # regenerate and choice events
    for e in events:
        if e["kind"] == "regenerate" and e["value"] and e["interaction_id"] in usable and e["value"] in usable:
            old, new = e["interaction_id"], e["value"]
            if verdicts[new][1] and not verdicts[new][0]:
                continue
            if _prompt_key(usable[old][0]) == _prompt_key(usable[new][0]) and usable[old][1].strip() != usable[new][1].strip():
                pair(usable[new][0], usable[new][1], usable[old][1], "regenerate", [new, old])
        elif e["kind"] == "choice":
            a, b = e["value"]["chosen"], e["value"]["rejected"]
            if a in usable and b in usable and _prompt_key(usable[a][0]) == _prompt_key(usable[b][0]) \
                    and usable[a][1].strip() != usable[b][1].strip():
                pair(usable[a][0], usable[a][1], usable[b][1], "choice", [a, b])
    rejects = [{"interaction_id": i, "reason": why, "op": "mine"} for i, why in unusable.items()]
    for iid in usable:
        if iid not in used:
            pos, neg = verdicts[iid]
            why = "no_feedback" if not fb.get(iid) and not (pos or neg) else "no_usable_feedback"
            rejects.append({"interaction_id": iid, "reason": why, "op": "mine"})
    return recs, rejects


def _model(row: dict) -> dict:
    return {"model": row.get("model"), "model_version": row.get("model_version")}


def _valid(recs: list[Record], redactor: Pii) -> tuple[list[Record], list[dict]]:
    """The records every other command would accept, and a reject row (PII redacted) for each other one."""
    ok, bad = [], []
    for r in recs:
        try:
            validate(r)
        except RecordError as e:
            bad.append({"op": "validate", "reason": e.reason, "detail": e.detail, "record": _scrubbed(r, redactor),
                        "interaction_ids": r.meta.get("interaction_ids")})
            continue
        ok.append(r)
    return ok, bad


def _scrubbed(rec: Record, redactor: Pii) -> dict:
    """A dropped record as the rejects file may hold it: with its PII redacted."""
    copy = Record.from_dict(orjson.loads(orjson.dumps(rec.to_dict())))
    redactor.check(copy)
    return copy.to_dict()


def _run_ops(recs: list[Record], ops: list[MapOp], redactor: Pii) -> tuple[list[Record], list[dict]]:
    """Run the map ops in order; every reject row's record has its PII redacted."""
    rejects: list[dict] = []
    batch = recs
    for op in ops:
        op.setup()
        batch, dropped = op.process(batch)
        rejects += [{"op": op.name, "reason": d.reason, "detail": d.detail, "record": _scrubbed(r, redactor),
                     "interaction_ids": r.meta.get("interaction_ids")} for r, d in dropped]
    return batch, rejects


def _dedup(batch: list[Record], earlier: set[str], version: str) -> tuple[list[Record], list[str], list[dict]]:
    """The records new to this version and every earlier one, their content keys, and a reject
    row for each other one."""
    kept: list[Record] = []
    keys: list[str] = []
    rejects: list[dict] = []
    seen: set[str] = set()
    for r in batch:
        k = content_key(r)
        if k in earlier or k in seen:
            rejects.append({"op": "dedup", "reason": "in_earlier_version" if k in earlier else "duplicate",
                            "record": r.to_dict(), "interaction_ids": r.meta.get("interaction_ids")})
            continue
        seen.add(k)
        r.meta["version"] = version
        kept.append(r)
        keys.append(k)
    return kept, keys, rejects


def _write_files(vdir: Path, kept: list[Record], rejects: list[dict], manifest: dict, evals: list[Record]) -> None:
    from .card import card_markdown

    vdir.mkdir(parents=True)
    sft = [r.to_dict() for r in kept if r.kind == "sft"]
    pairs = [r.to_dict() for r in kept if r.kind == "preference"]
    for name, items in (("sft.jsonl", sft), ("pairs.jsonl", pairs), ("eval.jsonl", [r.to_dict() for r in evals]),
                        ("rejects.jsonl", rejects)):
        (vdir / name).write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in items))
    (vdir / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    (vdir / "CARD.md").write_text(card_markdown(manifest, []), encoding="utf-8")  # no model is trained on it yet


def _register(store: Store, staged: Path, final: Path, manifest: dict, kept: list[Record], keys: list[str],
              sides: dict[str, str] | None = None) -> None:
    """Insert the version and move its files into place in one transaction: a version is
    registered with its files, or neither is there."""
    name = manifest["version"]
    try:
        with store.write_transaction() as c:
            if c.execute(sa.select(versions.c.name).where(versions.c.name == name)).first():
                raise InputError(f"version {name!r} exists; versions are immutable: mine into a new name")
            c.execute(versions.insert().values(name=name, created_at=time.time(), parent=manifest["parent"],
                                               counts=manifest["counts"], manifest=manifest))
            if kept:
                c.execute(version_records.insert(), [{"version": name, "record_id": r.id, "content_key": k, "kind": r.kind,
                                                       "interaction_ids": r.meta["interaction_ids"]}
                                                      for r, k in zip(kept, keys)])
            if sides:
                now = time.time()
                c.execute(conversation_split.insert(), [{"key": h, "side": side, "version": name, "created_at": now}
                                                        for h, side in sorted(sides.items())])
            staged.rename(final)
    except sa.exc.IntegrityError:
        raise InputError(f"version {name!r} exists; versions are immutable: mine into a new name") from None
    except BaseException:
        if final.exists() and not staged.exists():
            staged.parent.mkdir(parents=True, exist_ok=True)
            final.rename(staged)  # the transaction rolled back: so do the files
        raise


def mine(store: Store, version: str, out_dir: Path, since: float | None = None, until: float | None = None,
         cfg: MineConfig | None = None) -> dict[str, Any]:
    """Write OUT/NAME/{sft,pairs,eval,rejects}.jsonl + manifest.json + CARD.md and register the version.
    By default a version mines what came in after its parent was mined. When no record is
    mined, nothing is written or registered (`written` is False in the returned manifest)."""
    cfg = cfg or MineConfig()
    final = version_dir(out_dir, version)
    for t, what in ((since, "--since"), (until, "--until")):
        if t is not None and not math.isfinite(t):
            raise InputError(f"{what} {t!r}: not a finite time")
    if any(not isinstance(o, MapOp) for o in cfg.ops):
        raise InputError("mining runs map ops only (dedup against earlier versions is built in)")
    if not (isinstance(cfg.eval_share, (int, float)) and 0 <= cfg.eval_share < 1):
        raise InputError(f"--eval-share {cfg.eval_share!r}: a share of conversations in [0, 1)")
    pii_op = Pii(action=cfg.pii, ner=cfg.pii_ner)
    redactor = Pii(action="redact", ner=cfg.pii_ner)
    ops: list[MapOp] = [pii_op, *cfg.ops]
    with store.mining_lock():
        with store.engine.connect() as c:
            if c.execute(sa.select(versions.c.name).where(versions.c.name == version)).first():
                raise InputError(f"version {version!r} exists; versions are immutable: mine into a new name")
            last = c.execute(sa.select(versions.c.name, versions.c.manifest)
                             .order_by(versions.c.created_at.desc()).limit(1)).first()
            earlier = {r[0] for r in c.execute(sa.select(version_records.c.content_key))}
        if final.exists():
            raise InputError(f"{final} exists but is no version in this store; move it away or mine into a new name")
        parent = last[0] if last else None
        if since is None:
            since = float(last[1]["until"]) if last else 0.0
        until = until if until is not None else time.time()
        rows = list(store.interactions(since, until))
        # feedback that came after its interaction was mined (a late correction, a human review):
        # the interaction is read again; what it gave before is dropped as in_earlier_version
        late = store.late_feedback_interactions(since, until) if since > 0 else []
        rows += late
        ids = [r["id"] for r in rows]
        events = sorted((e for i in range(0, len(ids), 500) for e in store.feedback_for(ids[i:i + 500])),
                        key=lambda e: (e["created_at"], e["event_id"]))
        train_rows, held, sides = split_held_out(rows, store.salt(), float(cfg.eval_share), store.conversation_sides())
        evals, eval_rejects = eval_records(held, events, pii_op, redactor, version, {r["id"] for r in late})
        recs, rejects = build_records(train_rows, events, cfg.min_rating)
        recs, invalid = _valid(recs, redactor)
        batch, dropped = _run_ops(recs, ops, redactor)
        kept, keys, dups = _dedup(batch, earlier, version)
        mined_rejects = invalid + dropped + dups
        n_sft = sum(1 for r in kept if r.kind == "sft")
        counts = {"interactions": len(rows), "late_feedback_interactions": len(late), "feedback": len(events), "sft": n_sft,
                  "pairs": len(kept) - n_sft,
                  "by_source": dict(Counter(r.meta["mined_from"] for r in kept)),
                  "unused_interactions": dict(Counter(x["reason"] for x in rejects)),
                  "dropped_records": dict(Counter(x["reason"] for x in mined_rejects)),
                  "pii_redacted_records": sum(1 for r in kept if r.meta.get("pii")),
                  "held_out_interactions": len(held), "held_out_conversations": len({h for _, h in held}),
                  "eval": len(evals), "eval_dropped": dict(Counter(x["reason"] for x in eval_rejects))}
        manifest = {"version": version, "parent": parent, "since": since, "until": until, "min_rating": cfg.min_rating,
                    "eval_share": float(cfg.eval_share), "pii": {"action": cfg.pii, "ner": cfg.pii_ner},
                    "ops": [{type(o).name: o.params()} for o in ops], "counts": counts}
        if not kept:  # nothing new: no version, so what came in stays in the next version's window
            return {**manifest, "written": False}
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=final.parent))
        staged = tmp / "files"
        try:
            _write_files(staged, kept, rejects + mined_rejects + eval_rejects, manifest, evals)
            _register(store, staged, final, manifest, kept, keys, sides)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return {**manifest, "written": True}


def list_versions(store: Store) -> list[dict]:
    with store.engine.connect() as c:
        return [{str(k): v for k, v in r.items()} for r in
                c.execute(sa.select(versions.c.name, versions.c.created_at, versions.c.parent, versions.c.counts)
                          .order_by(versions.c.created_at)).mappings()]
