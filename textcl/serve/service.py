"""``IndexService``: the served index. Search, documents, durability; what the HTTP routes call.

Threads. The :class:`~textcl.index.SearchIndex` is touched only by the :class:`~.batcher.MicroBatcher`'s
thread: it opens the index, answers batches of queries, applies writes and saves, one operation at a time.
Encoding a write's documents is the slow part, so it runs before, on a thread-pool thread, in chunks of
:data:`WRITE_ENCODE_CHUNK` texts; the encoder is shared under a lock (Hugging Face fast tokenizers must not
be called from two threads at once), so a large write delays a query batch by one chunk at most.

Durability (see :mod:`textcl.serve.wal`). A write is encoded, then on the index thread: checked, appended to
the write-ahead log and committed (fsync), applied to the in-memory index, and only then answered. The
index folder is saved atomically every ``save_interval_s`` seconds when it changed, and on shutdown; each
save drops the log entries it covers. On start, the log entries the saved folder lacks are re-encoded and
applied (then saved, when writes are allowed), so a restart after SIGKILL serves every acknowledged write.

Saving beside searches. A scheduled save holds the index thread only to record the log position and to
drop the saved log entries afterwards; the folder is written from the saver's own thread meanwhile, while
the index thread goes on answering searches and reads (FAISS searches and serialisation only read the
index; the doc store's connection is shared under SQLite's serialized mode) and holds writes back until
the save is done. Indexes that keep float vectors for rescoring or map on-disk lists swap those files when
saved, so they are saved on the index thread as a whole.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from textcl._io import check_writable
from textcl.errors import ConfigError
from textcl.index import Document, DuplicateIdError, SearchIndex, UnknownIdError
from textcl.serve.batcher import MicroBatcher
from textcl.serve.config import ServeConfig
from textcl.serve.hits import Found, HitView
from textcl.serve.precision import INDEX, precision_of, served
from textcl.serve.recommend import RecommendSettings, load_settings, model_folder
from textcl.serve.schemas import MAX_HISTORY
from textcl.serve.wal import (SNAPSHOT_LOG_ID, SNAPSHOT_LOG_SEQ, LogOp, WriteLog, WriterLock, ops_to_replay,
                              snapshot_identity)
from textcl.thread_governor import install

log = logging.getLogger("textcl.serve")

WRITE_ENCODE_CHUNK = 16  # texts encoded per hold of the encoder lock while a write is encoded
REPLAY_CHUNK = 256  # documents encoded and applied at a time when replaying the log


@dataclass(frozen=True)
class SearchItem:
    """One search request: its queries, ``k`` and an optional metadata equality filter."""

    queries: tuple[str, ...]
    k: int
    filter: tuple[tuple[str, Any], ...] | None = None

    @property
    def filter_key(self) -> tuple:
        """The filter with each value's type: ``True == 1`` in Python, but they select different documents."""
        return tuple((key, type(value).__name__, value) for key, value in self.filter or ())


def filter_sql(pairs: Sequence[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """SQL selecting the integer ids of documents whose metadata equals every ``(field, value)``.

    Booleans match JSON ``true``/``false`` only; numbers and strings match numbers and strings by SQLite
    equality (1 = 1.0), never booleans, objects or arrays.
    Field names are restricted by the request schema, so quoting them in the JSON path is safe.
    """
    clauses, params = [], []
    for key, value in pairs:
        path = f'$."{key}"'
        if isinstance(value, bool):
            clauses.append("json_type(metadata, ?) = ?")
            params += [path, "true" if value else "false"]
        else:
            clauses.append("(json_extract(metadata, ?) = ? AND json_type(metadata, ?) IN ('integer', 'real', 'text'))")
            params += [path, value, path]
    return "SELECT int_id FROM docs WHERE " + " AND ".join(clauses), params


def fsync_folder(path: Path) -> None:
    """fsync every file in ``path``, the folder itself and its parent (which holds the folder's new name)."""
    for item in [*sorted(p for p in path.iterdir() if p.is_file()), path, path.parent]:
        fd = os.open(item, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class IndexService:
    """Serve the index folder ``config.index_dir``. :meth:`start` opens it (raising on a bad folder, model or
    stale log); the ``async`` methods are what the routes await; :meth:`close` saves and stops."""

    def __init__(self, config: ServeConfig, encoder=None):
        self.config = config
        self.encoder = encoder
        self.encode_lock = threading.Lock()
        self.batcher: MicroBatcher[SearchItem, list] = MicroBatcher(
            self._search_batch, max_batch=config.max_batch, max_wait_s=config.max_wait_ms / 1000,
            enabled=config.batching, max_pending=config.max_pending)
        self.index: SearchIndex | None = None
        #: how POST /recommend turns a history into the user's text (read from the model's folder at start)
        self.recommend_settings = RecommendSettings()
        self.wal: WriteLog | None = None
        self.lock: WriterLock | None = None
        self.dirty = False
        self.last_save: float | None = None
        self.n_docs = 0
        self.replayed = 0  # log entries applied at start
        self._save_beside = False  # whether a scheduled save may run beside searches (see the module docstring)
        self._stop = threading.Event()
        self._saver: threading.Thread | None = None
        self._save_lock = threading.Lock()  # one save at a time
        self._closed = False

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "IndexService":
        import torch

        from textcl.serve.config import default_threads

        self._threads_before = torch.get_num_threads()  # given back at close (an app built inside a program)
        torch.set_num_threads(self.config.threads or default_threads(self.config.workers))
        try:
            if self.encoder is None:
                self.encoder = self._load_encoder()
            # a bad file refuses the start
            self.recommend_settings = load_settings(model_folder(self.encoder), self.encoder)
            self.encoder = served(self.encoder, self.config, INDEX, "the index's model")  # its --precision
        except BaseException:
            torch.set_num_threads(self._threads_before)
            raise
        self.batcher.start()
        try:
            self.batcher.call(self._open).result()
        except BaseException:
            self.batcher.close()
            torch.set_num_threads(self._threads_before)
            raise
        if self.config.allow_writes:
            self._saver = threading.Thread(target=self._save_loop, name="textcl-saver", daemon=True)
            self._saver.start()
        return self

    def close(self, timeout: float = 60.0) -> None:
        """Save (when changed), release the log and the writer lock, stop the threads. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._saver is not None:
            self._saver.join(timeout)
        with self._save_lock:  # a save beside searches (save_now from a request) finishes first
            try:
                self.batcher.call(self._shutdown).result(timeout)
            finally:
                self.batcher.close(timeout)
                if getattr(self, "_threads_before", None):
                    import torch

                    torch.set_num_threads(self._threads_before)

    def _load_encoder(self):
        """The index's own model, or ``--index-model`` checked against the manifest's fingerprint or probe; either
        truncated to an index built with ``--dim`` (see :mod:`textcl.index.identity`)."""
        from textcl.index.identity import checked_encoder
        from textcl.models import Encoder
        from textcl.recommend.tower import load_model

        manifest = SearchIndex.read_manifest(self.config.index_dir)
        return checked_encoder(self.config.index_dir, manifest, self.config.model, "--index-model",
                               lambda name: load_model(name, lambda n: Encoder.load(
                                   n, backend=self.config.backend or "torch"), self.config.backend))

    # ---------------------------------------------------------------- on the index thread
    def _open(self) -> None:
        try:
            self._open_and_recover()
        except BaseException:
            self._release()  # a refused start leaves no lock or open file behind
            raise

    def _open_and_recover(self) -> None:
        cfg = self.config
        manifest = SearchIndex.read_manifest(cfg.index_dir)
        self.index = SearchIndex.load(cfg.index_dir, encoder=self.encoder)
        if cfg.allow_writes:
            check_writable(cfg.index_dir, "INDEX_DIR", folder=True)
            self.lock = WriterLock(cfg.log_path.with_suffix(".lock"))
            self.wal = WriteLog(cfg.log_path)
        elif cfg.log_path.exists():
            self.wal = WriteLog(cfg.log_path, readonly=True)
        if self.wal is not None:
            identity = snapshot_identity(manifest)
            snap_id = self.index.store.get_meta(SNAPSHOT_LOG_ID)
            snap_seq = self.index.store.get_meta(SNAPSHOT_LOG_SEQ)
            ops = ops_to_replay(self.wal, identity, snap_id, snap_seq)
            if ops:
                log.info("replaying %d logged write(s) that %s lacks", len(ops), cfg.index_dir)
                self._replay(ops)
                self.replayed = len(ops)
            if not cfg.allow_writes:
                self.wal.close()
                self.wal = None
            elif ops:
                self._save()
            else:
                self.wal.rebase(identity, int(snap_seq or 0) if snap_id == self.wal.log_id else 0)
        self.n_docs = len(self.index)
        self._save_beside = not self.index.rescore and "lists" not in manifest

    def _replay(self, ops: list[LogOp]) -> None:
        """Apply logged operations: the last one on each id wins, so only that one is applied."""
        last: dict[str, LogOp] = {}
        for op in ops:
            last.pop(op.doc_id, None)  # keep the order of last occurrence
            last[op.doc_id] = op
        deletes = [op.doc_id for op in last.values() if op.op == "delete"]
        upserts = [op for op in last.values() if op.op == "upsert"]
        if deletes:
            self.index.delete(deletes, missing_ok=True)
        for start in range(0, len(upserts), REPLAY_CHUNK):
            part = upserts[start : start + REPLAY_CHUNK]
            vecs = self._encode_documents([Document(op.doc_id, op.text) for op in part])
            self.index.upsert([op.text for op in part], [op.doc_id for op in part],
                              [op.metadata or {} for op in part], embeddings=vecs)
        self.dirty = True

    def _search_batch(self, items: list[SearchItem]) -> list[Found | BaseException]:
        """Answer a batch: one forward for all its queries, one FAISS search for the unfiltered ones.
        Each item gets, per query, its ``(document, score)`` pairs, best first."""
        index = self.index
        if self.n_docs == 0:
            return [[[] for _ in item.queries] for item in items]
        texts = [q for item in items for q in item.queries]
        with self.encode_lock:
            vecs = index.encode_queries(texts, batch_size=len(texts))
        starts = np.cumsum([0] + [len(item.queries) for item in items])
        found: list[tuple[np.ndarray, np.ndarray] | BaseException | None] = [None] * len(items)
        plain = [i for i, item in enumerate(items) if not item.filter]
        if plain:
            rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in plain])
            scores, labels = index.search_vectors(vecs[rows], k=max(items[i].k for i in plain))
            offset = 0
            for i in plain:
                n = len(items[i].queries)
                found[i] = (scores[offset : offset + n, : items[i].k], labels[offset : offset + n, : items[i].k])
                offset += n
        matches: dict[tuple, list[int]] = {}
        for i, item in enumerate(items):
            if not item.filter:
                continue
            try:
                if item.filter_key not in matches:
                    sql, params = filter_sql(item.filter)
                    matches[item.filter_key] = [row[0] for row in index.store.query(sql, params)]
                among = matches[item.filter_key]
                if among:
                    found[i] = index.search_vectors(vecs[starts[i] : starts[i + 1]], k=item.k, among=among)
                else:
                    found[i] = (np.zeros((len(item.queries), 0)), np.zeros((len(item.queries), 0), np.int64))
            except Exception as exc:  # noqa: BLE001 - this request's error, not the batch's
                found[i] = exc
        wanted = [lab for f in found if isinstance(f, tuple) for lab in f[1].ravel().tolist()]
        docs = index.store.fetch(wanted)
        out: list[Found | BaseException] = []
        for f in found:
            if isinstance(f, BaseException):
                out.append(f)
                continue
            out.append([[(docs[lab], float(s)) for s, lab in zip(srow, lrow) if lab in docs]
                        for srow, lrow in zip(*f)])
        return out

    def _write(self, docs: list[Document], vecs: np.ndarray, mode: str) -> int:
        if mode == "add":
            self._refuse_existing([d.id for d in docs])
        seqs = self.wal.append([("upsert", d.id, d.text, d.metadata) for d in docs])
        try:
            self.index.upsert([d.text for d in docs], [d.id for d in docs], [d.metadata for d in docs],
                              embeddings=vecs)
        except BaseException:
            self.wal.discard(seqs)  # the client gets an error: the write must not come back at restart
            raise
        self.dirty = True
        self.n_docs = len(self.index)
        return self.n_docs

    def _refuse_existing(self, ids: list[str]) -> None:
        existing = self.index.store.existing_ids(ids)
        if existing:
            shown = ", ".join(repr(i) for i in existing[:5])
            raise DuplicateIdError(f"{len(existing)} document id(s) already in the index: {shown}; "
                                   "send mode \"upsert\" to replace them")

    def _delete(self, doc_id: str) -> int:
        if self.index.get(doc_id) is None:
            raise UnknownIdError(f"document id {doc_id!r} is not in the index")
        seqs = self.wal.append([("delete", doc_id, None, None)])
        try:
            self.index.delete([doc_id])
        except BaseException:
            self.wal.discard(seqs)
            raise
        self.dirty = True
        self.n_docs = len(self.index)
        return self.n_docs

    def _info(self) -> dict[str, Any]:
        from textcl.serve.embedders import public_name  # no local paths: /info needs no key

        info = self.index.info()
        cfg = self.config
        return {
            "model": public_name(cfg.model or info["model"]),  # the model in use: --index-model, else the index's
            "dim": info["dim"], "factory": info["factory"], "n_docs": info["n_docs"],
            "n_vectors": info["n_vectors"], "n_tombstones": info["n_tombstones"],
            "writes_allowed": cfg.allow_writes,
            "precision": precision_of(self.encoder),
            "batching": {"enabled": cfg.batching, "max_batch": cfg.max_batch, "max_wait_ms": cfg.max_wait_ms,
                         "batches": self.batcher.batches, "queries": self.batcher.queries},
            "limits": {"max_k": cfg.max_k, "max_queries": cfg.max_queries, "max_hits": cfg.max_hits,
                       "max_documents": cfg.max_documents, "max_query_chars": cfg.max_query_chars,
                       "max_body_bytes": cfg.max_body_bytes, "max_history": MAX_HISTORY},
            "pending_writes": len(self.wal) if self.wal is not None else 0,
            "last_save": self.last_save,
            "pid": os.getpid(),
            "recommend": self.recommend_settings.as_dict(),
        }

    # ---------------------------------------------------------------- saving
    def _save(self) -> None:
        """Save the index folder atomically on the index thread (at start and at shutdown)."""
        seq = self._begin_save()
        if seq is not None:
            started, identity = time.perf_counter(), None
            try:
                identity = self._write_folder()
            finally:
                self._end_save(seq, identity, started)

    def _begin_save(self) -> int | None:
        """On the index thread: record in the doc store which log entries the save holds, hold writes back
        until :meth:`_end_save`; the log position, or None when there is nothing to save."""
        if not self.dirty or self.wal is None:
            return None
        seq = self.wal.last_seq()
        store = self.index.store  # written to since the load (dirty), so no longer the read-only original
        store.set_meta(SNAPSHOT_LOG_ID, self.wal.log_id)
        store.set_meta(SNAPSHOT_LOG_SEQ, str(seq))
        store.commit()
        self.batcher.pause_writes()
        return seq

    def _write_folder(self) -> str:
        """Write the folder and fsync it (any thread, while writes are held back); its snapshot identity."""
        self.index.save(self.config.index_dir)
        fsync_folder(self.config.index_dir)  # on disk before the log forgets what it holds
        return snapshot_identity(SearchIndex.read_manifest(self.config.index_dir))

    def _end_save(self, seq: int, identity: str | None, started: float) -> None:
        """On the index thread: drop the log entries a completed save holds (identity None: it failed, keep
        them), and let the held-back writes in."""
        try:
            if identity is not None:
                self.wal.rebase(identity, seq)
                self.dirty = False  # no write ran since _begin_save: they were held back
                self.last_save = time.time()
                log.info("saved %s (%d documents) in %.2f s", self.config.index_dir, self.n_docs,
                         time.perf_counter() - started)
        finally:
            self.batcher.resume_writes()

    def save_now(self) -> None:
        """Save the index folder when it changed. Call from any thread but the index thread: it writes the
        folder from the calling thread while the index thread answers searches and reads."""
        with self._save_lock:
            if not self._save_beside:
                self.batcher.call(self._save).result()
                return
            seq = self.batcher.call(self._begin_save).result()
            if seq is None:
                return
            started, identity = time.perf_counter(), None
            try:
                identity = self._write_folder()
            finally:
                self.batcher.call(partial(self._end_save, seq, identity, started)).result()

    def _shutdown(self) -> None:
        try:
            if self.config.allow_writes:
                self._save()
        finally:
            self._release()

    def _release(self) -> None:
        if self.wal is not None:
            self.wal.close()
            self.wal = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if self.index is not None:
            self.index.close()

    def _save_loop(self) -> None:
        while not self._stop.wait(self.config.save_interval_s):
            if not self.dirty:
                continue
            try:
                self.save_now()
            except Exception:  # noqa: BLE001 - the log still holds every write; try again next time
                log.exception("saving %s failed; the write-ahead log keeps the writes", self.config.index_dir)

    # ---------------------------------------------------------------- encoding (any thread)
    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts as queries are, a chunk at a time (see :meth:`_chunked`)."""
        return self._chunked(texts, lambda part: self.index.encode_queries(part, batch_size=WRITE_ENCODE_CHUNK))

    def _encode_documents(self, docs: Sequence[Document]) -> np.ndarray:
        """Encode documents as the index embeds them (by id and text for a recommender's items), a chunk at a
        time (see :meth:`_chunked`)."""
        return self._chunked(docs, lambda part: self.index.encode_documents(part, batch_size=WRITE_ENCODE_CHUNK))

    def _chunked(self, items: Sequence[Any], encode: Callable[[Sequence[Any]], np.ndarray]) -> np.ndarray:
        """``encode`` over ``items`` a chunk of :data:`WRITE_ENCODE_CHUNK` at a time under the encoder's lock,
        letting query batches in between (on a request's thread, under the batcher's ThreadGovernor, as the
        searches are)."""
        parts = []
        previous = install(self.batcher.governor)
        try:
            for start in range(0, len(items), WRITE_ENCODE_CHUNK):
                with self.encode_lock:
                    parts.append(encode(items[start : start + WRITE_ENCODE_CHUNK]))
        finally:
            install(previous)
        return np.concatenate(parts) if parts else np.zeros((0, self.index.dim), np.float32)

    # ---------------------------------------------------------------- what the routes await
    async def _on_index_thread(self, fn: Callable, *args, bounded: bool = True, write: bool = False) -> Any:
        """``fn(*args)`` on the index thread. ``bounded`` (a client's read): refused with BusyError past
        ``max_pending``; ``write``: held back while a save is running."""
        return await asyncio.wrap_future(self.batcher.call(partial(fn, *args), bounded=bounded, write=write))

    async def search_found(self, queries: Sequence[str], k: int,
                           filter: dict[str, Any] | None = None) -> Found:
        """``(document, score)`` pairs for each query, best first."""
        item = SearchItem(tuple(queries), int(k), tuple(sorted(filter.items())) if filter else None)
        return await asyncio.wrap_future(self.batcher.submit(item, size=len(item.queries)))

    async def search(self, queries: Sequence[str], k: int, filter: dict[str, Any] | None = None,
                     view: HitView = HitView()) -> list[list[dict]]:
        """Hits (dicts: id, score, text, title, metadata, as ``view`` selects) for each query, best first."""
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(view.hits, await self.search_found(queries, k, filter))

    async def get(self, doc_id: str) -> Document | None:
        return await self._on_index_thread(lambda: self.index.get(doc_id))

    async def get_many(self, doc_ids: Sequence[str]) -> dict[str, Document]:
        """The documents of ``doc_ids`` that are in the index, by id (one trip to the index thread)."""
        return await self._on_index_thread(lambda: {i: d for i in doc_ids if (d := self.index.get(i)) is not None})

    async def encode(self, texts: Sequence[str], *, bounded: bool = False) -> np.ndarray:
        """``texts`` as the index embeds them, (n, dim) unit rows: on a thread-pool thread, under the encoder's
        lock a chunk at a time (as a write's documents are), so query batches go on meanwhile. ``bounded`` (a
        client's read, such as ``/recommend``'s ``because``): the texts count against ``max_pending`` while
        they wait and encode, and past it :class:`~textcl.serve.batcher.BusyError` is raised (a route answers
        503 unless it catches it: ``/recommend`` then leaves ``because`` out)."""
        from starlette.concurrency import run_in_threadpool

        if not bounded:
            return await run_in_threadpool(self._encode, list(texts))
        with self.batcher.admitted(len(texts)):
            return await run_in_threadpool(self._encode, list(texts))

    async def user_vector(self, ids: Sequence[str | None], texts: Sequence[str]) -> np.ndarray:
        """A sequence recommender's (d,) user vector for a history (oldest first; see
        :meth:`~textcl.recommend.tower.SequenceTower.user_vector`): off the event loop, under the encoder's lock,
        the texts it encodes counted against ``max_pending`` (see :meth:`_bounded_encode`)."""
        ids, texts = list(ids)[-self.encoder.history:], list(texts)[-self.encoder.history:]
        return await self._bounded_encode(ids, texts, self.encoder.user_vector)

    async def item_vectors(self, ids: Sequence[str | None], texts: Sequence[str]) -> np.ndarray:
        """A sequence recommender's (n, d) unit item vectors (ids None: items given by their text), as
        :meth:`user_vector` runs."""
        return await self._bounded_encode(list(ids), list(texts), self.encoder.encode_documents)

    async def _bounded_encode(self, ids: list[str | None], texts: list[str], fn: Callable) -> Any:
        """``fn(ids, texts)`` of the sequence recommender on a thread-pool thread: first the texts it would
        encode (:meth:`~textcl.recommend.tower.SequenceTower.missing`) are encoded a chunk of
        :data:`WRITE_ENCODE_CHUNK` at a time under the encoder's lock (query batches go on between chunks), then
        ``fn`` runs under it without encoding. Those texts count against ``max_pending`` meanwhile, at most
        ``max_pending`` of them (a request that needs more runs when no other waits, rather than never);
        :class:`~textcl.serve.batcher.BusyError` past it."""
        from starlette.concurrency import run_in_threadpool

        missing = self.encoder.missing(ids, texts)

        def run():
            previous = install(self.batcher.governor)
            try:
                for start in range(0, len(missing), WRITE_ENCODE_CHUNK):
                    with self.encode_lock:
                        self.encoder.remember(missing[start : start + WRITE_ENCODE_CHUNK])
                with self.encode_lock:
                    return fn(ids, texts)
            finally:
                install(previous)

        with self.batcher.admitted(min(len(missing), self.batcher.max_pending)):
            return await run_in_threadpool(run)

    async def search_vector(self, vector: np.ndarray, k: int) -> list[tuple[Document, float]]:
        """The ``k`` best ``(document, score)`` pairs for the (d,) unit ``vector``, best first (a client's read:
        refused with BusyError past ``max_pending``)."""
        def run():
            if self.n_docs == 0:
                return []
            scores, labels = self.index.search_vectors(np.asarray(vector, np.float32)[None], k=k)
            docs = self.index.store.fetch(labels[0].tolist())
            return [(docs[lab], float(sc)) for sc, lab in zip(scores[0], labels[0].tolist()) if lab in docs]

        return await self._on_index_thread(run)

    async def info(self) -> dict[str, Any]:
        return await self._on_index_thread(self._info)

    async def write(self, docs: list[Document], mode: str = "upsert") -> int:
        """Add or upsert ``docs``; durable when this returns the new document count."""
        from starlette.concurrency import run_in_threadpool

        if mode == "add":  # fail before the encoding; checked again on the index thread
            await self._on_index_thread(self._refuse_existing, [d.id for d in docs])
        vecs = await run_in_threadpool(self._encode_documents, docs)
        return await self._on_index_thread(self._write, docs, vecs, mode, bounded=False, write=True)

    async def delete(self, doc_id: str) -> int:
        return await self._on_index_thread(self._delete, doc_id, bounded=False, write=True)

    async def save(self) -> None:
        """Save now when the index changed (searches go on meanwhile; see :meth:`save_now`)."""
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(self.save_now)

    @property
    def healthy(self) -> bool:
        return self.batcher.alive and self.index is not None and not self._closed

