"""How much of this process's CPUs other processes are using, measured between two moments.

Linux's ``/proc/stat`` counts every CPU's time in clock ticks; this process's own CPU time (all its threads:
torch's, the tokenizer's, an HTTP loop's) is ``time.process_time()``. Over a window, the CPUs' user and system
time less this process's own is what the other processes took: ``others_busy(a, b)`` in cores' worth, e.g. 1.0
beside one process spinning on a core. Not counted: ``nice`` time while this process itself runs at the default
priority or higher (a niced job yields its core to us), interrupt time (the kernel's, partly for our own network
traffic) and steal (the hypervisor's: it shrinks where we run, so reacting to it feeds back on itself). Only the
CPUs in the given set (default: this process's affinity mask) are counted.

Where ``/proc/stat`` cannot be read (not Linux), :func:`read_times` returns None and callers keep their rule.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuTimes", "affinity", "cgroup_usage", "read_times", "others_busy", "others_in_group"]

_USER, _NICE, _SYSTEM = 0, 1, 2  # /proc/stat's first fields (guest time is inside user)


@dataclass(frozen=True)
class CpuTimes:
    """One reading: ``wall`` (monotonic seconds), ``busy`` (busy CPU-seconds summed over the counted CPUs since
    boot), ``own`` (this process's CPU-seconds), ``cpus`` (how many CPUs were counted) and ``group`` (the
    cgroup's CPU-seconds, where the kernel says)."""
    wall: float
    busy: float
    own: float
    cpus: int = 1
    group: float | None = None  #: CPU-seconds this process's cgroup has used (its processes, ours included)


def affinity() -> frozenset[int] | None:
    """The CPUs this process may run on, or None where the OS does not say."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _niced() -> bool:
    try:
        return os.getpriority(os.PRIO_PROCESS, 0) > 0
    except (AttributeError, OSError):
        return False


def cgroup_usage(root: str | Path = "/sys/fs/cgroup") -> float | None:
    """CPU-seconds used by the processes of this process's cgroup (v2 ``cpu.stat`` ``usage_usec``, v1
    ``cpuacct.usage``), or None where neither can be read. In a container the processes beside ours in the
    same container share its CPU quota: what they use is what the quota leaves us."""
    root = Path(root)
    try:
        for line in (root / "cpu.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "usage_usec":
                return int(value) / 1e6
    except (OSError, ValueError):
        pass
    for v1 in (root / "cpuacct" / "cpuacct.usage", root / "cpu,cpuacct" / "cpuacct.usage"):
        try:
            return int(v1.read_text()) / 1e9
        except (OSError, ValueError):
            continue
    return None


def read_times(stat_path: str | Path = "/proc/stat", cpus: frozenset[int] | set[int] | None = None,
               cgroup_root: str | Path | None = None) -> CpuTimes | None:
    """Read the CPUs' busy time and this process's own CPU time now; None when ``stat_path`` is unreadable or
    holds no per-CPU lines. ``cpus``: the CPUs to count (default: this process's affinity mask);
    ``cgroup_root``: also read the cgroup's usage there (:func:`cgroup_usage`)."""
    cpus = affinity() if cpus is None else cpus
    try:
        text = Path(stat_path).read_text()
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    except (OSError, ValueError):
        return None
    fields_counted = (_USER, _NICE, _SYSTEM) if _niced() else (_USER, _SYSTEM)
    busy, seen = 0, 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            cpu = int(name[3:])
            fields = [int(v) for v in rest.split()]
        except ValueError:
            continue
        if cpus is not None and cpu not in cpus:
            continue
        busy += sum(fields[i] for i in fields_counted if i < len(fields))
        seen += 1
    if not seen:
        return None
    group = None if cgroup_root is None else cgroup_usage(cgroup_root)
    return CpuTimes(time.monotonic(), busy / tick, time.process_time(), seen, group)


def others_in_group(before: CpuTimes, after: CpuTimes) -> float | None:
    """Cores' worth of the cgroup's CPU time that its other processes used between two readings (at least 0),
    or None where the cgroup's usage was not read."""
    if before.group is None or after.group is None or after.wall <= before.wall:
        return None
    return max(0.0, ((after.group - before.group) - (after.own - before.own)) / (after.wall - before.wall))


def others_busy(before: CpuTimes, after: CpuTimes) -> float | None:
    """Cores' worth of the counted CPUs that other processes kept busy between two readings (at least 0, at
    most the CPUs counted); None when the two readings counted different CPUs (hotplug, a changed mask)."""
    if before.cpus != after.cpus:
        return None
    wall = after.wall - before.wall
    if wall <= 0:
        return 0.0
    return min(float(after.cpus), max(0.0, ((after.busy - before.busy) - (after.own - before.own)) / wall))
