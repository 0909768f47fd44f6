"""Embedding distillation towards a fixed teacher: keep a model's vectors where another model (usually its own
starting weights) puts them. Used by ``data.mix`` with ``objective: distill`` to keep what a fine-tuned model
knew off its task's domain (learning without forgetting, Li & Hoiem 2017, at the level of the embeddings)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_distill(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``mean_i (1 - cos(student_i, teacher_i))``: 0 where every vector points where the teacher's does, 1 for
    orthogonal ones, 2 for opposite ones. Only directions count (a cosine model's vectors may be rescaled).

    student: (b, d), with gradient; teacher: (b, d), no gradient needed. Returns a scalar."""
    if student.shape != teacher.shape or student.dim() != 2:
        raise ValueError(f"cosine_distill: expected student and teacher of one shape (b, d), got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    return (1.0 - F.cosine_similarity(student.float(), teacher.detach().float(), dim=-1)).mean()


class CosineDistill(torch.nn.Module):
    """:func:`cosine_distill` scaled by ``weight``."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = float(weight)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self.weight * cosine_distill(student, teacher)
