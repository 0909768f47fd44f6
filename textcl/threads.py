"""How many torch threads a textcl process uses for the work at hand, so that the cores are never oversubscribed.

- ``usable_cores()``: the CPUs this process may run on (its affinity mask), capped by a container's CPU quota
  (cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``): torch's default counts the host's cores, so in a
  container limited to 2 CPUs of a 64-core host it would start 32 threads that share 2 CPUs.
- Throughput work (``train``, ``encode``: large batches, one process per node or several): the usable cores
  shared among this node's processes. Batches of this size keep every thread busy; on 2 quiet cores one
  thread per core was the fastest (benchmarks/RESULTS.md, "Threads").
- Serving (``serve``): the usable cores shared among the workers, governed (below): a load generator or any
  other process beside the server is measured rather than guessed.
- Beside other busy processes, fewer: a :class:`~textcl.thread_governor.ThreadGovernor` measures what the
  other processes take from these cores (``textcl.cpu_load``) and keeps torch's threads at the cores they leave
  free, at most the rule's count. Threads that wait at every operation's barrier for a core another process
  holds were 1.5-3.8x slower than one thread on 2 cores (benchmarks/RESULTS.md, "Threads" and "Serving threads").

``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` set in the environment always wins (torch reads it itself), as does an
explicit setting: neither is governed.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["usable_cores", "cgroup_quota", "threads_for", "apply_threads"]

WORK = ("train", "encode", "serve")


def cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
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
    quota = cgroup_quota(cgroup_root)
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

