"""CoSENT: learn from graded similarity scores by ranking pair similarities in the order of their scores.

For a batch of pairs ``(a_i, p_i)`` with gold scores ``s_i`` and model similarities ``c_i = cos(a_i, p_i)``,
every ordered couple of pairs with ``s_i > s_j`` should have ``c_i > c_j``::

    loss = log(1 + sum_{i, j: s_i > s_j} exp(scale * (c_j - c_i)))

Only the order of the scores matters, so the loss is unchanged by any strictly increasing rescaling of them
(0-5 STS labels, 0-1 labels, ranks). :func:`cosent_from_similarities` takes any per-pair similarity; AnglE
(:mod:`textcl.losses.angle`) uses it with an angle-space similarity too.

Reference: Su Jianlin, *CoSENT: a more efficient sentence vector scheme than Sentence-BERT*, 2022.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["cosent", "cosent_from_similarities", "CoSENT"]


def _check_scores(scores: torch.Tensor, b: int) -> None:
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (b,):
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"scores: expected shape ({b},), one gold score per pair, got {got}")


def cosent_from_similarities(similarities: torch.Tensor, scores: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """CoSENT on given per-pair similarities.

    Args:
        similarities: ``(B,)`` the model's similarity of each pair.
        scores: ``(B,)`` gold scores; only their order is used.
        scale: multiplies the similarity differences (CoSENT: 20).
    Returns:
        scalar; ``log 1 = 0`` when no two scores differ.
    """
    _check_scores(scores, similarities.shape[0])
    diff = scale * (similarities[None, :] - similarities[:, None])  # [i, j] = scale * (sim_j - sim_i)
    ordered = scores[:, None] > scores[None, :]  # pair i should be the more similar one
    zero = diff.new_zeros(1)
    return torch.logsumexp(torch.cat([zero, diff[ordered]]), dim=0)


def cosent(anchors: torch.Tensor, positives: torch.Tensor, scores: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """CoSENT on the cosine similarity of ``anchors[i]`` and ``positives[i]``, both ``(B, d)``."""
    if anchors.shape != positives.shape or anchors.dim() != 2:
        raise ValueError(f"anchors and positives: expected two (B, d) tensors of one shape, got "
                         f"{tuple(anchors.shape)} and {tuple(positives.shape)}")
    return cosent_from_similarities(F.cosine_similarity(anchors, positives, dim=-1), scores, scale)


class CoSENT(nn.Module):
    """The CoSENT loss as a module: ``loss_fn(anchors (B, d), positives (B, d), scores=(B,))``.

    Hard negatives and false-negative keys, which the trainer passes to every loss, are not used: CoSENT
    compares the pairs of the batch with each other, not with negatives.

    Relations: equals sentence-transformers' ``CoSENTLoss`` (``scale=20``, cosine).
    """

    citation = """
@online{kexuefm-8847,
    title = "CoSENT: A more efficient sentence vector scheme than Sentence-BERT",
    author = "Su Jianlin",
    year = "2022",
    url = "https://kexue.fm/archives/8847",
}
"""

    def __init__(self, scale: float = 20.0):
        super().__init__()
        if not scale > 0:
            raise ValueError(f"scale: expected a positive number, got {scale!r}")
        self.scale = float(scale)
        self.temperature = 1.0 / self.scale  # what the trainer logs as the run's temperature

    def forward(self, anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None = None, *,
                scores: torch.Tensor | None = None, **unused_keys) -> torch.Tensor:
        if scores is None:
            raise ValueError("scores: CoSENT needs a gold score per pair (data.kind: scored)")
        return cosent(anchors, positives, scores, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"
