"""``TranslationCache``: a persistent SQLite store of translations keyed by (text hash, model, direction)."""
from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Any, Sequence

_SCHEMA = """
CREATE TABLE IF NOT EXISTS translations (
    text_sha256 BLOB NOT NULL,
    model TEXT NOT NULL,
    direction TEXT NOT NULL,
    translation TEXT NOT NULL,
    PRIMARY KEY (text_sha256, model, direction)
) WITHOUT ROWID
"""
_LOOKUP_CHUNK = 500  # rows per SELECT ... IN (...): below SQLite's bound-parameter limit


def text_key(text: str) -> bytes:
    """The SHA-256 digest of the UTF-8 text: the cache key (texts themselves are not stored)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


class TranslationCache:
    """Translations on disk, so each sentence is translated once per model and direction across runs.

    Every :meth:`put_many` is one transaction: a run killed mid-way keeps every batch committed before
    the kill, and never a half-written one. The database uses SQLite's write-ahead log, so a reader (a
    training run) and a writer (``textcl augment backtranslate``) can share it.

    Args:
        path: the database file (created with its folder if missing), or ``":memory:"``.

    The connection opens lazily and is reopened in a forked or unpickled copy (a DataLoader worker), since
    SQLite connections must not cross processes.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=60)
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)
            conn.commit()
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def get_many(self, texts: Sequence[str], model: str, direction: str) -> list[str | None]:
        """The cached translation of each text, or ``None`` where there is none."""
        keys = [text_key(t) for t in texts]
        found: dict[bytes, str] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _LOOKUP_CHUNK):
            chunk = unique[start : start + _LOOKUP_CHUNK]
            rows = self.conn.execute(
                "SELECT text_sha256, translation FROM translations WHERE model = ? AND direction = ? "
                f"AND text_sha256 IN ({','.join('?' * len(chunk))})",
                [model, direction, *chunk],
            )
            found.update(rows)
        return [found.get(k) for k in keys]

    def put_many(self, pairs: Sequence[tuple[str, str]], model: str, direction: str) -> None:
        """Store ``(text, translation)`` pairs in one transaction (all or none)."""
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO translations VALUES (?, ?, ?, ?)",
                [(text_key(t), model, direction, tr) for t, tr in pairs],
            )

    def __len__(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM translations").fetchone()[0]

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    def __enter__(self) -> "TranslationCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # the copy reconnects; an in-memory cache starts empty there
        return {"path": self.path, "_conn": None, "_pid": None}

    def __repr__(self) -> str:
        return f"TranslationCache({self.path!r})"
