"""Torch's threads kept at the cores other processes leave free, re-measured as the work runs.

On 2 cores, a thread per core beside one busy process made a training step 1.9x slower than one thread and
serving 3.8x slower (benchmarks/RESULTS.md, "Threads" and "Serving threads"): each operation's threads wait at
its barrier for the core the other process holds. A :class:`ThreadGovernor` reads what the other processes take
(``textcl.cpu_load``) and sets torch's intra-op threads to ``floor(cpus - others + SLACK)``, between 1 and the
rule's count (``textcl.threads.threads_for``).

- Down at once, up slowly: a drop needs two readings in a row below the current count; a rise needs three in a
  row above it, goes one thread at a time, and waits out a random hold after the last drop, so that several
  governed processes on one machine do not rise and collide in step.
- In a container with a CPU quota, the processes beside ours in the container use the quota too: the cgroup's
  own usage is read with ``/proc/stat`` and the count is the smaller of the two answers.
- Per thread: torch's count belongs to the calling thread, so the thread that runs a model calls :meth:`tune`
  (a clock read; a ``/proc/stat`` read at most once per ``interval``). Encodes running at once anywhere in the
  process (inside :func:`running`: ``Encoder.encode`` enters it) share the count between them.
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

from textcl.cpu_load import CpuTimes, affinity, others_busy, others_in_group, read_times
from textcl.threads import cgroup_quota, threads_for

__all__ = ["SLACK", "free_threads", "ThreadGovernor", "governor_for", "install", "current", "tune_current",
           "governing", "running"]

#: free cores are rounded down after adding this much: 1.8 free cores is 2 threads, 1.7 is 1
SLACK = 0.25
DOWN_READINGS, UP_READINGS = 2, 3
#: after a drop, a rise waits this many intervals, drawn at random (so governed neighbours do not move in step)
HOLD_INTERVALS = (5.0, 15.0)


def free_threads(ceiling: int, cpus: float, others: float) -> int:
    """Threads for the CPUs that ``others`` (cores' worth used by other processes) leave free of the ``cpus``
    counted: ``floor(cpus - others + SLACK)``, between 1 and ``ceiling``."""
    return max(1, min(int(ceiling), math.floor(cpus - others + SLACK)))


class ThreadGovernor:
    """Keeps the calling threads' torch threads at the cores other processes leave free (module docstring).

    ``ceiling``: the most threads (the rule's count: usable cores, a container's quota, shared among processes).
    ``sample``, ``set_threads``, ``get_threads``, ``clock``, ``rng`` and ``quota`` (the cgroup's CPU quota;
    read from the kernel when ``sample`` is not given) are for tests."""

    def __init__(self, ceiling: int, *, interval: float = 1.0, sample: Callable[[], CpuTimes | None] | None = None,
                 set_threads: Callable[[int], None] | None = None, get_threads: Callable[[], int] | None = None,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 quota: float | None = None):
        self.ceiling = max(1, int(ceiling))
        self.interval = interval
        cpus = affinity()  # fixed now: a later reading on another set of CPUs is not compared with this one
        self.quota = cgroup_quota() if sample is None else quota
        root = "/sys/fs/cgroup" if self.quota is not None else None
        self._sample = sample or (lambda: read_times(cpus=cpus, cgroup_root=root))
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
            reading, before = self._sample(), self._last
            others = None if reading is None or before is None else others_busy(before, reading)
            self._last, self._last_at = reading, now
            if others is None:  # no reading, or one not comparable with the last: the agreeing count restarts
                self._down = self._up = 0
                return self.target
            self.others, self.cpus = others, reading.cpus
            free = self._free(before, reading, others)
            self._down = self._down + 1 if free < self.target else 0
            self._up = self._up + 1 if free > self.target else 0
            if self._down >= DOWN_READINGS:
                self._change(free, now)
                self._hold_until = now + self.interval * self._rng.uniform(*HOLD_INTERVALS)
            elif self._up >= UP_READINGS and now >= self._hold_until:
                self._change(self.target + 1, now)
        return self.target

    def _free(self, before: CpuTimes, after: CpuTimes, others: float) -> int:
        """Threads for what the other processes leave: of the CPUs counted, and of the cgroup's quota."""
        free = free_threads(self.ceiling, after.cpus, others)
        in_group = others_in_group(before, after) if self.quota is not None else None
        if in_group is not None:
            free = min(free, free_threads(self.ceiling, self.quota, in_group))
        return free

    def settle(self, seconds: float = 0.3) -> int:
        """Measure over ``seconds`` now (before the work starts) and adopt the result at once; returns the target.
        The caller's threads change at its next :meth:`tune`."""
        start = self._sample()  # outside the lock: tune() on other threads goes on meanwhile
        if start is None:
            return self.target
        time.sleep(seconds)
        end = self._sample()
        with self._lock:
            others = None if end is None else others_busy(start, end)
            if others is not None:
                self.others, self.cpus = others, end.cpus
                self._change(self._free(start, end, others), self._clock(), always=True)
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
        """Set the calling thread's torch threads to its share of the target (measuring when due): the target
        split between the encodes running in this process (:func:`running`); returns it. Sets the count whenever
        the thread's own differs, whoever set it last."""
        share = max(1, self.measure() // max(1, _ACTIVE.count))
        if self._get() != share:
            self._set(share)
        return share

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


class _Active:
    """How many encodes run at once in this process, whichever governor they follow."""

    def __init__(self):
        self.count = 0
        self.lock = threading.Lock()


_ACTIVE = _Active()
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
def running(governor: ThreadGovernor | None = None) -> Iterator[None]:
    """An encode on the calling thread under ``governor`` (default: the thread's own; nothing when there is
    none): counted among the process's running encodes, which share the target, and tuned."""
    governor = governor or current()
    if governor is None:
        yield
        return
    with _ACTIVE.lock:
        _ACTIVE.count += 1
    try:
        governor.tune()
        yield
    finally:
        with _ACTIVE.lock:
            _ACTIVE.count -= 1


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
    previous, threads_before = install(governor), governor._get()
    try:
        governor.tune()
        yield governor
    finally:
        install(previous)
        governor._set(threads_before)  # what the block's last reading chose does not outlive it
