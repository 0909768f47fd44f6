"""Which inference backend runs an Encoder's transformer faster on this CPU, torch or ONNX Runtime: measured.

Having onnxruntime installed says nothing about speed: on a 2-core AVX2 EPYC textcl's own export encoded at 0.93x
torch's speed (benchmarks/RESULTS.md, "CPU inference backends"). So ``--backend auto`` measures:
:func:`backend_probe` runs the model's transformer in torch and in its ONNX Runtime session on fixed batches of
random ids (8 rows of 64 and of 128 tokens), the two in turn for about a second and a half, the fastest run of
each, and :func:`choose_backend` takes onnx only where it measured at least 5% faster (:data:`ONNX_MAX_RATIO`).
The measurement is cached per machine, device, torch and onnxruntime versions, threads and model shape
(:mod:`textcl.models.calibration`, ``kind`` ``backend``); a disturbed one decides torch and is not cached. An
explicit backend never measures. The decision is a :class:`BackendChoice`, printed once per process
(:func:`announce`) and recorded by the commands' ``--json`` reports.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import torch
from torch import nn

__all__ = ["BackendChoice", "ONNX_MAX_RATIO", "MAX_SPREAD", "PROBE_ROWS", "PROBE_LENGTHS", "model_shape",
           "probe_batch", "backend_probe", "choose_backend", "announce"]

#: ``auto`` takes onnx when its measured time is at most this fraction of torch's (5% faster or more). The
#: interleaved rounds of one measurement agree to a few percent on a quiet machine, so a smaller margin would
#: let noise decide; and a switch has costs a tie does not repay: an export (seconds, once per model folder),
#: a second copy of the weights in the session, embeddings that differ from torch's by ~1e-6.
ONNX_MAX_RATIO = 0.95
#: a measurement whose two halves' ratios differ by more than this (relative) was disturbed: torch, not cached.
#: Twice the margin above: halves further apart than that cannot tell 0.95 from 1.0
MAX_SPREAD = 0.10
#: the probe's batches: PROBE_ROWS rows of each length in PROBE_LENGTHS tokens (capped at the model's maximum).
#: 8 rows (512 and 1,024 tokens a batch) fill the matrix kernels as encode's batches do, and keep the measurement
#: near its budget: 32 rows took 0.63 s a pass for MiniLM on 2 cores, 12 s for the measurement
PROBE_ROWS = 8
PROBE_LENGTHS = (64, 128)
#: about how long the timed runs of a measurement take, in seconds (at least two pairs run, however slow)
PROBE_BUDGET_S = 1.5


@dataclass(frozen=True)
class BackendChoice:
    """What a backend setting resolved to, and why. ``onnx_over_torch``: the measured time ratio of ONNX Runtime
    to torch (below 1: onnx faster; None where nothing was measured). ``reason``: why ``auto`` took torch
    without measuring (the device, the pooling, onnxruntime missing, a failed export)."""

    requested: str  #: ``torch``, ``onnx`` or ``auto``
    resolved: str  #: ``torch`` or ``onnx``
    onnx_over_torch: float | None = None
    cached: bool = False
    disturbed: bool = False  #: other work shared the CPU during the measurement: torch, measured again next run
    reason: str | None = None

    def line(self) -> str:
        """One line for the log, e.g. ``backend auto -> torch: onnx measured 1.08x slower on this CPU``."""
        head = f"backend {self.requested} -> {self.resolved}"
        if self.reason is not None:
            return f"{head}: {self.reason}"
        if self.onnx_over_torch is None:
            return head
        r = self.onnx_over_torch
        how = f"{1 / r:.2f}x faster" if r < 1 else f"{r:.2f}x slower"
        if self.disturbed:
            return (f"{head}: the measurement (onnx {how}) was disturbed by other work on this CPU; "
                    "measured again next run")
        margin = "" if self.resolved == "onnx" or r >= 1 else f" (under the {1 / ONNX_MAX_RATIO - 1:.0%} needed)"
        return f"{head}: onnx measured {how} on this CPU{margin}" + (" (cached)" if self.cached else "")

    def to_dict(self) -> dict:
        ratio = None if self.onnx_over_torch is None else round(self.onnx_over_torch, 4)
        return {"requested": self.requested, "resolved": self.resolved, "onnx_over_torch": ratio,
                "cached": self.cached, "disturbed": self.disturbed, "reason": self.reason}


def model_shape(config) -> dict:
    """The part of the cache key that describes the model: its type and sizes (a Hugging Face ``config``), and
    the onnxruntime version that runs it."""
    import onnxruntime

    hidden = int(config.hidden_size)
    return {"model_type": str(getattr(config, "model_type", "") or "unknown"), "hidden": hidden,
            "layers": int(config.num_hidden_layers), "heads": int(config.num_attention_heads),
            "intermediate": int(getattr(config, "intermediate_size", 0) or 4 * hidden),
            "vocab": int(config.vocab_size), "onnxruntime": onnxruntime.__version__}


def probe_batch(vocab: int, rows: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``input_ids`` (rows, length) int64, random ids below ``vocab`` (fixed by ``seed``), and an all-ones
    ``attention_mask`` of the same shape: a batch of unpadded texts, as :meth:`Encoder.encode` runs them."""
    generator = torch.Generator().manual_seed(seed + length)
    ids = torch.randint(0, vocab, (rows, length), generator=generator, dtype=torch.int64)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def backend_probe(model: nn.Module, session: Callable[[], Callable[[Mapping[str, torch.Tensor]], torch.Tensor]], *,
                  max_length: int = 512, rows: int = PROBE_ROWS, lengths: tuple[int, ...] = PROBE_LENGTHS,
                  budget_s: float = PROBE_BUDGET_S, min_pairs: int = 2, max_pairs: int = 16) -> dict[str, float]:
    """Seconds for the transformer's forward (``features -> last_hidden_state``) on :func:`probe_batch` batches of
    ``rows`` x each of ``lengths`` tokens (capped at ``max_length``), in torch (``model``, eval and inference
    mode) and in ONNX Runtime (``session()``, called once; it may export the model first).

    After one warm-up run of each, the two backends run in turn, which one goes first alternating, until
    ``budget_s`` seconds have passed (``min_pairs`` to ``max_pairs`` pairs, an even number), so a change in the
    machine's speed during the measurement hits both alike, and a busy machine, where each run is slow, is not
    held for long. Returns ``torch_s`` and ``onnx_s`` (the fastest run of each: on a shared machine the least
    disturbed), ``onnx_over_torch``, and ``spread``: how far the ratios of the first and the second half of the
    pairs differ (relative), which says whether the measurement was steady."""
    min_pairs = max(2, min_pairs)  # a half needs a pair
    run_onnx = session()
    vocab = int(model.config.vocab_size)
    batches = [probe_batch(vocab, rows, n) for n in dict.fromkeys(min(n, max_length) for n in lengths)]

    def torch_forward() -> float:
        t0 = time.perf_counter()
        for batch in batches:
            model(**batch, return_dict=True).last_hidden_state
        return time.perf_counter() - t0

    def onnx_forward() -> float:
        t0 = time.perf_counter()
        for batch in batches:
            run_onnx(batch)
        return time.perf_counter() - t0

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            torch_forward(), onnx_forward()  # first runs allocate and pick kernels: not timed
            start, times = time.perf_counter(), []  # (torch, onnx) per pair
            while len(times) < max_pairs and (len(times) < min_pairs or len(times) % 2
                                              or time.perf_counter() - start < budget_s):
                if len(times) % 2 == 0:
                    t = torch_forward()
                    times.append((t, onnx_forward()))
                else:
                    o = onnx_forward()
                    times.append((torch_forward(), o))
    finally:
        model.train(was_training)

    def ratio(part: list[tuple[float, float]]) -> float:
        return min(o for _, o in part) / min(t for t, _ in part)

    half = len(times) // 2
    halves = [ratio(times[:half]), ratio(times[half:])]
    torch_s, onnx_s = min(t for t, _ in times), min(o for _, o in times)
    return {"torch_s": torch_s, "onnx_s": onnx_s, "onnx_over_torch": onnx_s / torch_s,
            "spread": max(1e-9, (max(halves) - min(halves)) / min(halves))}


def choose_backend(model: nn.Module, session: Callable[[], Callable], *, max_length: int = 512,
                   probe: Callable[[], dict[str, float]] | None = None) -> BackendChoice:
    """Decide ``auto`` for a transformer that ONNX Runtime can run on this CPU: onnx where it measured at least 5%
    faster than torch (:data:`ONNX_MAX_RATIO`), else torch. ``session()`` opens (exporting once) the model's ONNX
    session; it is called only when there is something to measure, not when the cache answers. ``probe``
    replaces :func:`backend_probe` (tests). A disturbed measurement gives torch and is not cached."""
    from textcl.models.calibration import measured

    if probe is None:
        def probe():
            return backend_probe(model, session, max_length=max_length)
    entry = measured("backend", "cpu", model_shape(model.config), probe,
                     steady=lambda v: v.get("spread", 0.0) <= MAX_SPREAD, required=("onnx_s", "torch_s"))
    values = entry["values"]
    ratio = values["onnx_s"] / values["torch_s"]
    if not entry["steady"]:
        return BackendChoice("auto", "torch", ratio, cached=False, disturbed=True)
    return BackendChoice("auto", "onnx" if ratio <= ONNX_MAX_RATIO else "torch", ratio, cached=entry["cached"])


#: the decisions this process has printed (each once, whatever the number of encoders that asked)
_ANNOUNCED: set[str] = set()


def announce(choice: BackendChoice) -> bool:
    """Print ``textcl: <choice.line()>`` to standard error, once per process for each decision, and only on the
    first process of a torchrun job (``RANK`` 0 or unset); explicit settings are not printed. True if printed."""
    if choice.requested != "auto" or os.environ.get("RANK", "0") != "0":
        return False
    key = replace(choice, cached=False).line()
    if key in _ANNOUNCED:
        return False
    _ANNOUNCED.add(key)
    print(f"textcl: {choice.line()}", file=sys.stderr, flush=True)
    return True
