"""A content-addressed disk cache of model answers, so a rerun of a step makes no calls.

SQLite (WAL) rather than a file per answer: one file to move or delete, safe across the
worker processes of a run, and fast enough (tens of thousands of reads a second).
"""
from __future__ import annotations

import sqlite3
from pathlib import Path


class DiskCache:
    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / "llm-cache.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:  # opened lazily: a connection must not cross a fork
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
        return self._db

    def get(self, key: str) -> bytes | None:
        row = self.db.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, value: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO answers (key, value) VALUES (?, ?)", (key, value))

    def __len__(self) -> int:
        return self.db.execute("SELECT count(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "_db": None}
