"""The flywheel's store: interactions, feedback events and dataset versions, through
SQLAlchemy Core. SQLite in WAL mode is the embedded default; PostgreSQL is the production
store (`postgresql+psycopg://...`). The schema is created and upgraded by numbered
migrations recorded in `schema_migrations`, so an old store opens with a new ptdata.

An interaction is committed before its response is released to the client, so a server
killed under load loses no interaction whose answer reached anyone.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ..errors import InputError

JSONT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
meta = sa.MetaData()

interactions = sa.Table(
    "interactions", meta,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("conversation_id", sa.String(200), index=True),
    sa.Column("user_hash", sa.String(64)),
    sa.Column("consent", sa.Boolean, nullable=False),
    sa.Column("model", sa.String(200)),
    sa.Column("model_version", sa.String(200), index=True),
    sa.Column("request", JSONT),  # messages and parameters; None without consent
    sa.Column("response", JSONT),  # choices (message, finish reason); None without consent
    sa.Column("finish_reason", sa.String(40)),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("stream", sa.Boolean, nullable=False, default=False),
    sa.Column("prompt_tokens", sa.Integer),
    sa.Column("completion_tokens", sa.Integer),
    sa.Column("latency_ms", sa.Float),
)

feedback = sa.Table(
    "feedback", meta,
    sa.Column("event_id", sa.String(200), primary_key=True),  # client-supplied: retries are idempotent
    sa.Column("interaction_id", sa.String(40), sa.ForeignKey("interactions.id"), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),  # thumbs, rating, correction, comment, regenerate, choice
    sa.Column("value", JSONT, nullable=False),
    sa.Column("user_hash", sa.String(64)),
)

versions = sa.Table(
    "versions", meta,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("parent", sa.String(200)),
    sa.Column("counts", JSONT, nullable=False),
    sa.Column("manifest", JSONT, nullable=False),
)

version_records = sa.Table(
    "version_records", meta,
    sa.Column("version", sa.String(200), sa.ForeignKey("versions.name"), nullable=False, index=True),
    sa.Column("record_id", sa.String(40), nullable=False),
    sa.Column("content_key", sa.String(40), nullable=False, index=True),  # normalized content: cross-version dedup
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("interaction_ids", JSONT, nullable=False),
    sa.PrimaryKeyConstraint("version", "record_id"),
)

migrations_table = sa.Table(
    "schema_migrations", meta,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", sa.Float, nullable=False),
)


def _m1(conn: sa.Connection) -> None:
    for t in (interactions, feedback, versions, version_records):
        t.create(conn, checkfirst=True)


def _m2(conn: sa.Connection) -> None:
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_feedback_kind ON feedback (kind)"))


MIGRATIONS: list[Callable[[sa.Connection], None]] = [_m1, _m2]  # append only; never edit an applied one


def engine_for(url: str) -> sa.Engine:
    if "://" not in url:
        url = f"sqlite:///{url}"
    if url.startswith("sqlite"):
        eng = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(eng, "connect")
        def _pragmas(dbapi_conn, _):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
        return eng
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    try:
        return sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    except (sa.exc.ArgumentError, ImportError) as e:
        raise InputError(f"store URL {url.split('@')[-1]!r}: {e}") from None


def _row(r) -> dict:
    """A plain dict with plain str keys (SQLAlchemy's quoted_name keys upset orjson)."""
    return {str(k): v for k, v in r.items()}


class Store:
    def __init__(self, url: str) -> None:
        self.engine = engine_for(url)
        try:
            self.migrate()
        except sa.exc.SQLAlchemyError as e:  # unreachable server, bad path, no permission: one line, no secrets
            where = url.split("@")[-1]
            raise InputError(f"cannot open the store at {where!r}: {str(getattr(e, 'orig', e)).splitlines()[0]}") from None

    def migrate(self) -> int:
        with self.engine.begin() as conn:
            migrations_table.create(conn, checkfirst=True)
            done = {r[0] for r in conn.execute(sa.select(migrations_table.c.version))}
            for n, m in enumerate(MIGRATIONS, start=1):
                if n not in done:
                    m(conn)
                    conn.execute(migrations_table.insert().values(version=n, applied_at=time.time()))
        return len(MIGRATIONS)

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(migrations_table.c.version))).scalar() or 0

    # ---- writes --------------------------------------------------------------------------
    def add_interaction(self, row: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(interactions.insert().values(**row))

    def add_feedback(self, row: dict[str, Any]) -> tuple[dict, bool]:
        """Insert an event; a repeated event id returns the stored one (created=False)."""
        same = sa.select(feedback).where(feedback.c.event_id == row["event_id"])
        try:
            with self.engine.begin() as conn:
                old = conn.execute(same).mappings().first()
                if old is not None:
                    return _row(old), False
                conn.execute(feedback.insert().values(**row))
        except sa.exc.IntegrityError:  # a concurrent retry of the same event won the race (rolled back)
            with self.engine.connect() as conn:
                return _row(conn.execute(same).mappings().one()), False
        return row, True

    # ---- reads ---------------------------------------------------------------------------
    def interaction(self, iid: str) -> dict | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(interactions).where(interactions.c.id == iid)).mappings().first()
            return _row(r) if r else None

    def has_interaction(self, iid: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(interactions.c.id).where(interactions.c.id == iid)).first() is not None

    def interactions(self, since: float = 0.0, until: float | None = None) -> Iterator[dict]:
        q = sa.select(interactions).where(interactions.c.created_at >= since)
        if until is not None:
            q = q.where(interactions.c.created_at < until)
        with self.engine.connect() as conn:
            for r in conn.execute(q.order_by(interactions.c.created_at, interactions.c.id)).mappings():
                yield _row(r)

    def feedback_for(self, ids: list[str] | None = None) -> list[dict]:
        q = sa.select(feedback).order_by(feedback.c.created_at, feedback.c.event_id)
        if ids is not None:
            q = q.where(feedback.c.interaction_id.in_(ids))
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(q).mappings()]

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {"interactions": conn.execute(sa.select(sa.func.count()).select_from(interactions)).scalar(),
                    "feedback": conn.execute(sa.select(sa.func.count()).select_from(feedback)).scalar(),
                    "versions": conn.execute(sa.select(sa.func.count()).select_from(versions)).scalar()}

    def close(self) -> None:
        self.engine.dispose()
