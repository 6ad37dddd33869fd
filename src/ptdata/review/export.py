"""`ptdata review export`: a queue's answers as an immutable dataset version, like a mined
flywheel version: OUT/VERSION/{sft,pairs,prompts,rejects}.jsonl + manifest.json, registered in
the review store in the transaction that moves the files into place.

- A record the reviewers accepted (more accepts than rejects; every reviewed record when the
  rubric has no decision) is written with the mean human rating per aspect in
  `scores["human.<aspect>"]` (pairs: `human.chosen.<aspect>` / `human.rejected.<aspect>`).
- A pair is written the way the reviewers chose: kept, or flipped when most picked the
  record's `rejected` side (the judge's per-side scores flip with it); a tie or a split vote on
  the choice goes to the rejects (`human_tie`, `human_disputed`).
- Each correction is a new SFT record (the conversation with the corrected answer) and a
  correction-vs-original pair.
- A rejected record goes to the rejects with reason `human_rejected` and the notes; an even
  accept/reject split with `human_disputed`.
- Every record lists its reviewers (salted hashes), when they answered and the rubric version
  in `meta.review`.

For a queue made from a flywheel version, the decisions also go back into the flywheel store
as feedback events (idempotent event ids), so the next `ptdata flywheel mine` uses them:
accept/reject as thumbs up/down, a correction as a correction, a pair choice as a choice
between the two interactions, a note as a comment.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from ..errors import InputError, RecordError
from ..flywheel.mine import check_version_name, version_dir
from ..records import Record
from ..validation import validate
from .store import ReviewStore, exports


def _mean(xs: list[float]) -> float:
    return round(sum(xs) / len(xs), 4)


def _prompt_and_answer(rec: Record) -> tuple[list[dict], list[dict]]:
    """An SFT record as (the turns before its last assistant turn, that turn)."""
    msgs = rec.messages
    for i in range(len(msgs) - 1, -1, -1):
        if msgs[i]["role"] == "assistant":
            return msgs[:i], [msgs[i]]
    return msgs, []


def _flip(rec: Record) -> Record:
    """The pair the other way round: sides and per-side scores swapped."""
    scores = {}
    for k, v in rec.scores.items():
        if k.startswith("chosen."):
            scores["rejected." + k[7:]] = v
        elif k.startswith("rejected."):
            scores["chosen." + k[9:]] = v
        elif k == "margin" and isinstance(v, (int, float)):
            scores[k] = -v
        elif k == "judge.agrees" and isinstance(v, (int, float)):
            scores[k] = 1.0 - v
        else:
            scores[k] = v
    return Record("preference", rec.messages, rec.rejected, rec.chosen, scores, dict(rec.meta))


def _review_meta(name: str, seq: int, rows: list[dict], hashes: dict[str, str], rubric_version: str) -> dict[str, Any]:
    labels: Counter = Counter()
    for r in rows:
        for qid, picked in (r["answer"].get("labels") or {}).items():
            labels.update(f"{qid}:{o}" for o in picked)
    return {"queue": name, "item": seq, "rubric_version": rubric_version,
            "reviewers": [hashes[r["reviewer"]] for r in rows],
            "answered_at": [r["updated_at"] for r in rows],
            "decisions": [r["answer"].get("decision") for r in rows],
            "labels": dict(labels), "notes": [r["answer"]["note"] for r in rows if r["answer"].get("note")],
            **({"choices": [r["answer"].get("choice") for r in rows]} if any("choice" in r["answer"] for r in rows) else {})}


def _outcome(rows: list[dict], has_decision: bool) -> str:
    if not has_decision:
        return "accept"
    c = Counter(r["answer"].get("decision") for r in rows)
    return "accept" if c["accept"] > c["reject"] else "reject" if c["reject"] > c["accept"] else "disputed"


def build(name: str, items: dict[int, dict], answers: list[dict], rubric: dict, rubric_version: str,
          hashes: dict[str, str]) -> tuple[dict[str, list[Record]], list[dict], Counter]:
    """Records by file (sft, pairs, prompts), reject rows, and counts."""
    by_item: dict[int, list[dict]] = defaultdict(list)
    for a in answers:
        by_item[a["item_seq"]].append(a)
    aspects = [q["id"] for q in rubric["questions"] if q["type"] == "rating"]
    has_decision = any(q["type"] == "decision" for q in rubric["questions"])
    out: dict[str, list[Record]] = {"sft": [], "pairs": [], "prompts": []}
    rejects: list[dict] = []
    counts: Counter = Counter()
    for seq in sorted(by_item):
        rows, it = by_item[seq], items[seq]
        rec = Record.from_trusted(it["record"])
        meta_r = _review_meta(name, seq, rows, hashes, rubric_version)
        pair = rec.kind == "preference"
        # corrections: new SFT records and correction-vs-original pairs, whatever the decision
        for r in rows:
            fix = r["answer"].get("correction")
            if not fix:
                continue
            who = {"reviewer": hashes[r["reviewer"]], "answered_at": r["updated_at"]}
            if pair:
                prompt, orig = rec.messages, (rec.chosen if fix["of"] == "chosen" else rec.rejected) or []
            else:
                prompt, orig = _prompt_and_answer(rec)
            meta = {**{k: v for k, v in rec.meta.items() if k in ("source", "interaction_ids", "model", "model_version")},
                    "mined_from": "human_correction", "review": {**meta_r, **who, "correction_of": rec.id, "side": fix["of"]}}
            answer = [{"role": "assistant", "content": fix["text"]}]
            out["sft"].append(Record("sft", prompt + answer, meta=meta))
            counts["corrections"] += 1
            if orig:
                out["pairs"].append(Record("preference", prompt, answer, orig, meta={**meta, "mined_from": "human_correction_vs_original"}))
        outcome = _outcome(rows, has_decision)
        if outcome != "accept":
            reason = "human_rejected" if outcome == "reject" else "human_disputed"
            rejects.append({"op": "review", "reason": reason, "detail": " | ".join(meta_r["notes"])[:2000],
                            "notes": meta_r["notes"], "record": rec.to_dict(), "review": meta_r})
            counts[reason] += 1
            continue
        scores = dict(rec.scores)
        if pair:
            picks = Counter(r["answer"].get("choice") for r in rows if r["answer"].get("choice"))
            top = picks.most_common()
            if not top or (len(top) > 1 and top[0][1] == top[1][1]):
                rejects.append({"op": "review", "reason": "human_disputed", "detail": "the reviewers split on the choice",
                                "notes": meta_r["notes"], "record": rec.to_dict(), "review": meta_r})
                counts["human_disputed"] += 1
                continue
            if top[0][0] == "tie":
                rejects.append({"op": "review", "reason": "human_tie", "detail": "the reviewers found both sides equal",
                                "notes": meta_r["notes"], "record": rec.to_dict(), "review": meta_r})
                counts["human_tie"] += 1
                continue
            flip = top[0][0] == "rejected"
            for side in ("chosen", "rejected"):
                for a in aspects:
                    vals = [r["answer"]["ratings"][f"{side}.{a}"] for r in rows if f"{side}.{a}" in (r["answer"].get("ratings") or {})]
                    if vals:
                        out_side = {"chosen": "rejected", "rejected": "chosen"}[side] if flip else side
                        scores[f"human.{out_side}.{a}"] = _mean(vals)
            base = _flip(Record("preference", rec.messages, rec.chosen, rec.rejected, rec.scores, dict(rec.meta))) if flip else rec
            base.scores.update({k: v for k, v in scores.items() if k.startswith("human.")})
            base.meta = {**base.meta, "review": {**meta_r, "choice": "flipped" if flip else "kept"}}
            out["pairs"].append(base)
            counts["pairs_flipped" if flip else "pairs_kept"] += 1
            continue
        for a in aspects:
            vals = [r["answer"]["ratings"][a] for r in rows if a in (r["answer"].get("ratings") or {})]
            if vals:
                scores[f"human.{a}"] = _mean(vals)
        rec.scores = scores
        rec.meta = {**rec.meta, "review": meta_r}
        out["sft" if rec.kind == "sft" else "prompts"].append(rec)
        counts["accepted"] += 1
    return out, rejects, counts


def _valid(files: dict[str, list[Record]]) -> tuple[dict[str, list[Record]], list[dict]]:
    """Every written record passes the validation every other command applies; exact copies
    (two reviewers writing the same correction) are written once."""
    bad, seen = [], set()
    ok: dict[str, list[Record]] = {}
    for name, recs in files.items():
        ok[name] = []
        for r in recs:
            try:
                validate(r)
            except RecordError as e:
                bad.append({"op": "validate", "reason": e.reason, "detail": e.detail, "record": r.to_dict()})
                continue
            if r.id in seen:
                continue
            seen.add(r.id)
            ok[name].append(r)
    return ok, bad


def feedback_events(name: str, items: dict[int, dict], answers: list[dict], hashes: dict[str, str]) -> list[dict]:
    """The flywheel feedback events a flywheel queue's answers give (before the user hash)."""
    evs = []
    for a in answers:
        it, ans = items[a["item_seq"]], a["answer"]
        rec = it["record"]
        ids = (rec.get("meta") or {}).get("interaction_ids") or []
        if not ids:
            continue
        h = hashes[a["reviewer"]]
        stem = f"review:{name}:{a['item_seq']}:{h}:r{a['revisions']}"
        user = f"review:{h}"

        def ev(kind: str, iid: str, value: Any) -> None:
            evs.append({"event_id": f"{stem}:{kind}", "interaction_id": iid, "kind": kind, "value": value, "user": user})

        pair = rec.get("kind") == "preference"
        side_id = {"chosen": ids[0], "rejected": ids[1]} if pair and len(ids) >= 2 else {}
        if not pair:
            if ans.get("decision"):
                ev("thumbs", ids[0], "up" if ans["decision"] == "accept" else "down")
            elif ans.get("ratings"):
                ev("rating", ids[0], max(1, min(5, round(sum(ans["ratings"].values()) / len(ans["ratings"])))))
        elif side_id and ans.get("choice") in ("chosen", "rejected") and ids[0] != ids[1]:
            other = "rejected" if ans["choice"] == "chosen" else "chosen"
            ev("choice", side_id[ans["choice"]], {"chosen": side_id[ans["choice"]], "rejected": side_id[other]})
        fix = ans.get("correction")
        if fix and fix["text"].strip():
            ev("correction", side_id.get(fix["of"], ids[0]), fix["text"])
        if ans.get("note") and ans["note"].strip():
            ev("comment", ids[0], ans["note"])
    return evs


def send_feedback(store_url: str, events: list[dict]) -> Counter:
    """Write the events into the flywheel store (as the feedback API would: validated, user
    ids as salted hashes, idempotent by event id); counts by outcome."""
    from pydantic import ValidationError

    from ..flywheel.server import Feedback, hash_user
    from ..flywheel.store import Store

    fw = Store(store_url)
    c: Counter = Counter()
    try:
        salt = os.environ.get("PTDATA_FLYWHEEL_SALT") or fw.salt()
        for e in events:
            try:
                f = Feedback.model_validate(e)
            except ValidationError:
                c["invalid"] += 1
                continue
            if not all(fw.has_interaction(i) for i in f.referenced()):
                c["missing_interaction"] += 1
                continue
            row = {"event_id": f.event_id, "interaction_id": f.interaction_id, "created_at": time.time(), "kind": f.kind,
                   "value": f.value, "user_hash": hash_user(f.user, salt)}
            _, outcome = fw.add_feedback(row)
            c[outcome] += 1
    finally:
        fw.close()
    return c


def export(store: ReviewStore, name: str, out_dir: Path, version: str | None = None,
           flywheel_store: str | None = None, to_flywheel: bool = True) -> dict[str, Any]:
    q = store.queue(name)
    if q is None:
        raise InputError(f"no queue {name!r} (ptdata review list shows them)")
    earlier = store.exports_of(q["id"])
    version = version or f"{name}-{len(earlier) + 1}"
    final = version_dir(out_dir, check_version_name(version))
    with store.engine.connect() as c:
        if c.execute(sa.select(exports.c.name).where(exports.c.name == version)).first():
            raise InputError(f"version {version!r} exists; versions are immutable: export into a new name")
    if final.exists():
        raise InputError(f"{final} exists; versions are immutable: export into a new name")
    answers = store.answers_of(q["id"])
    seqs = sorted({a["item_seq"] for a in answers})
    items = {it["seq"]: it for it in store.items_of(q["id"], seqs)} if seqs else {}
    hashes = {n: store.reviewer_hash(n) for n in {a["reviewer"] for a in answers}}
    files, rejects, counts = build(name, items, answers, q["rubric"], q["rubric_version"], hashes)
    files, invalid = _valid(files)
    rejects += invalid
    counts.update({"items": q["items"], "reviewed": len(seqs), "unreviewed": q["items"] - len(seqs), "answers": len(answers),
                   **{k: len(v) for k, v in files.items()}, "rejects": len(rejects)})
    manifest = {"version": version, "queue": name, "parent": earlier[-1]["name"] if earlier else None, "created_at": time.time(),
                "rubric_version": q["rubric_version"], "rubric": q["rubric"], "source": q["source"], "counts": dict(counts)}
    fw = (q["source"] or {}).get("flywheel")
    if fw and to_flywheel and answers:
        events = feedback_events(name, items, answers, hashes)
        manifest["flywheel_feedback"] = dict(send_feedback(flywheel_store or fw["store"], events)) | {"events": len(events)}
    written = sum(len(v) for v in files.values())
    if not written and not rejects:
        return {**manifest, "written": False}
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=final.parent))
    staged = tmp / "files"
    try:
        staged.mkdir()
        for fname, recs in files.items():
            if recs or fname != "prompts":
                (staged / f"{fname}.jsonl").write_bytes(b"".join(orjson.dumps(r.to_dict()) + b"\n" for r in recs))
        (staged / "rejects.jsonl").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in rejects))
        (staged / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        try:
            with store.write() as c:
                if c.execute(sa.select(exports.c.name).where(exports.c.name == version)).first():
                    raise InputError(f"version {version!r} exists; versions are immutable: export into a new name")
                c.execute(exports.insert().values(name=version, queue_id=q["id"], created_at=manifest["created_at"],
                                                  manifest=manifest))
                staged.rename(final)
        except sa.exc.IntegrityError:
            raise InputError(f"version {version!r} exists; versions are immutable: export into a new name") from None
        except BaseException:
            if final.exists() and not staged.exists():
                final.rename(staged)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**manifest, "written": True, "dir": str(final)}
