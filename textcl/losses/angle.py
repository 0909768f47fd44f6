"""AnglE: CoSENT in cosine and in angle space, plus an in-batch InfoNCE term on the most similar pairs.

Cosine similarity saturates: near ``cos = ±1`` its gradient vanishes. AnglE (Li and Li, 2024) splits each
embedding into a real and an imaginary half, ``z = re + i·im`` per dimension, and also ranks pairs by
``|Re + Im|`` of the normalised complex product ``z_a·conj(z_p) / (|z_a|·|z_p|)`` (:func:`angle_similarity`),
whose gradient does not vanish where the cosine's does::

    loss = cosine_weight * CoSENT(cos)  +  angle_weight * CoSENT(angle)  +  ibn_weight * InfoNCE(top pairs)

The in-batch term treats pairs scored at least ``ibn_min_score`` as positives, with every other pair's second
sentence as a negative (temperature ``1 / ibn_scale``).

Reference: Li Xianming and Li Jing, *AoE: Angle-Optimized Embeddings for Semantic Textual Similarity*,
ACL 2024 (arXiv:2309.12871).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cosent import _check_scores, cosent_from_similarities
from .infonce import info_nce

__all__ = ["angle_similarity", "angle", "AnglE"]


def angle_similarity(anchors: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """AnglE's angle-space similarity of each pair: ``(B, d), (B, d) -> (B,)`` with ``d`` even.

    With ``a = re_a + i·im_a`` and ``p = re_p + i·im_p`` (first and second halves of the embedding), it is
    ``|Re + Im|`` of ``Σ_k a_k·conj(p_k) / (|a|·|p|)``, i.e.
    ``|cos(a, p) + Σ_k (im_a·re_p − re_a·im_p) / (|a|·|p|)|``: the authors' code (``angle_emb``) and
    sentence-transformers' ``pairwise_angle_sim``, which divide by the whole positive's squared modulus; bounded
    by ``√2``. (Dividing each dimension by its own ``|p_k|^2``, the literal per-dimension quotient, is unbounded
    where a ``p_k`` is near 0, and training on it degraded MiniLM on STS-B: benchmarks/RESULTS.md.)"""
    if anchors.shape != positives.shape or anchors.dim() != 2 or anchors.shape[1] % 2:
        raise ValueError(f"anchors and positives: expected two (B, d) tensors of one shape with d even, got "
                         f"{tuple(anchors.shape)} and {tuple(positives.shape)}")
    a, p = F.normalize(anchors, dim=1), F.normalize(positives, dim=1)
    re_a, im_a = a.chunk(2, dim=1)
    re_p, im_p = p.chunk(2, dim=1)
    return ((re_a * re_p + im_a * im_p) + (im_a * re_p - re_a * im_p)).sum(dim=1).abs()


def angle(anchors: torch.Tensor, positives: torch.Tensor, scores: torch.Tensor, *, scale: float = 20.0,
          cosine_weight: float = 1.0, angle_weight: float = 1.0, ibn_weight: float = 1.0, ibn_scale: float = 20.0,
          ibn_min_score: float = 4.0) -> torch.Tensor:
    """The AnglE loss of ``anchors`` and ``positives`` ``(B, d)`` with gold ``scores`` ``(B,)`` (see the
    module docstring). A term whose weight is 0 is not computed."""
    _check_scores(scores, anchors.shape[0])
    loss = anchors.new_zeros(())
    if cosine_weight:
        sims = torch.nn.functional.cosine_similarity(anchors, positives, dim=-1)
        loss = loss + cosine_weight * cosent_from_similarities(sims, scores, scale)
    if angle_weight:
        loss = loss + angle_weight * cosent_from_similarities(angle_similarity(anchors, positives), scores, scale)
    top = scores >= ibn_min_score
    if ibn_weight and bool(top.any()):
        # rows: the top pairs' anchors; candidates: their positives, then the other pairs' positives as
        # negatives shared by every row (in-batch negatives, as in InfoNCE)
        rest = positives[~top]
        term = info_nce(anchors[top], positives[top], rest if len(rest) else None, temperature=1.0 / ibn_scale)
        loss = loss + ibn_weight * term
    return loss


class AnglE(nn.Module):
    """The AnglE loss as a module: ``loss_fn(anchors (B, d), positives (B, d), scores=(B,))``; see
    :func:`angle` for the weights. Hard negatives and false-negative keys are not used.

    Relations: sentence-transformers' ``AnglELoss`` is the angle term alone (``cosine_weight=0,
    ibn_weight=0``) with ``scale=20`` (tested equal to ``AnglELoss``).
    """

    citation = """
@inproceedings{li2024aoe,
    title = "{A}o{E}: Angle-optimized Embeddings for Semantic Textual Similarity",
    author = "Li, Xianming and Li, Jing",
    booktitle = "Proceedings of the 62nd Annual Meeting of the Association for Computational Linguistics",
    year = "2024",
}
"""

    def __init__(self, scale: float = 20.0, *, cosine_weight: float = 1.0, angle_weight: float = 1.0,
                 ibn_weight: float = 1.0, ibn_scale: float = 20.0, ibn_min_score: float = 4.0):
        super().__init__()
        for name, value in (("scale", scale), ("ibn_scale", ibn_scale)):
            if not value > 0:
                raise ValueError(f"{name}: expected a positive number, got {value!r}")
        for name, value in (("cosine_weight", cosine_weight), ("angle_weight", angle_weight),
                            ("ibn_weight", ibn_weight)):
            if value < 0:
                raise ValueError(f"{name}: expected a non-negative weight, got {value!r}")
        self.options = dict(scale=float(scale), cosine_weight=float(cosine_weight), angle_weight=float(angle_weight),
                            ibn_weight=float(ibn_weight), ibn_scale=float(ibn_scale), ibn_min_score=float(ibn_min_score))
        self.temperature = 1.0 / float(scale)

    def forward(self, anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None = None, *,
                scores: torch.Tensor | None = None, **unused_keys) -> torch.Tensor:
        if scores is None:
            raise ValueError("scores: AnglE needs a gold score per pair (data.kind: scored)")
        return angle(anchors, positives, scores, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v:g}" for k, v in self.options.items())
