"""Which precision a device runs fast: bf16 autocast is a speed lever only where the hardware has bf16.

On CPUs with avx512_bf16 or AMX, bf16 autocast runs a MiniLM training step about 1.5x faster than fp32. On
CPUs with AVX2 only PyTorch emulates bf16 (16x to 24x slower, benchmarks/RESULTS.md, "Precision"), and on
AVX-512F CPUs without avx512_bf16 a 384 -> 1536 layer ran 3.5x slower, although oneDNN reports bf16 as
supported there. So ``auto`` measures: :func:`choose_precision` times the model's own layer shapes forward
and backward in fp32 and under bf16 autocast (:mod:`textcl.models.calibration`, cached per machine) and takes
bf16 only where it measured faster.
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "no", "fp16", "bf16")
#: ``auto`` takes bf16 when its measured time is at most this fraction of fp32's (5% faster or more)
BF16_MAX_RATIO = 0.95


@functools.lru_cache(maxsize=None)
def native_bf16(device_type: str) -> bool:
    """True when ``device_type`` (``"cpu"`` or ``"cuda"``) has bf16 matrix instructions: a CUDA GPU that
    supports bf16, or a CPU with avx512_bf16 or AMX. (Not oneDNN's own test, which is True on every AVX-512
    CPU, where bf16 is emulated and slower.) A hint for warnings; ``auto`` measures instead."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    from textcl.models.calibration import machine_profile

    profile = machine_profile("cpu")
    cap = profile.get("isa_caps", {})
    cap = (cap.get("ONEDNN_MAX_CPU_ISA") or cap.get("DNNL_MAX_CPU_ISA") or "").upper()
    if cap in _ISA_WITHOUT_BF16:  # oneDNN told to stay below its bf16 kernels: emulated, as on an older CPU
        return False
    flags = profile["cpu_flags"]
    return "avx512_bf16" in flags or "amx_bf16" in flags


#: oneDNN instruction-set caps (ONEDNN_MAX_CPU_ISA) below its bf16 dot-product kernels
_ISA_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


@dataclass(frozen=True)
class PrecisionChoice:
    """What a precision setting resolved to, and why: ``bf16_over_fp32`` is the measured time ratio (None
    where nothing was measured: an explicit setting)."""

    requested: str
    resolved: str  #: ``no``, ``fp16`` or ``bf16``
    device_type: str = "cpu"
    bf16_over_fp32: float | None = None
    cached: bool = False
    disturbed: bool = False  #: the measurement shared the CPU with other work: ``fallback`` decided
    #: what decides a disturbed measurement, as the log line says it (serving: fp32)
    fallback: str = "its bf16 instructions decided"
    #: serving: the smallest cosine between bf16 and fp32 vectors of the probe texts (None: not compared)
    min_cosine: float | None = None

    def line(self) -> str:
        """One line for the log, e.g. ``precision auto -> fp32: bf16 measured 3.4x slower on this CPU``."""
        name = {"no": "fp32"}.get(self.resolved, self.resolved)
        agree = "" if self.min_cosine is None else f"; bf16 vectors' smallest cosine to fp32's {self.min_cosine:.6f}"
        if self.bf16_over_fp32 is None:
            return f"precision {self.requested} -> {name}{agree}"
        r = self.bf16_over_fp32
        how = f"{1 / r:.2f}x faster" if r < 1 else f"{r:.2f}x slower"
        where = "this CPU" if self.device_type == "cpu" else "this GPU"
        if self.disturbed:
            return (f"precision {self.requested} -> {name}: the measurement (bf16 {how}) was disturbed by other work "
                    f"on {where}, so {self.fallback}; measured again next run{agree}")
        return (f"precision {self.requested} -> {name}: bf16 measured {how} than fp32 on {where}"
                + (" (cached)" if self.cached else "") + agree)

    def to_dict(self) -> dict:
        ratio = None if self.bf16_over_fp32 is None else round(self.bf16_over_fp32, 4)
        out = {"requested": self.requested, "resolved": self.resolved, "bf16_over_fp32": ratio,
               "disturbed": self.disturbed}
        if self.min_cosine is not None:
            out["min_cosine"] = round(self.min_cosine, 7)
        return out


def precision_probe(device_type: str, hidden: int, intermediate: int, *, tokens: int = 1024,
                    repeats: int = 3, rounds: int = 2) -> dict[str, float]:
    """Seconds for a forward and backward of a transformer's feed-forward block (``hidden -> intermediate ->
    hidden`` on ``tokens`` rows) in fp32 and under bf16 autocast, the fastest of ``repeats`` each, in
    ``rounds`` alternating rounds; their ratio, and ``spread``: how far the rounds' ratios differ (relative)."""
    from textcl.models.calibration import best_time

    device = torch.device(device_type)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        block = torch.nn.Sequential(torch.nn.Linear(hidden, intermediate), torch.nn.GELU(),
                                    torch.nn.Linear(intermediate, hidden)).to(device)
        x = torch.randn(tokens, hidden, device=device, requires_grad=True)

    def step(bf16: bool) -> Callable[[], None]:
        def run() -> None:
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
                y = block(x)
            y.float().square().mean().backward()
            block.zero_grad(set_to_none=True)
            x.grad = None
        return run

    pairs = [(best_time(step(False), repeats, device_type), best_time(step(True), repeats, device_type))
             for _ in range(rounds)]
    if device_type == "cuda":  # give the blocks' memory back: training allocates next
        del block, x
        torch.cuda.empty_cache()
    ratios = [b / f for f, b in pairs]
    fp32, bf16 = min(f for f, _ in pairs), min(b for _, b in pairs)
    return {"fp32_s": fp32, "bf16_s": bf16, "bf16_over_fp32": bf16 / fp32,
            "spread": max(1e-9, (max(ratios) - min(ratios)) / min(ratios))}


#: a precision measurement whose rounds' ratios differ by more than this (relative) was disturbed: not cached
MAX_SPREAD = 0.25


def choose_precision(requested: str, device_type: str, *, hidden: int = 384, intermediate: int = 1536,
                     field: str = "train.mixed_precision",
                     probe: Callable[[], dict[str, float]] | None = None) -> PrecisionChoice:
    """Resolve a precision setting. ``auto`` measures bf16 against fp32 on the model's shapes (``hidden``,
    ``intermediate``) on this machine, cached, and takes bf16 where it is at least 5% faster; an explicit
    setting is kept (``bf16`` on a device without bf16 instructions warns). ``probe`` replaces the
    measurement (tests)."""
    if requested not in PRECISIONS:
        raise ValueError(f"{field}: expected one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        if requested == "bf16" and not native_bf16(device_type):
            warnings.warn(f"{field} is bf16, but this {device_type.upper()} has no bf16 instructions (no "
                          "avx512_bf16 or AMX): PyTorch emulates it, which measured 3.5x to 24x slower than fp32 "
                          "here. Use 'auto' to take bf16 only where it measures faster.", RuntimeWarning,
                          stacklevel=2)
        return PrecisionChoice(requested, requested, device_type)
    from textcl.models.calibration import measured

    if probe is None:
        def probe():  # a GPU needs a training-sized block, or launches and casts dominate
            return precision_probe(device_type, hidden, intermediate, tokens=65536 if device_type == "cuda" else 1024)
    entry = measured("precision", device_type, {"hidden": hidden, "intermediate": intermediate}, probe,
                     steady=lambda v: v.get("spread", 0.0) <= MAX_SPREAD, required=("bf16_s", "fp32_s"))
    ratio = entry["values"]["bf16_s"] / entry["values"]["fp32_s"]
    if not entry["steady"]:  # other work shared the cores: the instructions decide this run; measured next time
        return PrecisionChoice("auto", "bf16" if native_bf16(device_type) else "no", device_type, ratio, False,
                               disturbed=True)
    return PrecisionChoice("auto", "bf16" if ratio <= BF16_MAX_RATIO else "no", device_type, ratio, entry["cached"])


def resolve_precision(requested: str, device_type: str, *, field: str = "train.mixed_precision", **shape) -> str:
    """:func:`choose_precision`'s resolved setting: one of ``no``, ``fp16``, ``bf16``."""
    return choose_precision(requested, device_type, field=field, **shape).resolved
