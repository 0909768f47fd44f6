"""Guided false-negative filtering (GISTEmbed): a frozen guide model decides which in-batch candidates are
too similar to the anchor to serve as its negatives.

For anchor ``i`` with positive ``p_i`` and a candidate ``c``, all embedded by the guide::

    c is not a negative of i   if   cos(g(a_i), g(c)) > cos(g(a_i), g(p_i)) - margin

The positive itself is never excluded. Noisy pair data holds duplicates and paraphrases of a pair among the
other pairs; the guide keeps them from being pushed away.

Reference: Solatorio, *GISTEmbed: Guided In-sample Selection of Training Negatives for Text Embedding
Fine-tuning*, 2024 (arXiv:2402.16829).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["guided_mask"]


def guided_mask(rows: torch.Tensor, targets: torch.Tensor, candidates: torch.Tensor, offset: int = 0,
                margin: float = 0.0) -> torch.Tensor:
    """The guide's exclusion mask.

    Args:
        rows: ``(B, g)`` guide embeddings of the anchors.
        targets: ``(B, g)`` guide embeddings of each anchor's positive.
        candidates: ``(C, g)`` guide embeddings of the candidates; row ``i``'s positive is column ``offset + i``.
        margin: exclude candidates within ``margin`` below the positive's similarity too.
    Returns:
        ``(B, C)`` bool, ``True`` = not a negative for that row; never ``True`` at a row's positive.
    """
    rows, targets, candidates = (F.normalize(t.float(), dim=-1) for t in (rows, targets, candidates))
    sims = rows @ candidates.T
    positive = (rows * targets).sum(-1, keepdim=True)
    mask = sims > positive - margin
    b = rows.shape[0]
    mask[torch.arange(b, device=mask.device), offset + torch.arange(b, device=mask.device)] = False
    return mask
