"""Pooling: turn token states into one vector per sentence.

Modes (the SimCSE names):
- ``cls``: the [CLS] state passed through the model's pooler (dense + tanh), i.e. ``pooler_output``.
- ``cls_before_pooler``: the raw [CLS] state, ``last_hidden[:, 0]``.
- ``mean``: the mean of the non-padding token states.
- ``max``: the element-wise max over non-padding token states.
- ``first_last_avg``: the mean over tokens of the average of the first transformer layer's output
  (``hidden_states[1]``) and the last layer's output.
"""
from __future__ import annotations

import torch

POOLING_MODES = ("cls", "cls_before_pooler", "mean", "max", "first_last_avg")


def check_pooling(mode: str) -> str:
    if mode not in POOLING_MODES:
        raise ValueError(f"pooling must be one of {', '.join(POOLING_MODES)}; got {mode!r}")
    return mode


def masked_mean(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """states (B, L, d), attention_mask (B, L) -> (B, d)."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def masked_max(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """states (B, L, d), attention_mask (B, L) -> (B, d); padding never wins."""
    filled = states.masked_fill(attention_mask.unsqueeze(-1) == 0, -1e9)
    return filled.max(dim=1).values


def pool(
    mode: str,
    last_hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    hidden_states: tuple[torch.Tensor, ...] | None = None,
    pooler_output: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pool token states into sentence vectors.

    Args:
        mode: one of :data:`POOLING_MODES`.
        last_hidden: (B, L, d) last layer states.
        attention_mask: (B, L), 1 for real tokens.
        hidden_states: the model's ``hidden_states`` tuple (embeddings, layer 1, ..., layer N),
            each (B, L, d); needed by ``first_last_avg``.
        pooler_output: (B, d); needed by ``cls``.

    Returns:
        (B, d) sentence vectors.
    """
    if mode == "cls":
        if pooler_output is None:
            raise ValueError("pooling 'cls' needs a model with a pooler layer; use 'cls_before_pooler' instead")
        return pooler_output
    if mode == "cls_before_pooler":
        return last_hidden[:, 0]
    if mode == "mean":
        return masked_mean(last_hidden, attention_mask)
    if mode == "max":
        return masked_max(last_hidden, attention_mask)
    if mode == "first_last_avg":
        if hidden_states is None or len(hidden_states) < 2:
            raise ValueError("pooling 'first_last_avg' needs the model's hidden_states")
        return masked_mean((hidden_states[1] + hidden_states[-1]) / 2.0, attention_mask)
    raise ValueError(f"pooling must be one of {', '.join(POOLING_MODES)}; got {mode!r}")
