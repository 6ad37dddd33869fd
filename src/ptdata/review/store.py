"""The review store: reviewers, sessions, queues, items, assignments and answers, through
SQLAlchemy Core on the flywheel's kind of store (SQLite in WAL mode by default, PostgreSQL for
production) with numbered migrations of its own (`review_schema_migrations`), so the review
tables can live in the flywheel's own database or in a file of their own.

Tokens and session ids are stored only as SHA-256 hashes. A reviewer's "next record" is one
index seek (`ix_review_assign_open`: queue, reviewer, done, position) and progress counters are
kept per (queue, reviewer) in the submitting transaction, so neither scans a queue.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
import time
from typing import Any, Callable, Iterable, Iterator

import sqlalchemy as sa

from ..errors import InputError
from ..flywheel.store import (JSONT, _row, migrate, migrations_table_named, open_migrated, settings_table,
                              write_transaction)

meta = sa.MetaData()
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_NAME_RX = re.compile(NAME_PATTERN)
ROLES = ("reviewer", "admin")
SESSION_TTL = 12 * 3600.0

reviewers = sa.Table(
    "review_reviewers", meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(10), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
)

sessions = sa.Table(
    "review_sessions", meta,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("reviewer_id", sa.Integer, sa.ForeignKey("review_reviewers.id"), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
)

queues = sa.Table(
    "review_queues", meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("rubric", JSONT, nullable=False),
    sa.Column("rubric_version", sa.String(16), nullable=False),
    sa.Column("overlap", sa.Integer, nullable=False),
    sa.Column("source", JSONT, nullable=False),  # {"data": path} or {"flywheel": {store, version, out}}
    sa.Column("items", sa.Integer, nullable=False),
    sa.Column("kinds", JSONT, nullable=False),  # items per view
    sa.Column("seed", sa.String(64), nullable=False),  # keys the per-item position swap of pairs
)

members = sa.Table(
    "review_members", meta,  # a reviewer's share of a queue, with the progress counter
    sa.Column("queue_id", sa.Integer, sa.ForeignKey("review_queues.id"), nullable=False),
    sa.Column("reviewer_id", sa.Integer, sa.ForeignKey("review_reviewers.id"), nullable=False, index=True),
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("done", sa.Integer, nullable=False),
    sa.PrimaryKeyConstraint("queue_id", "reviewer_id"),
)

items = sa.Table(
    "review_items", meta,
    sa.Column("queue_id", sa.Integer, sa.ForeignKey("review_queues.id"), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("record_id", sa.String(40), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("view", sa.String(20), nullable=False),  # chat, pair, distill, interaction
    sa.Column("record", JSONT, nullable=False),
    sa.Column("context", JSONT),  # a flywheel record's interactions and their feedback events
    sa.PrimaryKeyConstraint("queue_id", "seq"),
)

assignments = sa.Table(
    "review_assignments", meta,
    sa.Column("queue_id", sa.Integer, nullable=False),
    sa.Column("reviewer_id", sa.Integer, sa.ForeignKey("review_reviewers.id"), nullable=False),
    sa.Column("pos", sa.Integer, nullable=False),  # the record's place in this reviewer's list
    sa.Column("item_seq", sa.Integer, nullable=False),
    sa.Column("swap", sa.Boolean, nullable=False),  # pairs: the rejected side is shown on the left
    sa.Column("done", sa.Boolean, nullable=False),
    sa.PrimaryKeyConstraint("queue_id", "reviewer_id", "pos"),
    sa.ForeignKeyConstraint(["queue_id", "item_seq"], ["review_items.queue_id", "review_items.seq"]),
    sa.UniqueConstraint("queue_id", "item_seq", "reviewer_id", name="uq_review_assign_item"),
    sa.Index("ix_review_assign_open", "queue_id", "reviewer_id", "done", "pos"),
)

answers = sa.Table(
    "review_answers", meta,
    sa.Column("queue_id", sa.Integer, nullable=False),
    sa.Column("reviewer_id", sa.Integer, nullable=False),
    sa.Column("pos", sa.Integer, nullable=False),
    sa.Column("item_seq", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("revisions", sa.Integer, nullable=False),
    sa.Column("rubric_version", sa.String(16), nullable=False),
    sa.Column("answer", JSONT, nullable=False),  # in the record's terms: chosen/rejected, never left/right
    sa.PrimaryKeyConstraint("queue_id", "reviewer_id", "pos"),
    sa.ForeignKeyConstraint(["queue_id", "reviewer_id", "pos"],
                            ["review_assignments.queue_id", "review_assignments.reviewer_id", "review_assignments.pos"]),
    sa.Index("ix_review_answers_item", "queue_id", "item_seq"),
)

exports = sa.Table(
    "review_exports", meta,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("queue_id", sa.Integer, sa.ForeignKey("review_queues.id"), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("manifest", JSONT, nullable=False),
)

settings = settings_table("review_settings", meta)  # the reviewer-hash salt
migrations_table = migrations_table_named("review_schema_migrations", meta)


def _m1(conn: sa.Connection) -> None:
    for t in (reviewers, sessions, queues, members, items, assignments, answers, exports, settings):
        t.create(conn, checkfirst=True)


MIGRATIONS: list[Callable[[sa.Connection], None]] = [_m1]  # append only; never edit an applied one


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RX.fullmatch(name):
        raise InputError(f"{what} {name!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


class ReviewStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = open_migrated(url, migrations_table, MIGRATIONS, "the review store")

    def migrate(self) -> int:
        return migrate(self.engine, migrations_table, MIGRATIONS)

    def close(self) -> None:
        self.engine.dispose()

    def write(self) -> contextlib.AbstractContextManager[sa.Connection]:
        """A transaction holding the write lock from its start, for a read-then-write."""
        return write_transaction(self.engine)

    def salt(self) -> str:
        """The store's random salt for reviewer hashes in exports (made on first use, kept)."""
        q = sa.select(settings.c.value).where(settings.c.key == "reviewer_salt")
        with self.engine.connect() as conn:
            v = conn.execute(q).scalar()
        if v is not None:
            return v
        try:
            with self.engine.begin() as conn:
                conn.execute(settings.insert().values(key="reviewer_salt", value=secrets.token_hex(32)))
        except sa.exc.IntegrityError:
            pass
        with self.engine.connect() as conn:
            return conn.execute(q).scalar_one()

    def reviewer_hash(self, name: str) -> str:
        return hashlib.sha256((self.salt() + "\0" + name).encode()).hexdigest()[:16]

    # ---- reviewers and sessions ------------------------------------------------------------
    def add_reviewer(self, name: str, role: str = "reviewer") -> str:
        """Create a reviewer and return the token (shown once; only its hash is kept)."""
        check_name(name, "reviewer")
        if role not in ROLES:
            raise InputError(f"--role {role!r}: reviewer or admin")
        token = "rv_" + secrets.token_urlsafe(24)
        try:
            with self.engine.begin() as conn:
                conn.execute(reviewers.insert().values(name=name, role=role, token_hash=token_hash(token),
                                                       created_at=time.time(), active=True))
        except sa.exc.IntegrityError:
            raise InputError(f"reviewer {name!r} exists") from None
        return token

    def reviewer_by_token(self, token: str) -> dict | None:
        h = token_hash(token)
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(reviewers).where(reviewers.c.token_hash == h)).mappings().first()
        # the lookup is by hash; the comparison below is constant time (no prefix-timing hint)
        if r is None or not r["active"] or not hmac.compare_digest(r["token_hash"], h):
            return None
        return _row(r)

    def reviewers(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(sa.select(reviewers.c.id, reviewers.c.name, reviewers.c.role,
                                                            reviewers.c.created_at, reviewers.c.active)
                                                  .order_by(reviewers.c.id)).mappings()]

    def new_session(self, reviewer_id: int) -> tuple[str, str]:
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(sessions.delete().where(sessions.c.expires_at < now))
            conn.execute(sessions.insert().values(id_hash=token_hash(sid), reviewer_id=reviewer_id, csrf=csrf,
                                                  created_at=now, expires_at=now + SESSION_TTL))
        return sid, csrf

    def session(self, sid: str) -> tuple[dict, str] | None:
        """(reviewer, csrf token) of a live session."""
        q = (sa.select(reviewers, sessions.c.csrf, sessions.c.expires_at)
             .join(sessions, sessions.c.reviewer_id == reviewers.c.id).where(sessions.c.id_hash == token_hash(sid)))
        with self.engine.connect() as conn:
            r = conn.execute(q).mappings().first()
        if r is None or r["expires_at"] < time.time() or not r["active"]:
            return None
        d = _row(r)
        return d, d.pop("csrf")

    def end_session(self, sid: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sessions.delete().where(sessions.c.id_hash == token_hash(sid)))

    # ---- queues ---------------------------------------------------------------------------
    def create_queue(self, name: str, rubric: dict, rubric_version: str, overlap: int, reviewer_names: list[str] | None,
                     rows: Iterable[dict], source: dict) -> dict:
        """A queue of `rows` ({record_id, kind, view, record, context}), each assigned to `overlap`
        reviewers, round robin over the reviewers (balanced: each gets the same share and each
        pair of reviewers shares as many records as any other). Pairs are shown swapped to
        every other reviewer of a record, from a random start per record."""
        check_name(name, "queue")
        people = self.reviewers()
        by_name = {r["name"]: r for r in people}
        if reviewer_names:
            unknown = [n for n in reviewer_names if n not in by_name]
            if unknown:
                raise InputError(f"--reviewers: no reviewer {', '.join(map(repr, unknown))} (ptdata review add-reviewer NAME)")
            if len(set(reviewer_names)) != len(reviewer_names):
                raise InputError("--reviewers: a name repeats")
            chosen = [by_name[n] for n in reviewer_names]
        else:
            chosen = [r for r in people if r["role"] == "reviewer" and r["active"]]
        if not chosen:
            raise InputError("no reviewers: add some first (ptdata review add-reviewer NAME), or pass --reviewers")
        if not 1 <= overlap <= len(chosen):
            raise InputError(f"--overlap {overlap}: between 1 and the number of reviewers ({len(chosen)})")
        seed = secrets.token_hex(16)
        ids = [r["id"] for r in chosen]
        n_rev = len(ids)
        pos = {i: 0 for i in ids}
        kinds: dict[str, int] = {}
        with self.write() as conn:
            if conn.execute(sa.select(queues.c.id).where(queues.c.name == name)).first():
                raise InputError(f"queue {name!r} exists")
            qid = conn.execute(queues.insert().values(name=name, created_at=time.time(), rubric=rubric,
                                                      rubric_version=rubric_version, overlap=overlap, source=source,
                                                      items=0, kinds={}, seed=seed)).inserted_primary_key[0]
            batch_items: list[dict] = []
            batch_assign: list[dict] = []

            def flush() -> None:
                if batch_items:
                    conn.execute(items.insert(), batch_items)
                if batch_assign:
                    conn.execute(assignments.insert(), batch_assign)
                batch_items.clear()
                batch_assign.clear()

            seq = 0
            for row in rows:
                batch_items.append({"queue_id": qid, "seq": seq, **row})
                kinds[row["view"]] = kinds.get(row["view"], 0) + 1
                base = hmac.new(seed.encode(), str(seq).encode(), hashlib.sha256).digest()[0] & 1
                for j in range(overlap):
                    rid = ids[(seq * overlap + j) % n_rev]
                    batch_assign.append({"queue_id": qid, "reviewer_id": rid, "pos": pos[rid], "item_seq": seq,
                                         "swap": row["kind"] == "preference" and bool(base ^ (j & 1)), "done": False})
                    pos[rid] += 1
                seq += 1
                if len(batch_items) >= 2000:
                    flush()
            flush()
            if seq == 0:
                raise InputError("no records to review")
            conn.execute(queues.update().where(queues.c.id == qid).values(items=seq, kinds=kinds))
            conn.execute(members.insert(), [{"queue_id": qid, "reviewer_id": i, "total": pos[i], "done": 0} for i in ids])
        return {"queue": name, "items": seq, "kinds": kinds, "overlap": overlap,
                "reviewers": {r["name"]: pos[r["id"]] for r in chosen}}

    def queue(self, name: str) -> dict | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(queues).where(queues.c.name == name)).mappings().first()
        return _row(r) if r else None

    def queues(self, reviewer_id: int | None = None) -> list[dict]:
        """Every queue (admin) or a reviewer's own, with progress (the reviewer's, or everyone's)."""
        with self.engine.connect() as conn:
            if reviewer_id is None:
                sums = (sa.select(members.c.queue_id, sa.func.sum(members.c.done).label("done"),
                                  sa.func.sum(members.c.total).label("total")).group_by(members.c.queue_id).subquery())
                q = (sa.select(queues.c.id, queues.c.name, queues.c.created_at, queues.c["items"], queues.c.overlap,
                               queues.c.kinds, sa.func.coalesce(sums.c.done, 0).label("done"),
                               sa.func.coalesce(sums.c.total, 0).label("total"))
                     .select_from(queues.outerjoin(sums, sums.c.queue_id == queues.c.id)).order_by(queues.c.id))
            else:
                q = (sa.select(queues.c.id, queues.c.name, queues.c.created_at, queues.c["items"], queues.c.overlap,
                               queues.c.kinds, members.c.done, members.c.total)
                     .join(members, members.c.queue_id == queues.c.id).where(members.c.reviewer_id == reviewer_id)
                     .order_by(queues.c.id))
            return [_row(r) for r in conn.execute(q).mappings()]

    def member(self, queue_id: int, reviewer_id: int) -> dict | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(members).where(members.c.queue_id == queue_id,
                                                      members.c.reviewer_id == reviewer_id)).mappings().first()
        return _row(r) if r else None

    def progress(self, queue_id: int) -> list[dict]:
        q = (sa.select(reviewers.c.name, reviewers.c.id, members.c.done, members.c.total)
             .join(members, members.c.reviewer_id == reviewers.c.id).where(members.c.queue_id == queue_id)
             .order_by(reviewers.c.name))
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(q).mappings()]

    # ---- a reviewer's records ----------------------------------------------------------------
    def next_open(self, queue_id: int, reviewer_id: int, after: int = -1) -> int | None:
        """The position of the reviewer's first record not yet answered (after `after`, wrapping)."""
        base = sa.select(assignments.c.pos).where(assignments.c.queue_id == queue_id,
                                                  assignments.c.reviewer_id == reviewer_id,
                                                  assignments.c.done == sa.false())
        with self.engine.connect() as conn:
            p = conn.execute(base.where(assignments.c.pos > after).order_by(assignments.c.pos).limit(1)).scalar()
            if p is None and after >= 0:
                p = conn.execute(base.order_by(assignments.c.pos).limit(1)).scalar()
        return p

    def assignment(self, queue_id: int, reviewer_id: int, pos: int) -> dict | None:
        """One of the reviewer's records with its item and the reviewer's own answer (no one else's)."""
        q = (sa.select(assignments.c.pos, assignments.c.item_seq, assignments.c.swap, assignments.c.done,
                       items.c.record_id, items.c.kind, items.c.view, items.c.record, items.c.context,
                       answers.c.answer, answers.c.updated_at, answers.c.revisions)
             .join(items, sa.and_(items.c.queue_id == assignments.c.queue_id, items.c.seq == assignments.c.item_seq))
             .outerjoin(answers, sa.and_(answers.c.queue_id == assignments.c.queue_id,
                                         answers.c.reviewer_id == assignments.c.reviewer_id,
                                         answers.c.pos == assignments.c.pos))
             .where(assignments.c.queue_id == queue_id, assignments.c.reviewer_id == reviewer_id, assignments.c.pos == pos))
        with self.engine.connect() as conn:
            r = conn.execute(q).mappings().first()
        return _row(r) if r else None

    def submit(self, queue_id: int, reviewer_id: int, pos: int, answer: dict[str, Any], rubric_version: str) -> bool:
        """Store (or revise) the reviewer's answer; True when it was the first answer to it."""
        now = time.time()
        key = (answers.c.queue_id == queue_id, answers.c.reviewer_id == reviewer_id, answers.c.pos == pos)
        akey = (assignments.c.queue_id == queue_id, assignments.c.reviewer_id == reviewer_id, assignments.c.pos == pos)
        with self.write() as conn:
            a = conn.execute(sa.select(assignments.c.item_seq, assignments.c.done).where(*akey)).first()
            if a is None:
                raise KeyError(pos)
            old = conn.execute(sa.select(answers.c.revisions).where(*key)).first()
            if old is None:
                conn.execute(answers.insert().values(queue_id=queue_id, reviewer_id=reviewer_id, pos=pos, item_seq=a[0],
                                                     created_at=now, updated_at=now, revisions=0,
                                                     rubric_version=rubric_version, answer=answer))
            else:
                conn.execute(answers.update().where(*key).values(updated_at=now, revisions=old[0] + 1, answer=answer,
                                                                 rubric_version=rubric_version))
            if not a[1]:
                conn.execute(assignments.update().where(*akey).values(done=True))
                conn.execute(members.update().where(members.c.queue_id == queue_id, members.c.reviewer_id == reviewer_id)
                             .values(done=members.c.done + 1))
            return not a[1]

    def retract(self, queue_id: int, reviewer_id: int, pos: int) -> dict | None:
        """Undo a submission: the answer is removed (and returned), the record is open again."""
        key = (answers.c.queue_id == queue_id, answers.c.reviewer_id == reviewer_id, answers.c.pos == pos)
        with self.write() as conn:
            old = conn.execute(sa.select(answers.c.answer).where(*key)).first()
            if old is None:
                return None
            conn.execute(answers.delete().where(*key))
            conn.execute(assignments.update().where(assignments.c.queue_id == queue_id,
                                                    assignments.c.reviewer_id == reviewer_id,
                                                    assignments.c.pos == pos).values(done=False))
            conn.execute(members.update().where(members.c.queue_id == queue_id, members.c.reviewer_id == reviewer_id)
                         .values(done=members.c.done - 1))
            return old[0]

    # ---- reads for agreement and export ------------------------------------------------------
    def answers_of(self, queue_id: int) -> list[dict]:
        """Every answer of a queue with its reviewer's name and the assignment's swap, by item."""
        q = (sa.select(answers.c.item_seq, answers.c.pos, answers.c.created_at, answers.c.updated_at, answers.c.revisions,
                       answers.c.rubric_version, answers.c.answer, reviewers.c.name.label("reviewer"),
                       assignments.c.swap)
             .join(reviewers, reviewers.c.id == answers.c.reviewer_id)
             .join(assignments, sa.and_(assignments.c.queue_id == answers.c.queue_id,
                                        assignments.c.reviewer_id == answers.c.reviewer_id,
                                        assignments.c.pos == answers.c.pos))
             .where(answers.c.queue_id == queue_id).order_by(answers.c.item_seq, reviewers.c.name))
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(q).mappings()]

    def items_of(self, queue_id: int, seqs: list[int] | None = None) -> Iterator[dict]:
        q = sa.select(items).where(items.c.queue_id == queue_id).order_by(items.c.seq)
        with self.engine.connect() as conn:
            if seqs is None:
                for r in conn.execute(q).mappings():
                    yield _row(r)
                return
            for i in range(0, len(seqs), 500):
                for r in conn.execute(q.where(items.c.seq.in_(seqs[i:i + 500]))).mappings():
                    yield _row(r)

    def exports_of(self, queue_id: int) -> list[dict]:
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(sa.select(exports).where(exports.c.queue_id == queue_id)
                                                  .order_by(exports.c.created_at)).mappings()]
