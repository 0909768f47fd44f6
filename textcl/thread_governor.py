"""Torch's threads kept at the cores other processes leave free, re-measured as the work runs.

On 2 cores, a thread per core beside one busy process made a training step 1.9x slower than one thread and
serving 3.8x slower (benchmarks/RESULTS.md, "Threads" and "Serving threads"): each operation's threads wait at
its barrier for the core the other process holds. A :class:`ThreadGovernor` reads what the other processes take
(``textcl.cpu_load``) and sets torch's intra-op threads to ``floor(cpus - others + SLACK)``, between 1 and the
rule's count (``textcl.threads.threads_for``).

- Down at once, up slowly: a drop needs two readings in a row below the current count; a rise needs three in a
  row above it, goes one thread at a time, and waits out a random hold after the last drop, so that several
  governed processes on one machine do not rise and collide in step.
- Per thread: torch's count belongs to the calling thread, so the thread that runs a model calls :meth:`tune`
  (a clock read; a ``/proc/stat`` read at most once per ``interval``). Threads running batches at once inside
  :meth:`ThreadGovernor.running` share the count between them.
- Where it applies: :func:`install` makes a governor the calling thread's (training installs it on its own
  thread, ``textcl encode`` / ``index build`` through :func:`governing`, a server's batchers each on theirs);
  ``Encoder.encode`` calls :func:`tune_current` before each batch. An explicit count or ``OMP_NUM_THREADS``
  means no governor at all.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import threading
import time
from typing import Callable, Iterator

from textcl.cpu_load import CpuTimes, affinity, others_busy, read_times
from textcl.threads import threads_for

__all__ = ["SLACK", "free_threads", "ThreadGovernor", "governor_for", "install", "current", "tune_current",
           "governing", "running"]

#: free cores are rounded down after adding this much: 1.8 free cores is 2 threads, 1.7 is 1
SLACK = 0.25
DOWN_READINGS, UP_READINGS = 2, 3
#: after a drop, a rise waits this many intervals, drawn at random (so governed neighbours do not move in step)
HOLD_INTERVALS = (5.0, 15.0)


def free_threads(ceiling: int, cpus: int, others: float) -> int:
    """Threads for the CPUs that ``others`` (cores' worth used by other processes) leave free of the ``cpus``
    counted: ``floor(cpus - others + SLACK)``, between 1 and ``ceiling``."""
    return max(1, min(int(ceiling), math.floor(cpus - others + SLACK)))


class ThreadGovernor:
    """Keeps the calling threads' torch threads at the cores other processes leave free (module docstring).

    ``ceiling``: the most threads (the rule's count: usable cores, a container's quota, shared among processes).
    ``sample``, ``set_threads``, ``get_threads``, ``clock`` and ``rng`` are for tests."""

    def __init__(self, ceiling: int, *, interval: float = 1.0, sample: Callable[[], CpuTimes | None] | None = None,
                 set_threads: Callable[[int], None] | None = None, get_threads: Callable[[], int] | None = None,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None):
        self.ceiling = max(1, int(ceiling))
        self.interval = interval
        cpus = affinity()  # fixed now: a later reading on another set of CPUs is not compared with this one
        self._sample = sample or (lambda: read_times(cpus=cpus))
        self._clock = clock
        self._set = set_threads or _torch_set_threads
        self._get = get_threads or _torch_get_threads
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self.target = self.ceiling
        self.others: float | None = None  #: the last measured load of other processes, in cores' worth
        self.cpus: int | None = None  #: the CPUs the last reading counted
        self._down = self._up = 0  # readings in a row below / above the target
        self._hold_until = 0.0
        self._active = 0  # threads inside running()
        self._start = clock()
        self.changes: list[dict] = []  #: each change of target: seconds since start, threads, others' load
        self._last = self._sample()
        self._last_at = self._start

    # ---------------------------------------------------------------- measuring
    def measure(self) -> int:
        """Take a reading when one is due, move the target by the rules above, and return it."""
        now = self._clock()
        if now - self._last_at < self.interval:
            return self.target
        with self._lock:
            if now - self._last_at < self.interval:
                return self.target
            reading = self._sample()
            others = None if reading is None or self._last is None else others_busy(self._last, reading)
            self._last, self._last_at = reading, now
            if others is None:  # no reading, or one not comparable with the last: the agreeing count restarts
                self._down = self._up = 0
                return self.target
            self.others, self.cpus = others, reading.cpus
            free = free_threads(self.ceiling, reading.cpus, others)
            self._down = self._down + 1 if free < self.target else 0
            self._up = self._up + 1 if free > self.target else 0
            if self._down >= DOWN_READINGS:
                self._change(free, now)
                self._hold_until = now + self.interval * self._rng.uniform(*HOLD_INTERVALS)
            elif self._up >= UP_READINGS and now >= self._hold_until:
                self._change(self.target + 1, now)
        return self.target

    def settle(self, seconds: float = 0.3) -> int:
        """Measure over ``seconds`` now (before the work starts) and adopt the result at once; returns the target.
        The caller's threads change at its next :meth:`tune`."""
        with self._lock:
            start = self._sample()
            if start is None:
                return self.target
            time.sleep(seconds)
            end = self._sample()
            others = None if end is None else others_busy(start, end)
            if others is not None:
                self.others, self.cpus = others, end.cpus
                self._change(free_threads(self.ceiling, end.cpus, others), self._clock(), always=True)
            self._last, self._last_at = end, self._clock()
            self._down = self._up = 0
        return self.target

    def _change(self, threads: int, now: float, always: bool = False) -> None:
        self._down = self._up = 0
        if threads != self.target or always:
            self.target = threads
            if len(self.changes) < 100:
                self.changes.append({"at_s": round(now - self._start, 3), "threads": threads,
                                     "others": None if self.others is None else round(self.others, 3)})

    # ---------------------------------------------------------------- applying
    def tune(self) -> int:
        """Set the calling thread's torch threads to its share of the target (measuring when due); returns it.
        Sets the count whenever the thread's own differs, whoever set it last."""
        share = max(1, self.measure() // max(1, self._active))
        if self._get() != share:
            self._set(share)
        return share

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """A batch on the calling thread: threads inside at the same time share the target between them."""
        with self._lock:
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1

    def to_dict(self) -> dict:
        """What ``metrics.json`` records under ``thread_governor``."""
        return {"ceiling": self.ceiling, "cpus": self.cpus, "threads": self.target,
                "others": None if self.others is None else round(self.others, 3), "changes": list(self.changes)}


def _torch_set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _torch_get_threads() -> int:
    import torch

    return torch.get_num_threads()


def governor_for(work: str, *, processes: int = 1, workers: int = 1, explicit: int | None = None,
                 environ: dict | None = None) -> ThreadGovernor | None:
    """A :class:`ThreadGovernor` for ``work`` whose ceiling is :func:`~textcl.threads.threads_for`, or None when
    the threads are fixed: ``explicit`` given, or ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set."""
    env = os.environ if environ is None else environ
    if explicit is not None or env.get("OMP_NUM_THREADS") or env.get("MKL_NUM_THREADS"):
        return None
    return ThreadGovernor(threads_for(work, processes=processes, workers=workers))


_local = threading.local()  # each thread's governor: two servers in one process keep their own


def install(governor: ThreadGovernor | None) -> ThreadGovernor | None:
    """Make ``governor`` the calling thread's (None: none); returns the one it replaces."""
    previous = getattr(_local, "governor", None)
    _local.governor = governor
    return previous


def current() -> ThreadGovernor | None:
    """The calling thread's governor, or None."""
    return getattr(_local, "governor", None)


def tune_current() -> None:
    """Tune the calling thread's torch threads with its governor (``Encoder.encode`` calls this before each
    batch); nothing when it has none."""
    governor = current()
    if governor is not None:
        governor.tune()


@contextlib.contextmanager
def running(governor: ThreadGovernor | None) -> Iterator[None]:
    """One batch under ``governor`` (nothing when None): counted in :meth:`ThreadGovernor.running`, tuned."""
    if governor is None:
        yield
        return
    with governor.running():
        governor.tune()
        yield


@contextlib.contextmanager
def governing(work: str, *, processes: int = 1, workers: int = 1,
              explicit: int | None = None) -> Iterator[ThreadGovernor | None]:
    """Within the block the calling thread follows a :class:`ThreadGovernor` for ``work``, settled at the start
    (``Encoder.encode`` tunes before each batch); nothing when the threads are fixed. Yields it or None."""
    governor = governor_for(work, processes=processes, workers=workers, explicit=explicit)
    if governor is None:
        yield None
        return
    governor.settle()
    previous = install(governor)
    try:
        governor.tune()
        yield governor
    finally:
        install(previous)
