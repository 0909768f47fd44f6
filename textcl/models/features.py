"""Token features: the one place that pads tokenized rows and batches into ``(B, L)`` tensors."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = ["pad_features"]


def pad_features(parts: Sequence[Mapping[str, torch.Tensor | Sequence[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Stack tokenized parts along the batch axis, right-padded to the widest.

    Each part maps feature names (``input_ids``, ``attention_mask``, ``token_type_ids``) to either a batch,
    ``(B_i, L_i)`` tensors, or one row, a ``(L_i,)`` sequence of ints. ``input_ids`` are padded with
    ``pad_id``, every other feature with 0.

    Returns:
        ``{name: (sum B_i, max L_i) tensor}``, rows in the order of ``parts``; int64 for rows given as lists,
        the parts' dtype and device for tensors.
    """
    if not parts:
        raise ValueError("pad_features needs at least one part")
    keys = list(parts[0])
    first = parts[0][keys[0]]
    batches = [[torch.as_tensor(p[k]) for k in keys] for p in parts]
    batches = [[t if t.dim() == 2 else t.reshape(1, -1) for t in ts] for ts in batches]
    rows = sum(ts[0].shape[0] for ts in batches)
    width = max(ts[0].shape[1] for ts in batches)
    dtype = first.dtype if isinstance(first, torch.Tensor) else torch.long
    device = first.device if isinstance(first, torch.Tensor) else None
    out = {}
    for j, key in enumerate(keys):
        t = torch.full((rows, width), pad_id if key == "input_ids" else 0, dtype=dtype, device=device)
        start = 0
        for ts in batches:
            b, w = ts[j].shape
            t[start:start + b, :w] = ts[j]
            start += b
        out[key] = t
    return out
