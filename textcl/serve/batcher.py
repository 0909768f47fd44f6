"""``MicroBatcher``: one thread that owns the index; it gathers concurrent queries into batches.

Concurrent search requests each :meth:`~MicroBatcher.submit` an item (one request, holding one or more
queries). The thread takes the first waiting item and every item already queued behind it, up to
``max_batch`` queries, and hands the whole batch to ``handler`` (which encodes all its queries in one forward
and searches them as one FAISS batch). Under load, the requests that arrive while a batch is being answered
form the next batch, so batches grow with the load. While batches are forming (the last one held more than
one query), the first item also waits up to ``max_wait_s`` for company: the clients just answered are
about to send their next request. A lone client never waits. ``enabled=False`` answers each request alone
(the benchmark's "without micro-batching" arm).

The same thread runs every other operation on the index (:meth:`~MicroBatcher.call`), one at a time,
between batches. That is the one-writer rule. A write holds the thread only to log and apply it; encoding
happens before. While the index is saved from another thread, :meth:`~MicroBatcher.pause_writes` holds the
calls marked ``write`` back (in order) and the thread keeps answering searches and reads.

A request whose client is gone cancels its future; the thread skips it (a future is marked running before
its work starts, so it cannot be cancelled half-way and then refuse its result).
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Generic, Sequence, TypeVar

from textcl.thread_governor import current, install

T = TypeVar("T")
R = TypeVar("R")


class BusyError(RuntimeError):
    """More queries are waiting than ``max_pending``: the client should retry later (HTTP 503)."""


class ShuttingDownError(BusyError):
    """The batcher is closed (the server is stopping): nothing more is queued (HTTP 503)."""


@dataclass
class _Item(Generic[T]):
    value: T
    size: int
    future: Future


@dataclass
class _Call:
    fn: Callable[[], Any]
    future: Future
    size: int = 0  # counted against max_pending when > 0
    write: bool = False  # held back while writes are paused


_STOP = object()


class MicroBatcher(Generic[T, R]):
    """Args:
        handler: ``handler(items) -> results``, one result (or an Exception, delivered to that item's
            future) per item, in order. Runs on the batcher's thread.
        max_batch: most queries (the sum of item sizes) in one batch; an item larger than this runs alone.
        max_wait_s: how long the first item of a batch waits for more when no more are queued, while
            batches are forming (the previous batch held more than one query).
        enabled: False makes every batch a single item.
        max_pending: queries waiting beyond this make :meth:`submit` raise :class:`BusyError`.
    """

    def __init__(self, handler: Callable[[list[T]], Sequence[R | BaseException]], max_batch: int = 64,
                 max_wait_s: float = 0.002, enabled: bool = True, max_pending: int = 4096,
                 name: str = "textcl-index"):
        self.handler = handler
        self.max_batch = max(1, int(max_batch))
        self.max_wait_s = max(0.0, float(max_wait_s))
        self.enabled = enabled
        self.max_pending = max_pending
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._held: _Item | None = None  # an item taken while filling a batch that did not fit in it
        self._writes_paused = False  # read and changed on the batcher's thread only
        self._deferred: list[_Call] = []  # writes that arrived while paused, in order
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False
        self._closed = False
        #: the constructing thread's ThreadGovernor (textcl.thread_governor), made this batcher thread's own
        self.governor = current()
        self.batches = 0  # statistics, for /info and the tests
        self.queries = 0
        self._last_size = 0

    # ---------------------------------------------------------------- API
    def start(self) -> "MicroBatcher[T, R]":
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def submit(self, value: T, size: int = 1) -> Future:
        """Queue a search item holding ``size`` queries; its future resolves to the handler's result.
        Raises :class:`BusyError` past ``max_pending``, :class:`ShuttingDownError` once closed."""
        self._reserve(size)
        future: Future = Future()
        self._queue.put(_Item(value, size, future))
        return future

    def call(self, fn: Callable[[], Any], *, bounded: bool = False, write: bool = False) -> Future:
        """Run ``fn()`` on the batcher's thread, alone, between batches; the future gets its result.

        ``bounded``: counts as one query against ``max_pending`` (what clients ask for; the server's own
        calls, such as saving, are never refused). ``write``: held back while writes are paused."""
        size = 1 if bounded else 0
        self._reserve(size)
        future: Future = Future()
        self._queue.put(_Call(fn, future, size, write))
        return future

    @contextmanager
    def admitted(self, size: int):
        """Count ``size`` queries against ``max_pending`` while the ``with`` block runs work of a client's request
        outside the batcher's thread (encoding that is not a search). Raises :class:`BusyError` past the limit,
        :class:`ShuttingDownError` once closed."""
        self._reserve(size)
        try:
            yield
        finally:
            with self._lock:
                self._pending -= size

    def pause_writes(self) -> None:
        """Hold back write calls until :meth:`resume_writes`. Call on the batcher's thread (from a call)."""
        self._writes_paused = True

    def resume_writes(self) -> None:
        """Run the held-back writes, in order, right after the current call. On the batcher's thread."""
        self._writes_paused = False

    def _reserve(self, size: int) -> None:
        if self._closed:
            raise ShuttingDownError("the server is shutting down")
        with self._lock:
            if size and self._pending + size > self.max_pending:
                raise BusyError(f"{self._pending} queries are waiting (the limit is {self.max_pending}); "
                                "retry shortly")
            self._pending += size

    def close(self, timeout: float | None = 30.0) -> None:
        """Answer what is queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            self._queue.put(_STOP)
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ---------------------------------------------------------------- the thread
    def _next(self, timeout: float | None):
        if self._held is not None:
            item, self._held = self._held, None
            return item
        return self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()

    def _run(self) -> None:
        install(self.governor)  # Encoder.encode on this thread runs its encodes under it
        while True:
            first = self._next(None)
            if first is _STOP:
                self._drain()
                return
            if isinstance(first, _Call):
                self._run_call(first)
                continue
            batch, size = [first], first.size
            deadline = time.perf_counter() + (self.max_wait_s if self._last_size > 1 else 0.0)
            after: Any = None  # a call or the stop signal that ends the batch early
            while self.enabled and size < self.max_batch:
                try:
                    nxt = self._next(deadline - time.perf_counter())
                except queue.Empty:
                    break
                if nxt is _STOP or isinstance(nxt, _Call):
                    after = nxt
                    break
                if size + nxt.size > self.max_batch:
                    self._held = nxt
                    break
                batch.append(nxt)
                size += nxt.size
            self._last_size = size
            self._run_batch(batch, size)
            if after is _STOP:
                self._drain()
                return
            if after is not None:
                self._run_call(after)

    def _run_batch(self, batch: list[_Item], size: int) -> None:
        with self._lock:
            self._pending -= size
        batch = [item for item in batch if item.future.set_running_or_notify_cancel()]  # skip the cancelled
        if not batch:
            return
        self.batches += 1
        self.queries += sum(item.size for item in batch)
        try:
            results = list(self.handler([item.value for item in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"handler returned {len(results)} results for {len(batch)} items")
        except BaseException as exc:  # noqa: BLE001 - delivered to every waiting request
            results = [exc] * len(batch)
        for item, result in zip(batch, results):
            _deliver(item.future, result)

    def _run_call(self, call: _Call) -> None:
        if call.write and self._writes_paused:
            self._deferred.append(call)
            return
        with self._lock:
            self._pending -= call.size
        if call.future.set_running_or_notify_cancel():
            try:
                result = call.fn()
            except BaseException as exc:  # noqa: BLE001 - delivered to the caller
                result = exc
            _deliver(call.future, result)
        while self._deferred and not self._writes_paused:  # writes held back during a save
            self._run_call(self._deferred.pop(0))

    def _drain(self) -> None:
        """At shutdown: answer everything still queued, in order, held-back writes first."""
        self._writes_paused = False
        while self._deferred:
            self._run_call(self._deferred.pop(0))
        while True:
            try:
                nxt = self._next(0)
            except queue.Empty:
                return
            if isinstance(nxt, _Call):
                self._run_call(nxt)
            elif nxt is not _STOP:
                self._run_batch([nxt], nxt.size)


def _deliver(future: Future, result: Any) -> None:
    """Settle a running future (a running future cannot be cancelled, so this cannot raise)."""
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
