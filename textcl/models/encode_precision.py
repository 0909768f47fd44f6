"""Which precision an encoder serves in: bf16 autocast where it measures faster on this machine for the
encoder's own forward, and only when its vectors agree with fp32's.

Serving only runs forwards, so ``auto`` times :meth:`Encoder.encode <textcl.models.Encoder.encode>` itself on
a fixed set of probe texts (4 words to past the model's limit) in fp32 and under bf16 autocast, alternating
rounds, the fastest of a few runs each; the figure is cached per machine and model shape
(:mod:`textcl.models.calibration`). On a CPU with AMX, bf16 encoded MiniLM 1.3x (one short text) to 1.8x
(32 long ones) faster; where bf16 is emulated it runs several times slower, so a capability flag never
decides. Then the probe texts are encoded both ways and bf16 is kept only if every pair of vectors has a
cosine of at least :data:`MIN_COSINE` (a model whose activations overflow bf16's 8-bit mantissa would give
different neighbours): a served vector is then interchangeable with an fp32 one, e.g. against an index
built in fp32.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from textcl.errors import ConfigError
from textcl.models.precision import BF16_MAX_RATIO, MAX_SPREAD, PrecisionChoice, native_bf16

#: what ``textcl serve --precision`` takes
SERVE_PRECISIONS = ("auto", "fp32", "bf16")
#: bf16 is served only when every probe text's bf16 vector has at least this cosine with its fp32 vector
MIN_COSINE = 0.9999

_PROSE = ("the river runs past the old mill and under a stone bridge before it reaches the town where the market "
          "opens each morning and farmers bring bread cheese apples and wool from the hills around the valley while "
          "children walk to school along the bank and watch the boats carry timber down to the harbour at the coast "
          "where ships wait for the tide to turn so that they can sail north with their cargo before the storms of "
          "autumn close the passage for the winter months and the town falls quiet again until spring returns")
#: the probe's texts, in words: a query-length text to one past a 256-token model's limit
PROBE_WORDS = (4, 8, 12, 16, 32, 64, 128, 320)


def probe_texts() -> list[str]:
    """The texts both precisions encode: ``PROBE_WORDS`` words each, cut from a fixed paragraph (repeated)."""
    words = _PROSE.split()
    return [" ".join(words[i % len(words)] for i in range(n)) for n in PROBE_WORDS]


def encoder_shape(encoder) -> dict:
    """What the measurement is cached by: the transformer's shape and the encoder's token limit."""
    cfg = getattr(getattr(encoder, "model", None), "config", None)
    keys = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    shape = {k: getattr(cfg, k, None) for k in keys}
    shape.update(measure="encode", max_seq_length=int(getattr(encoder, "max_seq_length", 0) or 0))
    return shape


def encode_probe(encoder, texts: list[str] | None = None, *, repeats: int = 3, rounds: int = 2) -> dict[str, float]:
    """Seconds to encode ``texts`` (default :func:`probe_texts`) in fp32 and under bf16 autocast, the fastest of
    ``repeats`` each in ``rounds`` alternating rounds; ``spread``: how far the rounds' ratios differ (relative)."""
    from textcl.models.calibration import best_time

    texts = probe_texts() if texts is None else texts
    device_type = encoder.device.type

    def run(bf16: bool) -> Callable[[], None]:
        return lambda: encoder.encode(texts, batch_size=len(texts), bf16=bf16)

    pairs = [(best_time(run(False), repeats, device_type), best_time(run(True), repeats, device_type))
             for _ in range(rounds)]
    ratios = [b / f for f, b in pairs]
    fp32, bf16 = min(f for f, _ in pairs), min(b for _, b in pairs)
    return {"fp32_s": fp32, "bf16_s": bf16, "bf16_over_fp32": bf16 / fp32,
            "spread": max(1e-9, (max(ratios) - min(ratios)) / min(ratios))}


def bf16_agreement(encoder, texts: list[str] | None = None) -> float:
    """The smallest cosine between a probe text's vector under bf16 autocast and its fp32 vector."""
    texts = probe_texts() if texts is None else texts
    full = encoder.encode(texts, batch_size=len(texts), bf16=False, normalize=True)
    half = encoder.encode(texts, batch_size=len(texts), bf16=True, normalize=True)
    return float(np.min(np.sum(full * half, axis=1)))


def choose_encode_precision(encoder, requested: str = "auto", *, field: str = "--precision",
                            probe: Callable[[], dict[str, float]] | None = None,
                            agreement: Callable[[], float] | None = None) -> PrecisionChoice:
    """Resolve a serving precision for ``encoder`` (``resolved``: ``no`` for fp32, or ``bf16``).

    ``fp32`` and ``bf16`` are kept (bf16 on a device without bf16 instructions, or whose vectors disagree,
    warns); ``auto`` takes bf16 where :func:`encode_probe` measured it at least 5% faster (cached per machine
    and shape) and :func:`bf16_agreement` is at least :data:`MIN_COSINE`. An encoder on the ONNX backend runs
    fp32 (``bf16`` is a ConfigError there). ``probe`` and ``agreement`` replace the measurements (tests)."""
    if requested not in SERVE_PRECISIONS:
        raise ConfigError(field, f"expected one of {', '.join(SERVE_PRECISIONS)}, got {requested!r}")
    device_type = encoder.device.type
    if getattr(encoder, "backend", "torch") != "torch":
        if requested == "bf16":
            raise ConfigError(field, f"bf16 runs on the torch backend; this model runs on {encoder.backend} (use "
                              "--backend torch, or --precision fp32)")
        return PrecisionChoice(requested, "no", device_type)
    if requested == "fp32":
        return PrecisionChoice(requested, "no", device_type)
    cosine = (agreement or (lambda: bf16_agreement(encoder)))()
    if requested == "bf16":
        if not native_bf16(device_type):
            warnings.warn(f"{field} is bf16, but this {device_type.upper()} has no bf16 instructions (no avx512_bf16 "
                          "or AMX): PyTorch emulates it, which measured several times slower than fp32. Use auto to "
                          "take bf16 only where it measures faster.", RuntimeWarning, stacklevel=2)
        if cosine < MIN_COSINE:
            warnings.warn(f"{field} is bf16, but this model's bf16 vectors differ from its fp32 ones (smallest "
                          f"cosine {cosine:.6f} on the probe texts, below {MIN_COSINE}).", RuntimeWarning, stacklevel=2)
        return PrecisionChoice(requested, "bf16", device_type, min_cosine=cosine)
    from textcl.models.calibration import measured

    entry = measured("precision", device_type, encoder_shape(encoder), probe or (lambda: encode_probe(encoder)),
                     steady=lambda v: v.get("spread", 0.0) <= MAX_SPREAD, required=("bf16_s", "fp32_s"))
    ratio = entry["values"]["bf16_s"] / entry["values"]["fp32_s"]
    faster = native_bf16(device_type) if not entry["steady"] else ratio <= BF16_MAX_RATIO
    resolved = "bf16" if faster and cosine >= MIN_COSINE else "no"
    return PrecisionChoice("auto", resolved, device_type, ratio, entry["cached"], disturbed=not entry["steady"],
                           min_cosine=cosine)


class ServedPrecision:
    """Runs ``encoder`` in the precision :func:`choose_encode_precision` resolves while it is served (its
    ``encode_bf16``, so that ``encoder.encode`` gives what the server does), and gives it back at
    :meth:`restore`. ``choice`` says what was chosen and why."""

    def __init__(self, encoder, requested: str = "auto", *, field: str = "--precision", **measure):
        self.encoder = encoder
        self.choice = choose_encode_precision(encoder, requested, field=field, **measure)
        self._before = encoder.encode_bf16
        encoder.encode_bf16 = self.choice.resolved == "bf16"

    @property
    def name(self) -> str:
        """``fp32`` or ``bf16``."""
        return "bf16" if self.choice.resolved == "bf16" else "fp32"

    def restore(self) -> None:
        self.encoder.encode_bf16 = self._before
