"""What a training row costs in memory, what the device can give, and the largest mini-batch that fits: the
measured default behind ``loss.mini_batch_size: auto``.

A row's cost is measured, not guessed from the model's shape: :func:`row_memory` runs the encoder forward on
``k`` and ``2k`` copies of a row and counts the bytes of the distinct storages autograd saves for backward
(:func:`saved_storages`, through :class:`torch.autograd.graph.saved_tensors_hooks`), which is what a
forward with a graph holds until its backward. The slope between the two runs is the cost of one row; what
does not grow with the rows (the weights, autocast's copies of them) cancels. Backward briefly adds the
gradients flowing through the largest activation, so :data:`TRANSIENT_COPIES` of the largest per-row saved
tensor are added. The count works on any device and sees what the kernels really save (eager attention's
``(heads, L, L)`` probabilities, dropout masks, or only a fused kernel's log-sum-exp); on CUDA the allocator's
own peak of a forward and backward is measured too, and the larger of the two slopes is taken. On the CPU,
glibc's heap keeps the freed temporaries of a forward (dropout's random buffers, attention scores) between the
tensors that stay, so the process's peak resident memory grew 1.13-1.36x the counted bytes (MiniLM, 32 and 128
tokens, with and without fast dropout): CPU rows are planned at :data:`ALLOCATOR_OVERHEAD` times the count.

The budget (:func:`memory_budget`) is the device's free memory (CUDA: ``torch.cuda.mem_get_info`` plus what
torch's caching allocator holds unused; CPU: the available memory, within the process's cgroup limit where
there is one) times :data:`MEMORY_FRACTION`, capped by ``$TEXTCL_MEMORY_LIMIT`` where set, less what the caller
reserves for memory not allocated yet (gradients, optimizer state, the loss). Nothing here is cached: the
count is exact and takes two forwards, and free memory is a property of the moment.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from textcl.errors import ConfigError, TextclError

__all__ = ["LIMIT_ENV", "MEMORY_FRACTION", "TRANSIENT_COPIES", "ALLOCATOR_OVERHEAD", "RowMemory", "Budget",
           "MiniBatchChoice", "saved_storages", "row_memory", "free_bytes", "memory_limit", "parse_bytes",
           "memory_budget", "largest_fit", "balanced_mini_batch", "fit_mini_batch", "format_bytes"]

#: the environment variable that caps the memory a run's tensors may hold on its device, in bytes or with a
#: unit (``8GiB``, ``512MiB``, ``2GB``)
LIMIT_ENV = "TEXTCL_MEMORY_LIMIT"
#: the share of the device's free memory a run plans to use: the rest absorbs the allocator's rounding and
#: fragmentation, the tokenizer and Python's own objects, and other processes' growth
MEMORY_FRACTION = 0.8
#: activation-sized gradients a backward holds at once beside what is saved: the one arriving at the largest
#: operation and the one it produces
TRANSIENT_COPIES = 2
#: what the allocator holds per counted byte at the peak, by device type (CPU: measured, see above; CUDA's
#: caching allocator is measured directly, its rounding is left to :data:`MEMORY_FRACTION`)
ALLOCATOR_OVERHEAD = {"cpu": 1.5}

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def format_bytes(n: float) -> str:
    """``1.9 MiB``, ``18.2 GiB``, ``512 B``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def parse_bytes(text: str, field: str = LIMIT_ENV) -> int:
    """``"8GiB"`` -> 8589934592; a plain number is bytes. A bad value raises :class:`ConfigError` naming
    ``field``."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).lower() if m else ""
    value = float(m.group(1)) * _UNITS.get(unit, 0) if m else 0.0
    if m is None or unit not in _UNITS or not 1 <= value < 2**63:
        raise ConfigError(field, f"expected a positive number of bytes, optionally with a unit (8GiB, 512MiB, "
                                 f"2GB), got {text!r}")
    return int(value)


def memory_limit() -> int | None:
    """``$TEXTCL_MEMORY_LIMIT`` in bytes, or None when it is unset or empty."""
    text = os.environ.get(LIMIT_ENV, "").strip()
    return parse_bytes(text) if text else None


# ---------------------------------------------------------------------------------------------- a row's cost
def saved_storages(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, dict[int, int]]:
    """Run ``fn()`` with gradients on and return its output with ``{storage address: bytes}`` of every
    distinct storage autograd saved for backward meanwhile (views of one storage count once). The output keeps
    the graph, and so those storages, alive: drop it to free them."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr():
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, seen


@dataclass(frozen=True)
class RowMemory:
    """What one row of ``tokens`` tokens costs a forward and backward with a graph, in bytes.

    ``saved``: the slope of the bytes saved for backward; ``largest``: the largest saved tensor that grows
    with the rows, per row; ``peak``: on CUDA, the slope of the allocator's peak (None elsewhere);
    ``bytes``: ``max(saved + TRANSIENT_COPIES x largest, peak) x ALLOCATOR_OVERHEAD[device]``, what the
    mini-batch is planned on."""

    bytes: int
    tokens: int
    saved: int
    largest: int
    peak: int | None = None

    def to_dict(self) -> dict:
        return {"bytes": self.bytes, "tokens": self.tokens, "saved": self.saved, "largest": self.largest,
                "peak": self.peak}


def _repeat(row: Mapping[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    return {k: v[:1].expand(n, *v.shape[1:]).contiguous() for k, v in row.items()}


def row_memory(embed: Callable[[dict[str, torch.Tensor]], torch.Tensor], row: Mapping[str, torch.Tensor], *,
               rows: int = 2, autocast: torch.dtype | None = None,
               params: Iterable[torch.Tensor] = ()) -> RowMemory:
    """Measure the memory a forward and backward of ``embed`` costs per row.

    Args:
        embed: ``features -> (m, d)`` with a graph, e.g. an :class:`~textcl.models.Encoder` in training mode
            (its dropout masks count: they are saved too).
        row: one row's features, ``input_ids``, ``attention_mask`` (1, L) [+ ``token_type_ids``], on the
            device to measure; it is repeated to ``rows`` and ``2 x rows`` rows.
        rows: the smaller probe's rows.
        autocast: the dtype of the run's mixed precision (``torch.bfloat16``, ``torch.float16``), None for fp32.
        params: the parameters a CUDA probe back-propagates to (their ``.grad`` is left alone).
    Returns:
        a :class:`RowMemory`. The random state is left as it was (dropout draws from a forked generator).
    """
    if rows < 1:
        raise ValueError(f"rows: expected a positive number of rows, got {rows!r}")
    device = row["input_ids"].device
    params = [p for p in params if p.requires_grad]
    small, large = _repeat(row, rows), _repeat(row, 2 * rows)

    def forward(features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[int, int]]:
        cast = torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
        with cast:
            return saved_storages(lambda: embed(features))

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        out, small_saved = forward(small)
        del out
        out, large_saved = forward(large)
        del out
        peak = (_cuda_peak_slope(forward, small, large, params, rows, device)
                if device.type == "cuda" and params else None)
    saved = max(0, sum(large_saved.values()) - sum(small_saved.values())) // rows
    # storages of the same size in both runs do not grow with the rows (weights, their autocast copies)
    grown = Counter(large_saved.values()) - Counter(small_saved.values())
    largest = max(grown, default=0) // (2 * rows)
    counted = max(saved + TRANSIENT_COPIES * largest, peak or 0, 1)
    return RowMemory(bytes=math.ceil(counted * ALLOCATOR_OVERHEAD.get(device.type, 1.0)),
                     tokens=int(row["input_ids"].shape[1]), saved=saved, largest=largest, peak=peak)


def _cuda_peak_slope(forward, small, large, params, rows: int, device: torch.device) -> int:
    """The slope of the CUDA allocator's peak over a forward and backward of ``small`` and ``large``."""
    peaks = []
    for features in (small, large):
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out, _ = forward(features)
        torch.autograd.grad(out.float().sum(), params, allow_unused=True)
        del out
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - base)
    return max(0, peaks[1] - peaks[0]) // rows


# ---------------------------------------------------------------------------------------------- the budget
def _cgroup_available(proc: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes the process's cgroup (v2, or v1's memory controller) still allows, its inactive page cache counted
    as reclaimable; the least over the cgroup and its ancestors; None without a limit. ``proc`` and ``root``:
    where the kernel says so (tests)."""
    try:
        lines = proc.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    best = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            names, base = ("memory.max", "memory.current", "inactive_file"), root
        elif "memory" in controllers.split(","):
            names, base = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"), root / "memory"
        else:
            continue
        folder = base / path.lstrip("/")
        while True:  # inside a container the recorded path may not exist: its ancestors (the root) still apply
            try:
                limit = int((folder / names[0]).read_text().strip())  # v2 says "max" without a limit
                usage = int((folder / names[1]).read_text().strip())
                stat = dict(x.split()[:2] for x in (folder / "memory.stat").read_text().splitlines() if " " in x)
                if limit < 2**60:  # v1 says "no limit" with a huge number
                    left = max(0, limit - usage + int(stat.get(names[2], 0)))
                    best = left if best is None else min(best, left)
            except (OSError, ValueError):
                pass
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return best


def free_bytes(device: torch.device) -> int:
    """Memory the process can still allocate on ``device``: on CUDA the driver's free memory plus what torch's
    caching allocator reserved but holds no tensor in; on the CPU the available memory (psutil, else
    ``/proc/meminfo``), within the cgroup's limit."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    available = None
    try:
        import psutil

        available = int(psutil.virtual_memory().available)
    except ImportError:
        try:
            for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
    cgroup = _cgroup_available()
    if available is None and cgroup is None:
        raise TextclError(f"cannot tell the free memory of {device}: set {LIMIT_ENV} (e.g. 8GiB)")
    return min(x for x in (available, cgroup) if x is not None)


@dataclass(frozen=True)
class Budget:
    """What one process may still allocate: ``bytes = min(free x fraction / share, limit - held) - reserve``
    (the limit term only where ``limit`` is set)."""

    bytes: int
    free: int  #: the device's free memory
    fraction: float
    limit: int | None  #: ``$TEXTCL_MEMORY_LIMIT``: the most the process's tensors may hold, counting ``held``
    held: int  #: what the process's tensors already hold (the weights)
    reserve: int  #: what the caller set aside for memory not allocated yet
    share: int = 1  #: the processes that draw on this free memory (several CPU processes of one machine)

    def line(self) -> str:
        """E.g. ``budget 18.2 GiB (0.8 x 23.4 GiB free, less 420.0 MiB reserved)``: the term that decided."""
        if self.limit is not None and self.limit - self.held <= int(self.free * self.fraction) // self.share:
            why = f"{LIMIT_ENV} {format_bytes(self.limit)} less {format_bytes(self.held)} held and"
        else:
            shared = f" / {self.share} processes" if self.share > 1 else ""
            why = f"{self.fraction:g} x {format_bytes(self.free)} free{shared}, less"
        return f"budget {format_bytes(self.bytes)} ({why} {format_bytes(self.reserve)} reserved)"

    def to_dict(self) -> dict:
        return {"bytes": self.bytes, "free": self.free, "fraction": self.fraction, "limit": self.limit,
                "held": self.held, "reserve": self.reserve, "share": self.share}


def memory_budget(device: torch.device, *, reserve: int = 0, held: int = 0, limit: int | None = None,
                  free: int | None = None, fraction: float = MEMORY_FRACTION, share: int = 1) -> Budget:
    """The bytes one process may still allocate on ``device`` (see :class:`Budget`). ``held``: what its tensors
    hold already (counted against ``limit`` only: the free memory excludes it). ``share``: the processes that
    plan on the same free memory (torchrun's processes on one machine's CPU), each taking an equal part.
    ``free`` replaces the device's free memory (tests)."""
    if free is None:
        free = free_bytes(device)
    room = int(free * fraction) // max(1, share)
    if limit is not None:  # the limit is the run's: the processes on this machine share it too
        room = min(room, limit // max(1, share) - held)
    return Budget(bytes=room - reserve, free=free, fraction=fraction, limit=limit, held=held, reserve=reserve,
                  share=max(1, share))


def largest_fit(row_bytes: int, budget: int, why: str | None = None) -> int:
    """``floor(budget / row_bytes)``: the most rows whose activations fit ``budget``. Raises
    :class:`TextclError` naming the budget (``why``: how it came about, e.g. :meth:`Budget.line`) and the row's
    cost when not even one row fits."""
    if row_bytes < 1:
        raise ValueError(f"row_bytes: expected a positive number of bytes, got {row_bytes!r}")
    largest = budget // row_bytes if budget > 0 else 0
    if largest < 1:
        raise TextclError(f"loss.mini_batch_size auto: one row needs {format_bytes(row_bytes)} for its forward "
                          f"and backward, over the {why or f'budget {format_bytes(budget)}'}; lower "
                          f"model.max_seq_len, train in bf16, free memory on the device or raise {LIMIT_ENV}")
    return largest


def balanced_mini_batch(batch: int, largest: int) -> int:
    """The GradCache mini-batch for ``batch`` rows when at most ``largest`` fit at once.

    Any integer, not only a power of two: a GradCache step costs one forward and backward per mini-batch, so
    what matters is their number, and rounding down to a power of two would spend up to twice as many. The
    fewest mini-batches that fit, ``ceil(batch / largest)``, are made as equal as they can be:
    ``ceil(batch / that number)`` rows each, the same number of passes at a lower peak and no short last pass.
    E.g. 4,096 rows with room for 3,000: 2 mini-batches of 2,048; 100 rows with room for 45: 3 of 34.
    """
    if batch < 1 or largest < 1:
        raise ValueError(f"batch and largest: expected positive numbers of rows, got {batch!r} and {largest!r}")
    passes = math.ceil(batch / min(largest, batch))
    return math.ceil(batch / passes)


def fit_mini_batch(row_bytes: int, budget: int, batch: int) -> int:
    """:func:`balanced_mini_batch` of :func:`largest_fit`: never above ``batch`` nor ``budget // row_bytes``."""
    return balanced_mini_batch(batch, largest_fit(row_bytes, budget))


@dataclass(frozen=True)
class MiniBatchChoice:
    """What ``loss.mini_batch_size`` resolved to, and why (``row`` and ``budget`` where it was measured)."""

    requested: int | str
    resolved: int
    batch: int  #: rows per view the mini-batches split (the per-process batch)
    row: RowMemory | None = None
    budget: Budget | None = None
    processes: int = 1  #: several: the smallest of the processes' choices, which every process takes
    resumed: bool = False  #: ``auto`` kept the value of the checkpoint the run resumes

    def line(self) -> str:
        """E.g. ``GradCache mini-batch auto -> 256: 1.9 MiB a row of 128 tokens, budget 18.2 GiB (...)``."""
        head = f"GradCache mini-batch {self.requested} -> {self.resolved}"
        passes = math.ceil(self.batch / self.resolved)
        head += f" ({passes} pass{'es' if passes > 1 else ''} over {self.batch} rows per view)"
        if self.resumed:
            head += ", as the checkpoint it resumes trained"
        if self.row is None or self.budget is None:
            return head
        tail = f"{format_bytes(self.row.bytes)} a row of {self.row.tokens} tokens, {self.budget.line()}"
        if self.processes > 1:
            tail += f"; {self.processes} processes take the smallest of their fits"
        return f"{head}: {tail}"

    def to_dict(self) -> dict:
        return {"requested": self.requested, "resolved": self.resolved, "batch": self.batch,
                "row": self.row.to_dict() if self.row else None,
                "budget": self.budget.to_dict() if self.budget else None, "processes": self.processes,
                "resumed": self.resumed}
