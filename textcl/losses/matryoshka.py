"""Matryoshka representation learning: train every listed prefix of the embedding at once.

``Matryoshka(loss, dims=[384, 256, 128, 64])`` computes ``sum_d w_d * loss(a[:, :d], p[:, :d], n[..., :d])``
on the embeddings of one forward pass, so the first ``d`` dimensions of a trained embedding, renormalised,
are an embedding of their own (``Encoder.encode(texts, dim=64)``).

Reference: Kusupati et al., *Matryoshka Representation Learning*, NeurIPS 2022 (arXiv:2205.13147).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Matryoshka"]


class Matryoshka(nn.Module):
    """Wrap any loss ``loss_fn(anchors (B, d), positives (B, d), negatives (B, k, d) | None, **keys)``.

    Keyword inputs (false-negative keys, gold scores, guide embeddings) pass through untruncated.

    Args:
        loss: the wrapped loss (InfoNCE, CoSENT, AnglE, ...).
        dims: the prefix lengths to train, each at most the embedding dimension.
        weights: one per dimension (default: all 1).
    """

    citation = """
@inproceedings{kusupati2022matryoshka,
    title = "Matryoshka Representation Learning",
    author = "Kusupati, Aditya and Bhatt, Gantavya and Rege, Aniket and Wallingford, Matthew and Sinha, Aditya and Ramanujan, Vivek and Howard-Snyder, William and Chen, Kaifeng and Kakade, Sham and Jain, Prateek and Farhadi, Ali",
    booktitle = "Advances in Neural Information Processing Systems",
    year = "2022",
}
"""

    def __init__(self, loss: nn.Module, dims: Sequence[int], weights: Sequence[float] | None = None):
        super().__init__()
        dims = [int(d) for d in dims]
        if not dims or any(d < 1 for d in dims) or len(set(dims)) != len(dims):
            raise ValueError(f"dims: expected distinct positive integers, got {dims!r}")
        weights = [1.0] * len(dims) if weights is None else [float(w) for w in weights]
        if len(weights) != len(dims) or any(w < 0 for w in weights):
            raise ValueError(f"weights: expected {len(dims)} non-negative numbers, got {weights!r}")
        self.loss, self.dims, self.weights = loss, dims, weights
        self.citation = getattr(loss, "citation", "") + self.citation

    @property
    def temperature(self):
        return self.loss.temperature

    def forward(self, anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None = None,
                **keys) -> torch.Tensor:
        if max(self.dims) > anchors.shape[-1]:
            raise ValueError(f"dims: {max(self.dims)} is larger than the embedding dimension {anchors.shape[-1]}")
        total = None
        for d, w in zip(self.dims, self.weights):
            if w:
                term = w * self.loss(anchors[..., :d], positives[..., :d],
                                     None if negatives is None else negatives[..., :d], **keys)
                total = term if total is None else total + term
        return anchors.new_zeros(()) if total is None else total

    def extra_repr(self) -> str:
        return f"dims={self.dims}, weights={self.weights}"
