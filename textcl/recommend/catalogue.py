"""The training catalogue's item embeddings, cached for the softmax of each user over every item
(``data.interactions.negatives: catalogue``, :func:`~textcl.losses.next_item.catalogue_softmax`).

Every ``every`` optimizer steps the item tower embeds every training item as training embeds a batch's items
(its catalogue text cut at ``model.max_seq_len``, no prompt) but in eval mode, without gradient, at the run's
precision; between refreshes the loss reads these vectors. The items held out for cold start are not in it: a
cold item stays unseen by training, as it would be in a catalogue that did not hold it yet.

The cache is a module whose buffers (the vectors and the step of their last refresh) are saved with each
checkpoint, so a resumed run reads the very vectors the uninterrupted one read.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn


class CatalogueCache(nn.Module):
    """``embeddings``: ``(N, d)`` float32, row ``j`` the item tower's vector of ``item_ids[j]`` at the last refresh.

    Args:
        item_ids: the catalogue's items, in column order.
        texts: each item's text (what the item tower embeds), aligned with ``item_ids``.
        dim: the embedding dimension ``d``.
        every: refresh after this many optimizer steps (>= 1).
    """

    def __init__(self, item_ids: list[str], texts: list[str], dim: int, every: int):
        super().__init__()
        if len(item_ids) != len(texts) or not item_ids:
            raise ValueError(f"item_ids, texts: expected the same non-zero number of items and texts, got "
                             f"{len(item_ids)} and {len(texts)}")
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every: expected a positive number of steps, got {every!r}")
        self.item_ids, self.texts, self.every = list(item_ids), list(texts), every
        self.column = {item: j for j, item in enumerate(self.item_ids)}
        if len(self.column) != len(self.item_ids):
            raise ValueError("item_ids: expected each item once")
        self.register_buffer("embeddings", torch.zeros(len(item_ids), dim))
        self.register_buffer("refreshed_at", torch.tensor(-1, dtype=torch.long))  #: -1: never

    def due(self, step: int) -> bool:
        """True before the first refresh and once ``every`` steps have passed since the last."""
        last = int(self.refreshed_at)
        return last < 0 or step - last >= self.every

    def refresh(self, encoder, step: int, *, max_length: int, batch_size: int = 128,
                autocast=contextlib.nullcontext) -> None:
        """Embed every item with ``encoder`` as training embeds a batch's items (the same tokenization at
        ``max_length``, no prompt), in eval mode, without gradient, under ``autocast()`` (the run's precision)."""
        order = sorted(range(len(self.texts)), key=lambda j: len(self.texts[j]))  # batches of like lengths
        was_training = encoder.training
        encoder.eval()
        try:
            with torch.no_grad(), autocast():
                for start in range(0, len(order), batch_size):
                    rows = order[start:start + batch_size]
                    feats = encoder.tokenize([self.texts[j] for j in rows], max_length=max_length)
                    vectors = encoder({k: v.to(self.embeddings.device) for k, v in feats.items()})
                    self.embeddings[torch.tensor(rows, device=self.embeddings.device)] = vectors.float()
        finally:
            nn.Module.train(encoder, was_training)  # restoring the mode is not training: keep the backend
        self.refreshed_at.fill_(int(step))

    def columns(self, items: list[str]) -> torch.Tensor:
        """``(B,)`` int64: each item's row in :attr:`embeddings`."""
        try:
            return torch.tensor([self.column[i] for i in items], dtype=torch.long)
        except KeyError as e:
            raise ValueError(f"item {e.args[0]!r} is not in the training catalogue") from None
