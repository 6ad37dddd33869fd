"""The flywheel's store: interactions, feedback events and dataset versions, through
SQLAlchemy Core. SQLite in WAL mode is the embedded default; PostgreSQL is the production
store (`postgresql+psycopg://...`). The schema is created and upgraded by numbered
migrations recorded in `schema_migrations`, so an old store opens with a new ptdata.

An interaction is committed before its response is released to the client, so a server
killed under load loses no interaction whose answer reached anyone.

Content is stored as JSON text (PostgreSQL `json`, not `jsonb`): `jsonb` refuses U+0000 (NUL),
which a prompt may hold, while `json` keeps the escaped text as sent. Statement parameters
(prompt text) never appear in an error message or a log (`hide_parameters`).
"""
from __future__ import annotations

import contextlib
import fcntl
import secrets
import time
from typing import Any, Callable, Iterator

import orjson
import sqlalchemy as sa

from ..errors import InputError

JSONT = sa.JSON()  # PostgreSQL `json` (migration 3 moved the jsonb columns): it accepts U+0000
meta = sa.MetaData()
MINE_LOCK_KEY = 0x70746461  # PostgreSQL advisory lock id held while a version is mined ("ptda")

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

conversation_split = sa.Table(
    "conversation_split", meta,  # each conversation's side, decided the first time a version mined it, kept for good
    sa.Column("key", sa.String(64), primary_key=True),  # salted hash of the conversation key (no prompt text)
    sa.Column("side", sa.String(10), nullable=False),  # "eval" (held out: never mined into training data) or "train"
    sa.Column("version", sa.String(200), nullable=False),  # the dataset version that first saw it
    sa.Column("created_at", sa.Float, nullable=False),
)

evaluations = sa.Table(
    "evaluations", meta,  # `ptdata flywheel eval`: a candidate model against the current one on held-out prompts
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("eval_set", sa.String(200), nullable=False),  # the dataset version whose eval.jsonl was replayed, or "store"
    sa.Column("candidate_version", sa.String(200), nullable=False, index=True),
    sa.Column("current_version", sa.String(200), nullable=False),
    sa.Column("judge_model", sa.String(200)),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("wins", sa.Integer, nullable=False),
    sa.Column("ties", sa.Integer, nullable=False),
    sa.Column("losses", sa.Integer, nullable=False),
    sa.Column("win_rate", sa.Float),
    sa.Column("ci_low", sa.Float),
    sa.Column("ci_high", sa.Float),
    sa.Column("gate", sa.Float),
    sa.Column("passed", sa.Boolean),
    sa.Column("result", JSONT, nullable=False),  # the whole summary (per-aspect deltas, regressions by interaction id)
)

deployments = sa.Table(
    "deployments", meta,  # `ptdata flywheel deploy`: which dataset version a model version was trained on
    sa.Column("model_version", sa.String(200), primary_key=True),
    sa.Column("trained_on", sa.String(200), sa.ForeignKey("versions.name"), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
)


def settings_table(name: str, metadata: sa.MetaData) -> sa.Table:
    """Store-wide values created on first start, such as a salt."""
    return sa.Table(name, metadata, sa.Column("key", sa.String(100), primary_key=True),
                    sa.Column("value", sa.Text, nullable=False))


def migrations_table_named(name: str, metadata: sa.MetaData) -> sa.Table:
    """The migrations applied to a store, by number."""
    return sa.Table(name, metadata, sa.Column("version", sa.Integer, primary_key=True),
                    sa.Column("applied_at", sa.Float, nullable=False))


settings = settings_table("settings", meta)  # the user-hash salt
migrations_table = migrations_table_named("schema_migrations", meta)


def _m1(conn: sa.Connection) -> None:
    for t in (interactions, feedback, versions, version_records):
        t.create(conn, checkfirst=True)


def _m2(conn: sa.Connection) -> None:
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_feedback_kind ON feedback (kind)"))


JSON_COLUMNS = {"interactions": ("request", "response"), "feedback": ("value",), "versions": ("counts", "manifest"),
                "version_records": ("interaction_ids",)}  # the tables of migration 1 (migration 3 moved them to json)


def _m3(conn: sa.Connection) -> None:
    """The settings table; on PostgreSQL, jsonb columns become json (jsonb refuses U+0000)."""
    settings.create(conn, checkfirst=True)
    if conn.dialect.name == "postgresql":
        for table, cols in JSON_COLUMNS.items():
            for c in cols:
                conn.execute(sa.text(f"ALTER TABLE {table} ALTER COLUMN {c} TYPE json USING {c}::json"))


def _m4(conn: sa.Connection) -> None:
    """Feedback by time: `mine` looks up the feedback given since the last version."""
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_feedback_created_at ON feedback (created_at)"))


def _m5(conn: sa.Connection) -> None:
    """The held-out evaluation split (each conversation's side), evaluations of candidate models, deploy records."""
    for t in (conversation_split, evaluations, deployments):
        t.create(conn, checkfirst=True)


MIGRATIONS: list[Callable[[sa.Connection], None]] = [_m1, _m2, _m3, _m4, _m5]  # append only; never edit an applied one


def _json_dumps(obj: Any) -> str:
    """orjson: U+0000 escaped, and a too-deep value is an error, not Python's RecursionError."""
    return orjson.dumps(obj).decode()


def engine_for(url: str) -> sa.Engine:
    if "://" not in url:
        url = f"sqlite:///{url}"
    if url.startswith("sqlite"):
        eng = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True,
                               json_serializer=_json_dumps)

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
        return sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True, hide_parameters=True,
                                json_serializer=_json_dumps)
    except (sa.exc.ArgumentError, ImportError) as e:
        raise InputError(f"store URL {url.split('@')[-1]!r}: {e}") from None


def _row(r) -> dict:
    """A plain dict with plain str keys (SQLAlchemy's quoted_name keys upset orjson)."""
    return {str(k): v for k, v in r.items()}


INT32 = (1 << 31) - 1


def fit_row(table: sa.Table, row: dict[str, Any]) -> dict[str, Any]:
    """A row both databases accept: text columns hold strings cut to their length and without
    NUL (PostgreSQL text refuses it), integers are within 32 bits. For values that come from the
    upstream; what a client sends is validated (422) before the upstream is called."""
    out = dict(row)
    for col in table.columns:
        v = out.get(col.name)
        if v is not None and isinstance(col.type, sa.String):
            v = (v if isinstance(v, str) else str(v)).replace("\x00", "\ufffd")
            n = getattr(col.type, "length", None)
            out[col.name] = v[:n] if n else v
        elif isinstance(col.type, sa.Integer) and v is not None:
            out[col.name] = v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= INT32 else None
    return out


def same_event(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two feedback events with one event id say the same thing (a retry, not a conflict)."""
    return all(a.get(k) == b.get(k) for k in ("interaction_id", "kind", "value", "user_hash"))


def migrate(engine: sa.Engine, table: sa.Table, migrations: list[Callable[[sa.Connection], None]]) -> int:
    """Apply the migrations not yet recorded in `table`, in order, in one transaction."""
    with engine.begin() as conn:
        table.create(conn, checkfirst=True)
        done = {r[0] for r in conn.execute(sa.select(table.c.version))}
        for n, m in enumerate(migrations, start=1):
            if n not in done:
                m(conn)
                conn.execute(table.insert().values(version=n, applied_at=time.time()))
    return len(migrations)


@contextlib.contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction that holds the write lock from its start (SQLite `BEGIN IMMEDIATE`), for a
    check-then-insert that must not interleave with another writer."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.exec_driver_sql("ROLLBACK")
            raise
        conn.exec_driver_sql("COMMIT")


def open_migrated(url: str, table: sa.Table, migrations: list[Callable[[sa.Connection], None]], what: str) -> sa.Engine:
    """An engine on `url` with its migrations applied; one line naming the store (never its
    password) when it cannot be opened: an unreachable server, a bad path, no permission."""
    engine = engine_for(url)
    try:
        migrate(engine, table, migrations)
    except sa.exc.SQLAlchemyError as e:
        raise InputError(f"cannot open {what} at {url.split('@')[-1]!r}: {str(getattr(e, 'orig', e)).splitlines()[0]}") from None
    return engine


class Store:
    def __init__(self, url: str) -> None:
        self.engine = open_migrated(url, migrations_table, MIGRATIONS, "the store")

    def migrate(self) -> int:
        return migrate(self.engine, migrations_table, MIGRATIONS)

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(migrations_table.c.version))).scalar() or 0

    # ---- writes --------------------------------------------------------------------------
    def add_interaction(self, row: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(interactions.insert().values(**fit_row(interactions, row)))

    def add_feedback(self, row: dict[str, Any]) -> tuple[dict, str]:
        """Insert an event: "created"; a retry of a stored event id with the same content: "same"
        (the stored event); the same event id with other content: "conflict"."""
        same = sa.select(feedback).where(feedback.c.event_id == row["event_id"])
        try:
            with self.engine.begin() as conn:
                old = conn.execute(same).mappings().first()
                if old is None:
                    conn.execute(feedback.insert().values(**row))
                    return row, "created"
        except sa.exc.IntegrityError:  # a concurrent retry of the same event won the race (rolled back)
            with self.engine.connect() as conn:
                old = conn.execute(same).mappings().one()
        old = _row(old)
        return old, "same" if same_event(old, row) else "conflict"

    def salt(self) -> str:
        """The store's random salt for user hashes, made on first use and kept: hashes stay
        stable across restarts without PTDATA_FLYWHEEL_SALT, and are not plain sha256."""
        q = sa.select(settings.c.value).where(settings.c.key == "user_salt")
        with self.engine.connect() as conn:
            v = conn.execute(q).scalar()
        if v is not None:
            return v
        try:
            with self.engine.begin() as conn:
                conn.execute(settings.insert().values(key="user_salt", value=secrets.token_hex(32)))
        except sa.exc.IntegrityError:  # another process made it first
            pass
        with self.engine.connect() as conn:
            return conn.execute(q).scalar_one()

    @contextlib.contextmanager
    def mining_lock(self) -> Iterator[None]:
        """Held while a version is mined, so two `mine` runs on one store take turns: the second
        sees the first's version (its parent, its `until`, its records for dedup). PostgreSQL:
        a session advisory lock; SQLite: an exclusive lock on a file beside the database (a
        `BEGIN IMMEDIATE` held for the whole run would block the proxy's inserts meanwhile)."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as conn:
                conn.execute(sa.select(sa.func.pg_advisory_lock(MINE_LOCK_KEY)))
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(sa.select(sa.func.pg_advisory_unlock(MINE_LOCK_KEY)))
                    conn.commit()
            return
        db = self.engine.url.database
        if not db or db == ":memory:":  # one connection, one process: nothing to take turns with
            yield
            return
        with open(db + ".mine-lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def write_transaction(self) -> contextlib.AbstractContextManager[sa.Connection]:
        return write_transaction(self.engine)

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

    def late_feedback_interactions(self, since: float, until: float) -> list[dict]:
        """Interactions from before `since` that got feedback in [since, until): a correction or a
        human review that came after the interaction was mined."""
        fresh = (sa.select(feedback.c.interaction_id).where(feedback.c.created_at >= since, feedback.c.created_at < until)
                 .distinct())
        q = (sa.select(interactions).where(interactions.c.created_at < since, interactions.c.id.in_(fresh))
             .order_by(interactions.c.created_at, interactions.c.id))
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(q).mappings()]

    def feedback_for(self, ids: list[str] | None = None) -> list[dict]:
        q = sa.select(feedback).order_by(feedback.c.created_at, feedback.c.event_id)
        if ids is not None:
            q = q.where(feedback.c.interaction_id.in_(ids))
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(q).mappings()]

    def conversation_sides(self) -> dict[str, str]:
        """{salted conversation-key hash: "eval" or "train"} for every conversation a version mined."""
        with self.engine.connect() as conn:
            return {r[0]: r[1] for r in conn.execute(sa.select(conversation_split.c.key, conversation_split.c.side))}

    def held_out_keys(self) -> set[str]:
        """The salted conversation-key hashes set aside for evaluation (they stay held out)."""
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(sa.select(conversation_split.c.key).where(conversation_split.c.side == "eval"))}

    def add_evaluation(self, row: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(evaluations.insert().values(**fit_row(evaluations, row)))

    def evaluations(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(sa.select(evaluations).order_by(evaluations.c.created_at,
                                                                                  evaluations.c.id)).mappings()]

    def deploy(self, model_version: str, trained_on: str) -> str:
        """Record that `model_version` was trained on dataset version `trained_on`: "created", or
        "same" when that is already recorded; another dataset version for it is refused."""
        with write_transaction(self.engine) as conn:
            if conn.execute(sa.select(versions.c.name).where(versions.c.name == trained_on)).first() is None:
                raise InputError(f"--trained-on {trained_on!r}: no such dataset version in the store")
            old = conn.execute(sa.select(deployments.c.trained_on).where(deployments.c.model_version == model_version)).scalar()
            if old is not None:
                if old != trained_on:
                    raise InputError(f"model version {model_version!r} is recorded as trained on {old!r}; "
                                     "a deploy record is not changed")
                return "same"
            conn.execute(deployments.insert().values(model_version=model_version, trained_on=trained_on, created_at=time.time()))
            return "created"

    def deployments(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(sa.select(deployments).order_by(deployments.c.created_at,
                                                                                  deployments.c.model_version)).mappings()]

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {"interactions": conn.execute(sa.select(sa.func.count()).select_from(interactions)).scalar(),
                    "feedback": conn.execute(sa.select(sa.func.count()).select_from(feedback)).scalar(),
                    "versions": conn.execute(sa.select(sa.func.count()).select_from(versions)).scalar()}

    def close(self) -> None:
        self.engine.dispose()
