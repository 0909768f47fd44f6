"""How many torch threads a textcl process uses for the work at hand, so that the cores are never oversubscribed.

- ``usable_cores()``: the CPUs this process may run on (its affinity mask), capped by a container's CPU quota
  (cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``): torch's default counts the host's cores, so in a
  container limited to 2 CPUs of a 64-core host it would start 32 threads that share 2 CPUs.
- Throughput work (``train``, ``encode``: large batches, one process per node or several): the usable cores
  shared among this node's processes. Batches of this size keep every thread busy; on 2 cores one thread
  per core was the fastest quiet and beside another busy process (benchmarks/RESULTS.md, "Threads").
- Serving (``serve``): the usable cores shared among the workers, governed (below): a load generator or any
  other process beside the server is measured rather than guessed.

- Beside other busy processes, fewer: a :class:`ThreadGovernor` measures what the other processes take from
  these cores (``textcl.cpu_load``) and keeps torch's threads at the cores they leave free, at most the rule's
  count. Threads that wait at every operation's barrier for a core another process holds were 1.5-3.8x slower
  than one thread on 2 cores (benchmarks/RESULTS.md, "Threads" and "Serving threads").

``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` set in the environment always wins (torch reads it itself), as does an
explicit setting: neither is governed.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from pathlib import Path
from typing import Callable

from textcl.cpu_load import CpuTimes, others_busy, read_times

__all__ = ["usable_cores", "threads_for", "apply_threads", "free_threads", "ThreadGovernor", "governor_for", "install",
           "uninstall", "tune_current", "governing"]

WORK = ("train", "encode", "serve")


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs granted by the cgroup CPU quota (e.g. 1.5), or None when there is none or it cannot be read."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # cgroup v2: "max 100000" or "150000 100000"
        return None if quota == "max" or int(period) <= 0 or int(quota) <= 0 else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: its affinity mask, at most the cgroup CPU quota rounded up; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks on this OS
        cores = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def threads_for(work: str, *, processes: int = 1, workers: int = 1, cores: int | None = None) -> int:
    """torch intra-op threads for one process doing ``work`` (``train``, ``encode`` or ``serve``).

    ``processes``: processes of the job on this node (torchrun's LOCAL_WORLD_SIZE); ``workers``: serving
    processes; ``cores``: the usable cores (default :func:`usable_cores`)."""
    if work not in WORK:
        raise ValueError(f"work: expected one of {', '.join(WORK)}, got {work!r}")
    cores = usable_cores() if cores is None else max(1, int(cores))
    if work == "serve":
        return max(1, cores // max(1, workers))
    return max(1, cores // max(1, processes))


def apply_threads(work: str, *, processes: int = 1, workers: int = 1, explicit: int | None = None,
                  environ: dict | None = None) -> int:
    """Set torch's intra-op threads for ``work`` and return the number in use: ``explicit`` when given, torch's
    own reading of ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` when one is set, else :func:`threads_for`."""
    import torch

    env = os.environ if environ is None else environ
    if explicit is not None:
        n = int(explicit)
    elif env.get("OMP_NUM_THREADS") or env.get("MKL_NUM_THREADS"):
        return torch.get_num_threads()
    else:
        n = threads_for(work, processes=processes, workers=workers)
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return n


#: free cores are rounded down after adding this much: 1.8 free cores is 2 threads, 1.7 is 1
SLACK = 0.25


def free_threads(ceiling: int, cores: int, others: float) -> int:
    """Threads for the cores that ``others`` (cores' worth used by other processes) leave free of ``cores``:
    ``floor(cores - others + SLACK)``, between 1 and ``ceiling``."""
    return max(1, min(int(ceiling), math.floor(cores - others + SLACK)))


class ThreadGovernor:
    """Keeps torch's intra-op threads at the cores other processes leave free, re-measured as the work runs.

    A thread about to run torch work calls :meth:`tune` (cheap: a clock read, and at most every ``interval``
    seconds a ``/proc/stat`` read); torch's thread count is per calling thread, so each thread that runs models
    calls it. A new count takes effect once two readings in a row agree, so one burst does not flip it.
    ``sample``, ``set_threads`` and ``clock`` are for tests."""

    def __init__(self, ceiling: int, *, cores: int | None = None, interval: float = 1.0,
                 sample: Callable[[], CpuTimes | None] = read_times,
                 set_threads: Callable[[int], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.ceiling = max(1, int(ceiling))
        self.cores = usable_cores() if cores is None else max(1, int(cores))
        self.interval = interval
        self._sample, self._clock = sample, clock
        self._set = set_threads or _torch_set_threads
        self._lock = threading.Lock()
        self._local = threading.local()
        self.target = self.ceiling
        self.others: float | None = None  # the last measured load of other processes, in cores' worth
        self._pending: int | None = None
        self._start = clock()
        self.changes: list[dict] = []  #: each change of target: seconds since start, threads, others' load
        self._last = sample()
        self._last_at = self._start

    def measure(self) -> int:
        """Take a reading when one is due and return the current target."""
        now = self._clock()
        if now - self._last_at < self.interval:
            return self.target
        with self._lock:
            if now - self._last_at < self.interval:
                return self.target
            reading = self._sample()
            if reading is not None and self._last is not None:
                self.others = others_busy(self._last, reading)
                choice = free_threads(self.ceiling, self.cores, self.others)
                if choice != self.target and choice == self._pending:
                    self._change(choice, now)
                self._pending = choice
            self._last, self._last_at = reading, now
        return self.target

    def tune(self) -> int:
        """Set the calling thread's torch threads to the current target (measuring when due); returns it."""
        target = self.measure()
        if getattr(self._local, "threads", None) != target:
            self._set(target)
            self._local.threads = target
        return target

    def settle(self, seconds: float = 0.3) -> int:
        """Measure over ``seconds`` now (before work starts, when nothing of ours runs) and adopt the result at
        once, without waiting for a second reading; returns the target."""
        with self._lock:
            start = end = self._sample()
            if start is not None:
                time.sleep(seconds)
                end = self._sample()
                if end is not None:
                    self.others = others_busy(start, end)
                    self._pending = free_threads(self.ceiling, self.cores, self.others)
                    self._change(self._pending, self._clock())
                self._last, self._last_at = end, self._clock()
        return self.tune()

    def _change(self, threads: int, now: float) -> None:
        if threads != self.target or not self.changes:
            self.target = threads
            if len(self.changes) < 100:
                self.changes.append({"at_s": round(now - self._start, 3), "threads": threads,
                                     "others": None if self.others is None else round(self.others, 3)})

    def to_dict(self) -> dict:
        """What ``metrics.json`` records under ``thread_governor``."""
        return {"ceiling": self.ceiling, "cores": self.cores, "threads": self.target,
                "others": None if self.others is None else round(self.others, 3), "changes": list(self.changes)}


def _torch_set_threads(n: int) -> None:
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def governor_for(work: str, *, processes: int = 1, workers: int = 1, explicit: int | None = None,
                 environ: dict | None = None) -> ThreadGovernor | None:
    """A :class:`ThreadGovernor` for ``work`` whose ceiling is :func:`threads_for`, or None when the threads are
    fixed: ``explicit`` given, or ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set."""
    env = os.environ if environ is None else environ
    if explicit is not None or env.get("OMP_NUM_THREADS") or env.get("MKL_NUM_THREADS"):
        return None
    return ThreadGovernor(threads_for(work, processes=processes, workers=workers))


_current: ThreadGovernor | None = None  # the process's governor for threads that run models on its behalf


def install(governor: ThreadGovernor | None) -> ThreadGovernor | None:
    """Make ``governor`` the one :func:`tune_current` uses (None removes it); returns the one it replaces."""
    global _current
    previous, _current = _current, governor
    return previous


def uninstall(governor: ThreadGovernor | None) -> None:
    """Remove ``governor`` if it is the installed one (a closing server leaves a newer one in place)."""
    global _current
    if governor is not None and _current is governor:
        _current = None


def tune_current() -> None:
    """Tune the calling thread's torch threads with the installed governor (a serving batcher calls this before
    each batch); nothing when none is installed."""
    governor = _current
    if governor is not None:
        governor.tune()


@contextlib.contextmanager
def governing(work: str, *, processes: int = 1, workers: int = 1, explicit: int | None = None):
    """Within the block, :func:`tune_current` (which ``Encoder.encode`` calls before each batch) follows a
    :class:`ThreadGovernor` for ``work``, settled at the start; nothing when the threads are fixed
    (``explicit``, ``OMP_NUM_THREADS``). Yields the governor or None."""
    governor = governor_for(work, processes=processes, workers=workers, explicit=explicit)
    if governor is None:
        yield None
        return
    install(governor)
    try:
        governor.settle()
        yield governor
    finally:
        uninstall(governor)
