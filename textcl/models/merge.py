"""Weight-space ensembling (WiSE-FT, Wortsman et al. 2022): θ = (1 − α)·θ_base + α·θ_tuned, tensor by tensor.

Interpolating a fine-tuned model back towards the model it started from keeps much of what the start knew
off the task's domain, at a small cost on the task; no retraining. ``α = 0`` gives the base weights and
``α = 1`` the tuned ones, bit for bit. Both models must have one architecture: the same tensor names, shapes
and dtypes, the same integer buffers, the same pooling and normalisation.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch

from textcl.errors import TextclError


class MergeMismatch(TextclError):
    """The two models cannot be interpolated: the message names the tensor or setting and both models."""


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= float(alpha) <= 1.0:
        raise TextclError(f"alpha: expected a number in [0, 1], got {alpha!r}")
    return float(alpha)


def interpolate(base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor], alpha: float, *,
                names: tuple[str, str] = ("base", "tuned")) -> dict[str, torch.Tensor]:
    """``(1 − alpha)·base + alpha·tuned`` for each floating tensor (computed in float32, returned in the
    tensor's dtype); integer tensors (position ids) must be equal and are kept. Tensors of any shape.

    Raises :class:`MergeMismatch` naming the first tensor that is missing from one side, or differs in shape,
    dtype or (integer tensors) value; ``names`` are the two models' names for the message.
    """
    alpha = _check_alpha(alpha)
    check_tensors(base, tuned, names)
    out: dict[str, torch.Tensor] = {}
    for key, b in base.items():
        t = tuned[key]
        if not b.is_floating_point():
            out[key] = t.detach().clone()
        elif alpha == 0.0:
            out[key] = b.detach().clone()
        elif alpha == 1.0:
            out[key] = t.detach().clone()
        else:
            merged = torch.lerp(b.detach().float(), t.detach().to(b.device).float(), alpha)
            out[key] = merged.to(b.dtype)
    return out


def check_tensors(base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor],
                  names: tuple[str, str] = ("base", "tuned")) -> None:
    """Raise :class:`MergeMismatch` naming the first tensor that is missing from one side, or differs in
    shape, dtype or (integer tensors) value; ``names`` are the two models' names for the message."""
    only_base, only_tuned = sorted(set(base) - set(tuned)), sorted(set(tuned) - set(base))
    if only_base or only_tuned:
        side, key = (names[0], only_base[0]) if only_base else (names[1], only_tuned[0])
        other = names[1] if side == names[0] else names[0]
        count = len(only_base) + len(only_tuned)
        raise MergeMismatch(f"{side} has tensor {key!r}, which {other} lacks ({count} tensor(s) differ): "
                            "not the same architecture")
    for key, b in base.items():
        t = tuned[key]
        if b.shape != t.shape or b.dtype != t.dtype:
            raise MergeMismatch(f"tensor {key!r}: {names[0]} has {tuple(b.shape)} {b.dtype}, {names[1]} has "
                                f"{tuple(t.shape)} {t.dtype}: not the same architecture")
        if not b.is_floating_point() and not torch.equal(b, t):
            raise MergeMismatch(f"tensor {key!r} ({b.dtype}) differs between {names[0]} and {names[1]}")


def check_compatible(base, tuned, names: tuple[str, str]) -> None:
    """Refuse two :class:`~textcl.models.Encoder` whose settings make their outputs different things."""
    for attr in ("pooling", "normalize", "do_lower_case"):
        a, b = getattr(base, attr), getattr(tuned, attr)
        if a != b:
            raise MergeMismatch(f"{attr}: {names[0]} has {a!r}, {names[1]} has {b!r}: not the same architecture")
    ta, tb = type(base.model).__name__, type(tuned.model).__name__
    if ta != tb:
        raise MergeMismatch(f"transformer: {names[0]} is a {ta}, {names[1]} a {tb}: not the same architecture")


def merge_encoders(base, tuned, alpha: float, names: tuple[str, str] = ("base", "tuned")):
    """Set ``tuned``'s weights to the interpolation (in place) and return it; its settings (maximum length,
    prompts) are kept."""
    check_compatible(base, tuned, names)
    merged = interpolate(base.state_dict(), tuned.state_dict(), alpha, names=names)
    tuned.load_state_dict(merged)
    return tuned


def merge_folders(base: str | os.PathLike, tuned: str | os.PathLike, alpha: float,
                  out: str | os.PathLike) -> Path:
    """Load two sentence-transformers folders (or hub names), interpolate, and write ``out`` atomically in the
    sentence-transformers layout with ``tuned``'s settings. A ``base`` without sentence-transformers settings
    (a plain transformers folder, as SimCSE recipes start from) takes ``tuned``'s pooling and normalisation.
    Returns ``out``."""
    from textcl.models import Encoder

    from textcl.models.resolve import resolve_model

    alpha = _check_alpha(alpha)
    names = (os.fspath(base), os.fspath(tuned))
    enc_tuned = Encoder.load(tuned, device="cpu")
    if (resolve_model(base) / "modules.json").exists():
        enc_base = Encoder.load(base, device="cpu")
    else:  # a plain transformers folder (bert-base-uncased) says no pooling: it is the tuned model's start
        enc_base = Encoder.load(base, device="cpu", pooling=enc_tuned.pooling, normalize=enc_tuned.normalize)
    merged = merge_encoders(enc_base, enc_tuned, alpha, names)
    from textcl.models.st_format import default_model_card

    merged.name = f"{Path(names[1]).name} (WiSE-FT, alpha {alpha})"
    card = default_model_card(merged.name, merged.dim, merged.pooling, merged.normalize) + (
        f"\nWeights: (1 - {alpha}) x `{names[0]}` + {alpha} x `{names[1]}`, tensor by tensor "
        f"(`textcl merge`, WiSE-FT).\n")
    return merged.save(out, model_card=card)
