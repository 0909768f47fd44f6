"""SQLite document store: integer FAISS id -> (document id, text, metadata JSON).

A real database queried with SQL. Tables::

    docs(int_id INTEGER PRIMARY KEY, doc_id TEXT UNIQUE NOT NULL, text TEXT NOT NULL, metadata TEXT)
    tombstones(int_id INTEGER PRIMARY KEY)   -- vectors still in a FAISS index that cannot remove them (HNSW)
    meta(key TEXT PRIMARY KEY, value TEXT)   -- next_int_id: integer ids are never reused

``metadata`` is a JSON object (or NULL), so it can be filtered with SQLite's JSON functions, e.g.
``store.query("SELECT doc_id FROM docs WHERE json_extract(metadata, '$.topic') = ?", ("music",))``.

Every search needs the document count and the tombstones, so both are kept in memory: read once, then
followed through ``insert``, ``remove`` and ``add_tombstones``, and read again after a ``rollback``.

The connection may be used from more than one thread (SQLite's serialized mode, ``sqlite3.threadsafety``
3): ``textcl serve`` searches on one thread while another saves. Writes stay on one thread at a time.
"""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Sequence

from textcl.data.records import Document
from textcl.index.errors import DuplicateIdError, UnknownIdError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    int_id INTEGER PRIMARY KEY, doc_id TEXT NOT NULL UNIQUE, text TEXT NOT NULL, metadata TEXT);
CREATE TABLE IF NOT EXISTS tombstones (int_id INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
_BATCH = 500  # ids per "IN (...)" query, well under SQLite's variable limit


def _chunks(seq: Sequence, size: int = _BATCH):
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


class DocStore:
    """One SQLite file (or ``:memory:``). Writes happen in transactions; ``commit`` is explicit."""

    def __init__(self, path: str | os.PathLike = ":memory:", readonly: bool = False):
        self.path = str(path)
        self.readonly = readonly
        if readonly:
            self.conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.conn = sqlite3.connect(self.path, check_same_thread=False)
            self.conn.executescript(_SCHEMA)
            self.conn.commit()
        self._count: int | None = None  # None: read from the table when next needed
        self._tombstones: set[int] | None = None
        self._tombstone_list: list[int] | None = None  # sorted, as tombstones() returns it

    # ---------------------------------------------------------------- writing
    def next_int_id(self) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'next_int_id'").fetchone()
        return int(row[0]) if row else 0

    def insert(self, docs: Sequence[Document]) -> list[int]:
        """Insert new documents; return their fresh integer ids. Raises DuplicateIdError, inserting nothing."""
        ids = [d.id for d in docs]
        seen: set[str] = set()
        for doc_id in ids:
            if doc_id in seen:
                raise DuplicateIdError(f"document id {doc_id!r} appears twice in the input")
            seen.add(doc_id)
        existing = self.existing_ids(ids)
        if existing:
            shown = ", ".join(repr(i) for i in existing[:5])
            raise DuplicateIdError(
                f"{len(existing)} document id(s) already in the index: {shown}; use upsert to replace them"
            )
        start = self.next_int_id()
        int_ids = list(range(start, start + len(docs)))
        self.conn.executemany(
            "INSERT INTO docs(int_id, doc_id, text, metadata) VALUES (?, ?, ?, ?)",
            (
                (i, d.id, d.text, json.dumps(d.metadata, ensure_ascii=False) if d.metadata else None)
                for i, d in zip(int_ids, docs)
            ),
        )
        self.conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('next_int_id', ?)", (str(start + len(docs)),)
        )
        if self._count is not None:
            self._count += len(docs)
        return int_ids

    def remove(self, doc_ids: Sequence[str], missing_ok: bool = False) -> list[int]:
        """Delete documents by id; return the integer ids they had."""
        found = self.int_ids(doc_ids)
        missing = [d for d in doc_ids if d not in found]
        if missing and not missing_ok:
            shown = ", ".join(repr(i) for i in missing[:5])
            raise UnknownIdError(f"{len(missing)} document id(s) not in the index: {shown}")
        int_ids = [found[d] for d in doc_ids if d in found]
        self.conn.executemany("DELETE FROM docs WHERE int_id = ?", ((i,) for i in int_ids))
        if self._count is not None:
            self._count -= len(int_ids)
        return int_ids

    def add_tombstones(self, int_ids: Iterable[int]) -> None:
        int_ids = [int(i) for i in int_ids]
        self.conn.executemany("INSERT OR IGNORE INTO tombstones(int_id) VALUES (?)", ((i,) for i in int_ids))
        if self._tombstones is not None:
            self._tombstones.update(int_ids)
            self._tombstone_list = None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()
        self._count = self._tombstones = self._tombstone_list = None  # read the tables again

    # ---------------------------------------------------------------- reading
    def __len__(self) -> int:
        if self._count is None:
            self._count = self.conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0]
        return self._count

    def _tombstone_set(self) -> set[int]:
        if self._tombstones is None:
            self._tombstones = {r[0] for r in self.conn.execute("SELECT int_id FROM tombstones")}
        return self._tombstones

    def n_tombstones(self) -> int:
        return len(self._tombstone_set())

    def tombstones(self) -> list[int]:
        """The integer ids of deleted documents whose vectors the FAISS index still holds, sorted."""
        if self._tombstone_list is None:
            self._tombstone_list = sorted(self._tombstone_set())
        return list(self._tombstone_list)  # a copy: the caller may change it

    def existing_ids(self, doc_ids: Sequence[str]) -> list[str]:
        return list(self.int_ids(doc_ids))

    def int_ids(self, doc_ids: Sequence[str]) -> dict[str, int]:
        """doc_id -> int_id for those of ``doc_ids`` that are stored."""
        out: dict[str, int] = {}
        for part in _chunks(list(doc_ids)):
            q = f"SELECT doc_id, int_id FROM docs WHERE doc_id IN ({','.join('?' * len(part))})"
            out.update(self.conn.execute(q, part).fetchall())
        return out

    def fetch(self, int_ids: Sequence[int]) -> dict[int, Document]:
        """int_id -> Document for those of ``int_ids`` that are stored (deleted ones are absent)."""
        out: dict[int, Document] = {}
        unique = sorted({int(i) for i in int_ids if i >= 0})
        for part in _chunks(unique):
            q = f"SELECT int_id, doc_id, text, metadata FROM docs WHERE int_id IN ({','.join('?' * len(part))})"
            for int_id, doc_id, text, meta in self.conn.execute(q, part):
                out[int_id] = Document(doc_id, text, json.loads(meta) if meta else {})
        return out

    def get(self, doc_id: str) -> Document | None:
        row = self.conn.execute("SELECT doc_id, text, metadata FROM docs WHERE doc_id = ?", (doc_id,)).fetchone()
        return Document(row[0], row[1], json.loads(row[2]) if row[2] else {}) if row else None

    def iter_range(self, lo: int, hi: int) -> list[tuple[int, Document]]:
        """Documents with ``lo <= int_id < hi``, in id order."""
        rows = self.conn.execute(
            "SELECT int_id, doc_id, text, metadata FROM docs WHERE int_id >= ? AND int_id < ? ORDER BY int_id",
            (lo, hi),
        )
        return [(i, Document(d, t, json.loads(m) if m else {})) for i, d, t, m in rows]

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run a read-only SQL query against the store, e.g. to filter on ``json_extract(metadata, ...)``."""
        return self.conn.execute(sql, params).fetchall()

    # ---------------------------------------------------------------- files
    def backup_to(self, path: str | os.PathLike) -> None:
        """Copy the whole database, uncommitted changes excluded, to ``path`` with SQLite's backup API."""
        dest = sqlite3.connect(str(path))
        try:
            self.conn.backup(dest)
        finally:
            dest.close()

    def close(self) -> None:
        self.conn.close()
