"""The write-ahead log: each acknowledged write is on disk before the response, until a saved index holds it.

Why a log. A saved index folder (``index.faiss``, ``docs.sqlite``, ``manifest.json``) is replaced as a whole
when it is saved, which costs time proportional to the index; doing that for every write would make writes
slow. So the server keeps the index in memory, saves it on a schedule and on shutdown, and makes each
write durable by appending it first to this log: a small SQLite database beside the folder
(``INDEX_DIR.wal.sqlite``, WAL journal, ``synchronous=FULL``, so a commit is fsynced). The response is sent
only after that commit.

Recovery. Every logged operation is a *set*: ``upsert(id, text, metadata)`` or ``delete(id)``. Replaying a
suffix of the log onto an index that already holds some of it gives the same documents as replaying it onto
the older state (the last operation on each id wins), so replay may safely repeat work. A save writes the
log's id and its last sequence number into the saved doc store (atomically with the snapshot), then drops
the logged operations it covers. On start, :func:`ops_to_replay` decides what the snapshot lacks:

1. the snapshot names this log: replay the operations after the sequence number it records;
2. otherwise the log was started on exactly this snapshot (same checksums, e.g. killed before its first
   save): replay the whole log;
3. otherwise, if the log is empty: adopt the snapshot;
4. otherwise the folder was replaced by another index while writes were pending: refuse to start
   (:class:`StaleLogError`) rather than apply them to the wrong index or drop them silently.

Sequence numbers come from SQLite's ``AUTOINCREMENT``: they are never reused, even after the log is emptied.
One writer: :class:`WriterLock` holds an exclusive ``flock`` on ``INDEX_DIR.wal.lock`` for the life of the
process (the kernel drops it when the process dies, even by SIGKILL).
"""
from __future__ import annotations

import json
import os
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from textcl.errors import TextclError

SNAPSHOT_LOG_ID = "serve_log_id"  # keys the server writes into the saved doc store's meta table
SNAPSHOT_LOG_SEQ = "serve_log_seq"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ops (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
    doc_id TEXT NOT NULL, text TEXT, metadata TEXT);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


class StaleLogError(TextclError):
    """The write log holds writes for a different version of the index folder than the one on disk."""


class LogLockedError(TextclError):
    """Another process is already the writer of this index."""


@dataclass(frozen=True)
class LogOp:
    """One logged write. ``text`` and ``metadata`` are None for a delete."""

    seq: int
    op: Literal["upsert", "delete"]
    doc_id: str
    text: str | None = None
    metadata: dict[str, Any] | None = None


def snapshot_identity(manifest: dict[str, Any]) -> str:
    """What identifies a saved index folder: the checksums its manifest records for both files."""
    return f"{manifest.get('index_sha256')}:{manifest.get('docstore_sha256')}"


class WriteLog:
    """The log database. Use from one thread (the index thread); ``readonly`` opens an existing log to read."""

    def __init__(self, path: str | os.PathLike, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            self.conn = sqlite3.connect(f"file:{self.path.resolve()}?mode=ro", uri=True)
            return
        self.conn = sqlite3.connect(str(self.path), isolation_level=None)  # explicit BEGIN/COMMIT below
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(_SCHEMA)
        if self._meta("log_id") is None:
            self.conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('log_id', ?)", (uuid.uuid4().hex,))

    # ---------------------------------------------------------------- reading
    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @property
    def log_id(self) -> str:
        return self._meta("log_id") or ""

    @property
    def base(self) -> str | None:
        """The identity (:func:`snapshot_identity`) of the snapshot the logged operations apply to."""
        return self._meta("base")

    def ops(self, after_seq: int = 0) -> list[LogOp]:
        rows = self.conn.execute("SELECT seq, op, doc_id, text, metadata FROM ops WHERE seq > ? ORDER BY seq",
                                 (int(after_seq),))
        return [LogOp(s, o, d, t, json.loads(m) if m else None) for s, o, d, t, m in rows]

    def __len__(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM ops").fetchone()[0]

    def last_seq(self) -> int:
        """The highest sequence number ever given (0 for a new log), including truncated ones."""
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'ops'").fetchone()
        return int(row[0]) if row else 0

    # ---------------------------------------------------------------- writing
    def append(self, ops: Sequence[tuple[str, str, str | None, dict | None]]) -> list[int]:
        """Append ``(op, doc_id, text, metadata)`` rows in one transaction, fsynced; return their seqs."""
        seqs = []
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for op, doc_id, text, metadata in ops:
                cur = self.conn.execute(
                    "INSERT INTO ops(op, doc_id, text, metadata) VALUES (?, ?, ?, ?)",
                    (op, doc_id, text, json.dumps(metadata, ensure_ascii=False) if metadata else None))
                seqs.append(int(cur.lastrowid))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return seqs

    def discard(self, seqs: Sequence[int]) -> None:
        """Remove operations that were logged but could not be applied (the client got an error)."""
        self.conn.executemany("DELETE FROM ops WHERE seq = ?", ((int(s),) for s in seqs))

    def rebase(self, identity: str, through_seq: int) -> None:
        """After a save that holds every operation up to ``through_seq``: record the new snapshot and drop
        those operations, in one transaction."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute("DELETE FROM ops WHERE seq <= ?", (int(through_seq),))
            self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('base', ?)", (identity,))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.conn.close()


def ops_to_replay(log: WriteLog, identity: str, snapshot_log_id: str | None,
                  snapshot_seq: str | None) -> list[LogOp]:
    """The logged operations that the snapshot on disk lacks (the rules are in the module docstring).

    ``identity`` is the snapshot's :func:`snapshot_identity`; ``snapshot_log_id`` and ``snapshot_seq`` are
    what its doc store records under :data:`SNAPSHOT_LOG_ID` / :data:`SNAPSHOT_LOG_SEQ` (None if absent).
    """
    if snapshot_log_id is not None and snapshot_log_id == log.log_id:
        return log.ops(after_seq=int(snapshot_seq or 0))
    if log.base == identity or len(log) == 0:
        return log.ops()
    raise StaleLogError(
        f"{log.path} holds {len(log)} acknowledged write(s) made to a different version of the index than the "
        "one in the folder now (the folder was rebuilt or replaced while they were pending). Restore the index "
        f"they belong to and start again to recover them, or move {log.path.name} away to discard them."
    )


class WriterLock:
    """An exclusive, non-blocking ``flock`` on ``path``, held until :meth:`release` or process exit."""

    def __init__(self, path: str | os.PathLike):
        import fcntl

        self.path = Path(path)
        self._fh = open(self.path, "a+")
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "another process"
            self._fh.close()
            raise LogLockedError(f"{self.path}: the index is already served with --allow-writes by {holder}; "
                                 "one writer at a time (stop it, or serve read-only)") from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"pid {os.getpid()}\n")
        self._fh.flush()

    def release(self) -> None:
        if not self._fh.closed:
            self._fh.close()  # closing the file drops the flock
