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
between batches. That is the one-writer rule, and it also keeps the doc store's SQLite connection on the
thread that opened it. A write holds the thread only to log and apply it; encoding happens before.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class BusyError(RuntimeError):
    """More queries are waiting than ``max_pending``: the client should retry later (HTTP 503)."""


@dataclass
class _Item(Generic[T]):
    value: T
    size: int
    future: Future


@dataclass
class _Call:
    fn: Callable[[], Any]
    future: Future


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
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False
        self._closed = False
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
        """Queue a search item holding ``size`` queries; its future resolves to the handler's result."""
        if self._closed:
            raise RuntimeError("the server is shutting down")
        with self._lock:
            if self._pending + size > self.max_pending:
                raise BusyError(f"{self._pending} queries are waiting (the limit is {self.max_pending}); "
                                "retry shortly")
            self._pending += size
        future: Future = Future()
        self._queue.put(_Item(value, size, future))
        return future

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn()`` on the batcher's thread, alone, between batches; the future gets its result."""
        if self._closed:
            raise RuntimeError("the server is shutting down")
        future: Future = Future()
        self._queue.put(_Call(fn, future))
        return future

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
        while True:
            first = self._next(None)
            if first is _STOP:
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
        self.batches += 1
        self.queries += size
        try:
            results = list(self.handler([item.value for item in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"handler returned {len(results)} results for {len(batch)} items")
        except BaseException as exc:  # noqa: BLE001 - delivered to every waiting request
            results = [exc] * len(batch)
        for item, result in zip(batch, results):
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)

    @staticmethod
    def _run_call(call: _Call) -> None:
        try:
            call.future.set_result(call.fn())
        except BaseException as exc:  # noqa: BLE001 - delivered to the caller
            call.future.set_exception(exc)

    def _drain(self) -> None:
        """At shutdown: answer everything still queued, in order."""
        while True:
            try:
                nxt = self._next(0)
            except queue.Empty:
                return
            if isinstance(nxt, _Call):
                self._run_call(nxt)
            elif nxt is not _STOP:
                self._run_batch([nxt], nxt.size)
