"""Which precision a device runs fast: bf16 autocast is a speed lever only where the hardware has bf16.

On CPUs with AVX-512 (bf16 instructions or AMX tiles), bf16 autocast runs a MiniLM training step faster than
fp32. On CPUs with AVX2 only, oneDNN has no bf16 kernels and PyTorch emulates bf16: a MiniLM forward and
backward measured 16x to 24x slower than fp32 (benchmarks/RESULTS.md, "Precision"). ``auto`` picks bf16
only where it is native.
"""
from __future__ import annotations

import functools
import warnings

import torch

PRECISIONS = ("auto", "no", "fp16", "bf16")


@functools.lru_cache(maxsize=None)
def native_bf16(device_type: str) -> bool:
    """True when ``device_type`` (``"cpu"`` or ``"cuda"``) computes bf16 matrix products in hardware."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    try:  # oneDNN's own test: AVX-512 (bf16 instructions / AMX) present
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as fh:
                flags = fh.read()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(requested: str, device_type: str, *, field: str = "train.mixed_precision") -> str:
    """``auto`` -> ``bf16`` where native, else ``no``; ``bf16`` where it is emulated warns and is kept.

    Returns one of ``no``, ``fp16``, ``bf16``."""
    if requested not in PRECISIONS:
        raise ValueError(f"{field}: expected one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "auto":
        return "bf16" if native_bf16(device_type) else "no"
    if requested == "bf16" and not native_bf16(device_type):
        warnings.warn(f"{field} is bf16, but this {device_type.upper()} has no native bf16 (no AVX-512 or AMX): "
                      "PyTorch emulates it, which measured 16x to 24x slower than fp32 on MiniLM. Use 'auto' "
                      "to take bf16 only where the hardware has it.", RuntimeWarning, stacklevel=2)
    return requested
