"""Measured defaults: what runs fast on the machine at hand, measured once and cached.

textcl's automatic choices (``mixed_precision: auto``, the chunk cost of :meth:`Encoder.forward`) are decided by
a short measurement on this machine, never by a capability flag: oneDNN reports bf16 as supported on every
AVX-512 CPU, yet bf16 autocast is about 1.5x faster only where the CPU has avx512_bf16 or AMX, and 2.5-24x
slower on the others. A measurement runs the first time a choice is needed and is cached per machine (CPU
model and the flags that matter, or the GPU), device, torch version and model shape, one JSON file per entry
under ``$TEXTCL_CACHE/calibration/`` (default ``~/.cache/textcl``). A corrupt or stale entry is measured and
written again, never fatal. Processes on one machine take a file lock, so the ranks of a job measure once and
agree. An explicit setting always wins over a measurement.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from textcl._io import atomic_write_json, read_json
from textcl.cpu_load import others_busy, read_times

__all__ = ["SCHEMA", "cache_dir", "machine_profile", "measured", "list_calibrations", "best_time"]

#: bump when the meaning of a cached entry changes: older entries are then measured again
SCHEMA = 1
_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
#: environment variables that cap the instructions torch's kernels use (ATen's shows in cpu_capability)
_ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")


def cache_dir() -> Path:
    """``$TEXTCL_CACHE/calibration`` (``~/.cache/textcl/calibration`` by default)."""
    return Path(os.environ.get("TEXTCL_CACHE") or Path.home() / ".cache" / "textcl") / "calibration"


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = "unknown", []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model == "unknown":
                    model = value.strip()
                elif key == "flags" and not flags:
                    present = set(value.split())
                    flags = [f for f in _CPU_FLAGS if f in present]
    except OSError:
        pass
    return model, flags


def machine_profile(device_type: str = "cpu") -> dict:
    """What a measurement on ``device_type`` depends on: the CPU (model, the vector/matrix flags, usable
    cores, torch's threads and kernel level, instruction-set caps set in the environment) or the GPU (name, compute capability, memory), and the torch
    version."""
    model, flags = _cpuinfo()
    from textcl.threads import usable_cores

    cores = usable_cores()
    profile = {"device": device_type, "torch": torch.__version__, "cpu": model, "cpu_flags": flags, "cores": cores,
               "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    # instruction-set caps set for oneDNN, MKL (a machine restricted to an older CPU class measures as one)
    caps = {k: os.environ[k] for k in _ISA_CAPS if os.environ.get(k)}
    if caps:
        profile["isa_caps"] = caps
    if device_type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        profile.update(gpu=props.name, gpu_capability=f"{props.major}.{props.minor}",
                       gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return profile


def _key(kind: str, profile: dict, shape: dict) -> str:
    blob = json.dumps({"schema": SCHEMA, "kind": kind, "profile": profile, "shape": shape}, sort_keys=True)
    return hashlib.blake2b(blob.encode("utf-8"), digest_size=8).hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created), so processes of one machine measure one at a time. Where the
    cache folder cannot be written (a read-only home) or there is no ``fcntl`` (Windows), no lock: the
    measurement still runs and decides, it is just not shared."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")
    except (ImportError, OSError):
        yield
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _others_share(probe: Callable[[], dict[str, float]]) -> tuple[dict[str, float], float | None]:
    """Run ``probe()``; also return the share of this process's CPUs that other processes used meanwhile
    (0: the probe had them to itself; None where the kernel does not say or the window was under 0.1 s)."""
    before = read_times()
    values = probe()
    after = read_times()
    if before is None or after is None or after.wall - before.wall < 0.1:  # too short a window to judge
        return values, None
    others = others_busy(before, after)
    return values, None if others is None else min(1.0, others / after.cpus)


#: a measurement during which other processes used more than this share of the CPU was disturbed: not cached
MAX_OTHERS_SHARE = 0.2
#: what this process measured, by cache file: a disturbed (uncached) answer too, so one process decides once
_DECIDED: dict[str, dict] = {}


def _valid(entry, kind: str, key: str, required: tuple[str, ...] = ()) -> bool:
    if not isinstance(entry, dict) or entry.get("schema") != SCHEMA or entry.get("kind") != kind:
        return False
    values = entry.get("values")
    return (entry.get("key") == key and isinstance(values, dict) and bool(values)
            and all(name in values for name in required)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                    for v in values.values()))


def measured(kind: str, device_type: str, shape: dict, probe: Callable[[], dict[str, float]],
             steady: Callable[[dict], bool] = lambda values: True, required: tuple[str, ...] = ()) -> dict:
    """The cached entry of measurement ``kind`` for this machine, ``device_type`` and model ``shape``; runs
    ``probe() -> {name: positive seconds or ratio}`` and caches it when there is no valid entry.

    ``steady(values)`` says whether the measurement was undisturbed (e.g. two rounds agree), and so does the
    share of the CPU other processes used meanwhile (at most :data:`MAX_OTHERS_SHARE`). A disturbed one is
    returned with ``steady: False`` and not cached: the caller falls back on a safe default, and a later process
    measures again rather than keeping a figure taken while other work shared the cores. Within one process the
    first answer stands (two trainings in one program must not differ by a re-measurement).

    Returns ``{"schema", "kind", "key", "profile", "shape", "values", "measured_at", "cached", "steady"}``;
    ``cached`` says whether the values came from the cache (False: measured now). ``required``: the value names
    the caller reads; an entry without one of them is measured again and rewritten, like a corrupt one."""
    profile = machine_profile(device_type)
    key = _key(kind, profile, shape)
    path = cache_dir() / f"{kind}-{key}.json"
    if str(path) in _DECIDED:  # one answer per process: two runs in one program must not differ by a re-measure
        return {**_DECIDED[str(path)], "cached": True}
    with _locked(path.with_suffix(".lock")):
        try:
            entry = read_json(path)
        except (OSError, ValueError):  # missing, unreadable or corrupt: measure again
            entry = None
        if _valid(entry, kind, key, required):
            _DECIDED[str(path)] = {**entry, "cached": True, "steady": True}
            return _DECIDED[str(path)]
        raw, others = _others_share(probe)
        values = {k: float(v) for k, v in raw.items()}
        entry = {"schema": SCHEMA, "kind": kind, "key": key, "profile": profile, "shape": shape, "values": values,
                 "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if not _valid(entry, kind, key, required):
            raise ValueError(f"calibration {kind}: the probe gave {values!r}; expected positive finite numbers"
                             + (f" for {', '.join(required)}" if required else ""))
        # other processes' CPU use disturbs CPU timings; a GPU's are judged by the probe's own check
        ok = bool(steady(values)) and (device_type != "cpu" or others is None or others <= MAX_OTHERS_SHARE)
        entry["others_share"] = None if others is None else round(others, 3)
        if ok:
            try:
                atomic_write_json(path, entry)
            except OSError:  # a read-only cache: the measurement still decides this run
                pass
    _DECIDED[str(path)] = {**entry, "cached": False, "steady": ok}
    return _DECIDED[str(path)]


def list_calibrations() -> list[dict]:
    """Every valid cached entry (for ``textcl env``), oldest first."""
    folder = cache_dir()
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            entry = read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(entry, dict) and _valid(entry, str(entry.get("kind")), str(entry.get("key"))):
            out.append(entry)
    return sorted(out, key=lambda e: e.get("measured_at", ""))


def best_time(fn: Callable[[], None], repeats: int, device_type: str) -> float:
    """The fastest wall time of ``fn()`` over ``repeats`` runs after one warm-up run (synchronising a GPU):
    on a shared machine the fastest run is the one least disturbed by other work."""
    sync = torch.cuda.synchronize if device_type == "cuda" else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)
