"""MoCo: a momentum (EMA) key encoder and a FIFO queue of past keys used as extra negatives.

A training step with MoCo (He et al., 2020)::

    q = encoder(anchors)                                  # (B, d), with gradient
    with torch.no_grad():
        key_encoder.update(encoder)                       # EMA, before the keys are computed (as in MoCo)
        k = key_encoder(positives)                        # (B, d), no gradient
    loss = moco_loss(q, k, queue, temperature=0.05, positive_keys=keys)
    accelerator.backward(loss); optimizer.step()
    queue.enqueue(all_gather_no_grad(k), all_gather_no_grad(keys))   # after the step; gathered when DDP

The queue is part of the training state: save ``queue.state_dict()`` in checkpoints and restore it with
``load_state_dict`` (it round-trips exactly, pointer included).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .infonce import info_nce
from .masking import _mask

__all__ = ["momentum_update", "MomentumEncoder", "MoCoQueue", "moco_loss"]


@torch.no_grad()
def momentum_update(key_model: nn.Module, query_model: nn.Module, m: float = 0.999) -> None:
    """``θ_k ← m θ_k + (1 - m) θ_q`` for every parameter; buffers (e.g. BatchNorm statistics) are copied.

    Both models must have the same parameter names and shapes (``key_model`` is usually a deep copy).
    """
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"m: expected a momentum in [0, 1], got {m!r}")
    q_params = dict(query_model.named_parameters())
    k_params = dict(key_model.named_parameters())
    if q_params.keys() != k_params.keys():
        missing = sorted(set(q_params) ^ set(k_params))[:3]
        raise ValueError(f"key_model: parameters differ from query_model's (e.g. {missing})")
    for name, pk in k_params.items():
        pq = q_params[name]
        if pk.shape != pq.shape:
            raise ValueError(f"key_model: {name} has shape {tuple(pk.shape)}, query_model {tuple(pq.shape)}")
        pk.mul_(m).add_(pq.detach().to(pk.dtype), alpha=1.0 - m)
    q_buffers = dict(query_model.named_buffers())
    for name, bk in key_model.named_buffers():
        if name in q_buffers:
            bk.copy_(q_buffers[name])


class MomentumEncoder(nn.Module):
    """A frozen copy of a query encoder, updated by EMA, that embeds the keys.

    Args:
        encoder: the query encoder; it is deep-copied (so wrap the unwrapped model, not a DDP wrapper).
        momentum: EMA factor ``m`` (MoCo: 0.999).

    Example:
        >>> enc = nn.Linear(8, 4)
        >>> key_enc = MomentumEncoder(enc, momentum=0.999)
        >>> key_enc.update(enc)               # after or before each optimizer step, consistently
        >>> k = key_enc(torch.randn(2, 8))    # no gradient
    """

    def __init__(self, encoder: nn.Module, momentum: float = 0.999):
        super().__init__()
        if not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum: expected a number in [0, 1], got {momentum!r}")
        self.momentum = float(momentum)
        self.encoder = copy.deepcopy(encoder)
        for p in self.encoder.parameters():
            p.requires_grad_(False)

    def update(self, encoder: nn.Module) -> None:
        momentum_update(self.encoder, encoder, self.momentum)

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.encoder(*args, **kwargs)


class MoCoQueue(nn.Module):
    """FIFO queue of the ``size`` most recent keys (embeddings, plus integer text keys for masking).

    Buffers: ``embeddings`` ``(size, dim)``, ``keys`` ``(size,)`` int64, ``ptr`` (next slot), ``count``
    (filled slots). Being buffers, they move with ``.to(device)`` and are saved by ``state_dict()``.

    Args:
        dim: embedding size ``d``.
        size: ``K``, the number of queued negatives (MoCo: 65536; SimCSE-scale batches: a few thousand).
    """

    def __init__(self, dim: int, size: int):
        super().__init__()
        for name, v in (("dim", dim), ("size", size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        self.dim, self.size = dim, size
        self.register_buffer("embeddings", torch.zeros(size, dim))
        self.register_buffer("keys", torch.zeros(size, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return int(self.count)

    @torch.no_grad()
    def enqueue(self, embeddings: torch.Tensor, keys: torch.Tensor | None = None) -> None:
        """Append ``(n, dim)`` embeddings (and their ``(n,)`` keys), overwriting the oldest when full."""
        if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2 or embeddings.shape[1] != self.dim:
            got = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
            raise ValueError(f"embeddings: expected shape (n, {self.dim}), got {got}")
        n = embeddings.shape[0]
        if keys is None:
            # Unkeyed entries get keys no text hash is likely to produce; they are never masked by text.
            keys = torch.full((n,), torch.iinfo(torch.long).min, dtype=torch.long)
        if not isinstance(keys, torch.Tensor) or tuple(keys.shape) != (n,):
            got = tuple(keys.shape) if isinstance(keys, torch.Tensor) else type(keys).__name__
            raise ValueError(f"keys: expected shape ({n},), got {got}")
        if n > self.size:  # only the newest `size` survive
            embeddings, keys, n = embeddings[-self.size :], keys[-self.size :], self.size
        slots = (int(self.ptr) + torch.arange(n)) % self.size
        slots = slots.to(self.embeddings.device)
        self.embeddings[slots] = embeddings.detach().to(self.embeddings)
        self.keys[slots] = keys.to(self.keys.device, torch.long)
        self.ptr.fill_((int(self.ptr) + n) % self.size)
        self.count.fill_(min(int(self.count) + n, self.size))

    def negatives(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embeddings (M, dim), keys (M,))`` of the filled entries, oldest first (``M = len(self)``)."""
        n, ptr = int(self.count), int(self.ptr)
        if n < self.size:
            return self.embeddings[:n], self.keys[:n]
        order = (ptr + torch.arange(self.size, device=self.embeddings.device)) % self.size
        return self.embeddings[order], self.keys[order]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, size={self.size}, filled={len(self)}"


def moco_loss(
    queries: torch.Tensor,
    keys: torch.Tensor,
    queue: MoCoQueue,
    *,
    temperature: float = 0.05,
    similarity: str = "cosine",
    positive_keys: torch.Tensor | None = None,
    anchor_keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE of ``queries`` against ``[keys of the batch, queue entries]``, target = own key.

    The queue entries are shared ``(M, d)`` negatives of :func:`info_nce`; the other keys of the batch are
    negatives too. With ``positive_keys`` (text keys of what ``keys`` embed, ``(B,)``) and/or ``anchor_keys``,
    any queued entry or batch key with the same text as a row's positive or anchor is masked out, so no entry
    from the current batch (queued in an earlier step: a repeated epoch, a duplicate) is a negative for itself.

    Args:
        queries: ``(B, d)`` from the query encoder (with gradient).
        keys: ``(B, d)`` from the momentum encoder (no gradient).
        queue: the queue *before* this batch is enqueued.
    """
    negatives, neg_keys = queue.negatives()
    negatives = negatives.to(queries.dtype) if len(queue) else None
    mask = None
    if positive_keys is not None or anchor_keys is not None:
        b = queries.shape[0]
        row = [positive_keys, anchor_keys]
        blocks = [_mask(b, b, row, positive_keys, None, None, 0, device=queries.device)]
        if negatives is not None:
            blocks.append(_mask(b, negatives.shape[0], row, neg_keys, None, None, None, device=queries.device))
        mask = torch.cat(blocks, dim=1)
    return info_nce(queries, keys.detach(), negatives, temperature=temperature, similarity=similarity, mask=mask)
