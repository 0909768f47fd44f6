"""Which precision an encoder serves in: bf16 where it measures faster on this machine for the encoder's own
forward, and only when its vectors agree with fp32's.

A served bf16 encoder is a copy of the encoder with its weights cast to bf16 once (:func:`bf16_copy`), not
fp32 weights under autocast: autocast casts every weight again at each forward, which on a CPU with
avx512_bf16 (no AMX) left a lone short text 0.94x fp32's time where the cast copy took 0.80x (32 texts: 0.67x
against 0.56x; RESULTS.md "Embeddings over HTTP with --precision auto").

Serving only runs forwards, so ``auto`` times :meth:`Encoder.encode <textcl.models.Encoder.encode>` on the
fp32 encoder and on its bf16 copy, on one short text (a search query) and on a batch of probe texts (4 words
to past the model's limit), alternating rounds, the fastest of a few runs each; bf16 must win on both. The
figure is cached per machine and model shape (:mod:`textcl.models.calibration`). Where bf16 is emulated it
runs several times slower, so a capability flag never decides, and a measurement disturbed by other work gives
fp32. Then the probe texts are encoded both ways and bf16 is kept only if every pair of vectors has a cosine
of at least :data:`MIN_COSINE`: a served vector is then interchangeable with an fp32 one, e.g. against an
index built in fp32.

The server wraps the encoder (:class:`Precise`) rather than changing it, so an encoder shared with the caller
or with another app keeps its own precision and weights.
"""
from __future__ import annotations

import copy
import functools
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
#: the probe's texts, in words: a query-length text to one past the model's limit (at least 320 words)
PROBE_WORDS = (4, 8, 12, 16, 32, 64, 128, 320)


def probe_texts(encoder=None) -> list[str]:
    """The texts both precisions encode: ``PROBE_WORDS`` words each, cut from a fixed paragraph (repeated), the
    last one longer than ``encoder``'s token limit (more words than it has tokens)."""
    words = _PROSE.split()
    limit = int(getattr(encoder, "max_seq_length", 0) or 0)
    counts = PROBE_WORDS[:-1] + (max(PROBE_WORDS[-1], limit + 8),)
    return [" ".join(words[i % len(words)] for i in range(n)) for n in counts]


def encoder_shape(encoder) -> dict:
    """What the measurement is cached by: the transformer's shape and the encoder's token limit."""
    cfg = getattr(getattr(encoder, "model", None), "config", None)
    keys = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    shape = {k: getattr(cfg, k, None) for k in keys}
    shape.update(measure="encode-bf16-weights", max_seq_length=int(getattr(encoder, "max_seq_length", 0) or 0))
    return shape


def bf16_copy(encoder):
    """A copy of ``encoder`` whose weights are bf16 (its tokenizer shared, not copied); ``encoder`` is unchanged.
    Its :meth:`encode` gives float32 vectors like the original's (the last step casts them)."""
    import torch

    memo = {id(encoder.tokenizer): encoder.tokenizer}
    for p in encoder.parameters():  # cast while copying: the fp32 weights are never held twice
        memo[id(p)] = torch.nn.Parameter(p.detach().to(torch.bfloat16), requires_grad=False)
    half = copy.deepcopy(encoder, memo=memo)
    half.to(torch.bfloat16)  # the floating-point buffers
    half.encode_bf16 = False  # the weights are bf16 already: no autocast around them
    return half


def encode_probe(encoder, texts: list[str] | None = None, *, repeats: int = 3, rounds: int = 2,
                 half=None) -> dict[str, float]:
    """Seconds to encode, with ``encoder`` (fp32) and with ``half`` (its :func:`bf16_copy`, made here when not
    given), one short text (a search query; ``4 * repeats`` runs, as it takes milliseconds) and ``texts``
    (default :func:`probe_texts`, one batch), the fastest of the runs in each of ``rounds`` alternating rounds.
    ``bf16_over_fp32`` is the worse of the two shapes' ratios (bf16 must win on both), and ``spread`` how far
    the rounds' ratios differ (relative)."""
    from textcl.models.calibration import best_time

    texts = probe_texts(encoder) if texts is None else texts
    half = bf16_copy(encoder) if half is None else half
    device_type = encoder.device.type
    shapes = {"short": (texts[:1], 4 * repeats), "batch": (texts, repeats)}

    def run(model, rows: list[str]) -> Callable[[], None]:
        return lambda: model.encode(rows, batch_size=len(rows), bf16=False)

    out: dict[str, float] = {}
    ratios: dict[str, list[float]] = {}
    for name, (rows, n) in shapes.items():
        pairs = [(best_time(run(encoder, rows), n, device_type), best_time(run(half, rows), n, device_type))
                 for _ in range(rounds)]
        ratios[name] = [b / f for f, b in pairs]
        out[f"{name}_fp32_s"] = min(f for f, _ in pairs)
        out[f"{name}_bf16_s"] = min(b for _, b in pairs)
    worse = max(shapes, key=lambda n: out[f"{n}_bf16_s"] / out[f"{n}_fp32_s"])
    out.update(fp32_s=out[f"{worse}_fp32_s"], bf16_s=out[f"{worse}_bf16_s"],
               bf16_over_fp32=out[f"{worse}_bf16_s"] / out[f"{worse}_fp32_s"],
               spread=max(1e-9, max((max(r) - min(r)) / min(r) for r in ratios.values())))
    return out


def bf16_agreement(encoder, texts: list[str] | None = None, *, half=None) -> float:
    """The smallest cosine between a probe text's vector from ``half`` (``encoder``'s :func:`bf16_copy`, made
    here when not given) and its fp32 vector, over the full width and over ``truncate_dim``'s cut. For an encoder
    that does not normalise, also the smallest ratio of the two vectors' lengths (shorter over longer): its dot
    scores move with the lengths, which a cosine cannot see."""
    texts = probe_texts(encoder) if texts is None else texts
    half = bf16_copy(encoder) if half is None else half
    full = encoder.encode(texts, batch_size=len(texts), bf16=False, normalize=False, dim=encoder.dim)
    halved = half.encode(texts, batch_size=len(texts), bf16=False, normalize=False, dim=encoder.dim)
    scores = []
    for d in {encoder.dim, getattr(encoder, "truncate_dim", None) or encoder.dim}:
        a, b = full[:, :d], halved[:, :d]
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        scores.append(np.min(np.sum(a * b, axis=1) / (na * nb)))
        if not encoder.normalize:
            scores.append(np.min(np.minimum(na, nb) / np.maximum(na, nb)))
    return float(min(scores))


def settable(encoder) -> bool:
    """Whether textcl can choose ``encoder``'s precision: a textcl :class:`~textcl.models.Encoder` on the torch
    backend (not a remote server's, nor another library's object)."""
    return hasattr(encoder, "encode_bf16") and hasattr(encoder, "device") and getattr(encoder, "backend", "torch") == "torch"


def choose_encode_precision(encoder, requested: str = "auto", *, field: str = "--precision",
                            probe: Callable[[], dict[str, float]] | None = None,
                            agreement: Callable[[], float] | None = None,
                            half: Callable[[], object] | None = None) -> PrecisionChoice:
    """Resolve a serving precision for ``encoder`` (``resolved``: ``no`` for fp32, or ``bf16``).

    ``fp32`` and ``bf16`` are kept (bf16 on a device without bf16 instructions, or whose vectors disagree,
    warns); ``auto`` takes bf16 where :func:`encode_probe` measured it at least 5% faster on both its shapes
    (cached per machine and shape) and then :func:`bf16_agreement` is at least :data:`MIN_COSINE`. A measurement
    disturbed by other work gives fp32 (and is measured again next start): a server's vectors must not change
    with the load at its start. An encoder textcl cannot set (:func:`settable`: the ONNX backend, a remote
    server's) runs as it is, reported as fp32 (``bf16`` is a ConfigError for it). ``half()`` gives the bf16
    copy the measurements use (default: a new :func:`bf16_copy`); ``probe`` and ``agreement`` replace the
    measurements (tests)."""
    if requested not in SERVE_PRECISIONS:
        raise ConfigError(field, f"expected one of {', '.join(SERVE_PRECISIONS)}, got {requested!r}")
    if not settable(encoder):
        if requested == "bf16":
            raise ConfigError(field, f"bf16 runs on a textcl model on the torch backend; this model runs on "
                              f"{getattr(encoder, 'backend', type(encoder).__name__)} (use --backend torch, or "
                              "--precision fp32)")
        return PrecisionChoice(requested, "no", "cpu")
    device_type = encoder.device.type
    if requested == "fp32":
        return PrecisionChoice(requested, "no", device_type)
    half = half or functools.cache(lambda: bf16_copy(encoder))
    agree = agreement or (lambda: bf16_agreement(encoder, half=half()))
    if requested == "bf16":
        cosine = agree()
        if not native_bf16(device_type):
            warnings.warn(f"{field} is bf16, but this {device_type.upper()} has no bf16 instructions (no avx512_bf16 "
                          "or AMX): PyTorch emulates it, which measured several times slower than fp32. Use auto to "
                          "take bf16 only where it measures faster.", RuntimeWarning, stacklevel=2)
        if cosine < MIN_COSINE:
            warnings.warn(f"{field} is bf16, but this model's bf16 vectors differ from its fp32 ones (smallest "
                          f"cosine {cosine:.6f} on the probe texts, below {MIN_COSINE}).", RuntimeWarning, stacklevel=2)
        return PrecisionChoice(requested, "bf16", device_type, min_cosine=cosine)
    from textcl.models.calibration import measured

    entry = measured("precision", device_type, encoder_shape(encoder), probe or (lambda: encode_probe(encoder, half=half())),
                     steady=lambda v: v.get("spread", 0.0) <= MAX_SPREAD, required=("bf16_s", "fp32_s"))
    ratio = entry["values"]["bf16_s"] / entry["values"]["fp32_s"]
    if not entry["steady"] or ratio > BF16_MAX_RATIO:  # slower, or not known to be faster: no vectors to compare
        return PrecisionChoice("auto", "no", device_type, ratio, entry["cached"], disturbed=not entry["steady"],
                               fallback="fp32 is served")
    cosine = agree()
    return PrecisionChoice("auto", "bf16" if cosine >= MIN_COSINE else "no", device_type, ratio, entry["cached"],
                           min_cosine=cosine)


#: the encoder's settings (not weights) that its bf16 copy follows at each encode
_FOLLOWED = ("truncate_dim", "normalize", "max_seq_length", "do_lower_case", "pooling", "mlp_at_inference",
             "chunk_overhead", "default_prompt_name", "prompts")  # prompts last, as prompts_of sets them


class Precise:
    """``encoder`` as a server runs it: ``encode`` in the resolved precision (bf16: with ``half``, the encoder's
    :func:`bf16_copy`) unless a call says otherwise (``bf16=``); every other attribute is the encoder's. The
    encoder itself is never changed, so the caller's object, another app serving it, and ``encoder.encode``
    elsewhere keep their own precision."""

    __slots__ = ("_encoder", "_half", "bf16", "choice")

    def __init__(self, encoder, choice: PrecisionChoice, half=None):
        bf16 = choice.resolved == "bf16"
        object.__setattr__(self, "_encoder", encoder)
        object.__setattr__(self, "_half", (half if half is not None else bf16_copy(encoder)) if bf16 else None)
        object.__setattr__(self, "bf16", bf16)
        object.__setattr__(self, "choice", choice)

    def __getattr__(self, name: str):
        return getattr(object.__getattribute__(self, "_encoder"), name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._encoder, name, value)

    @property
    def encode_bf16(self) -> bool:
        return self.bf16

    @property
    def precision(self) -> str:
        """``fp32`` or ``bf16``."""
        return "bf16" if self.bf16 else "fp32"

    @property
    def wrapped(self):
        """The encoder served."""
        return self._encoder

    def encode(self, texts, *args, bf16: bool | None = None, **kwargs):
        """``encoder.encode``: with the bf16 copy when serving bf16 (unless ``bf16=False``); ``bf16=True`` on an
        fp32 server is the encoder's own bf16 autocast."""
        use_half = self.bf16 if bf16 is None else bf16
        if use_half and self._half is not None:
            from textcl.models.prompts import prompts_of

            prompts_of(self._encoder)  # read once on the encoder, not again and again on the copy
            for name in _FOLLOWED:  # settings changed on the encoder after the copy was made
                value = getattr(self._encoder, name, None)
                if getattr(self._half, name, None) != value:
                    setattr(self._half, name, value)
            return self._half.encode(texts, *args, bf16=False, **kwargs)
        return self._encoder.encode(texts, *args, bf16=use_half, **kwargs)


def in_precision(encoder, requested: str = "auto", *, field: str = "--precision", **measure):
    """``encoder`` wrapped to encode in the precision ``requested`` resolves to (:class:`Precise`), or, for an
    encoder textcl cannot set (:func:`settable`), the encoder itself. The choice is the result's ``choice``."""
    if not settable(encoder):
        choose_encode_precision(encoder, requested, field=field, **measure)  # validates ``requested``
        return encoder
    half = measure.pop("half", None) or functools.cache(lambda: bf16_copy(encoder))
    choice = choose_encode_precision(encoder, requested, field=field, half=half, **measure)
    return Precise(encoder, choice, half() if choice.resolved == "bf16" else None)
