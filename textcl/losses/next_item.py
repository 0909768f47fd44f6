"""In-batch softmax for recommendation: a user (their history) against the next item they picked, the other
rows' items as negatives, with the two corrections in-batch negatives need on interaction logs.

1. **logQ correction** (Yi et al. 2019, *Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
   Recommendations*). A popular item is every other row's negative far more often than a rare one, so plain
   in-batch softmax learns to push popular items down. Each candidate's logit is lowered by ``log q_j``, the
   log of its probability of being sampled into a batch (its share of the training rows' items): the softmax
   then estimates the full-catalogue one.
2. **Accidental hits**: a candidate that is the row's own item (another row picked it too) or an item already
   in the row's history is not a negative; it is excluded from that row's softmax. The row's own positive
   column is never excluded.

3. **The whole catalogue beside the batch** (``negatives="catalogue"``, :func:`catalogue_softmax`): where the
   catalogue is small enough to embed every few steps (thousands of items), a second softmax runs each user
   over every item's cached vector (:class:`~textcl.recommend.catalogue.CatalogueCache`), so each user meets
   the whole catalogue as negatives rather than the B - 1 mostly popular ones a batch holds (text recommenders
   such as Recformer found in-batch negatives too noisy on small data); the in-batch softmax stays and trains
   the item tower.

The functional cores are :func:`next_item_softmax`, :func:`catalogue_softmax` and (for the sequence user
tower, a softmax over every item at every position) :func:`sequence_softmax`; :class:`NextItemLoss` builds
the in-batch mask from integer item keys (:func:`~textcl.losses.text_keys` of the item ids) and is what the
trainer calls.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .infonce import SIMILARITIES, _check_embeddings, _check_temperature, pairwise_similarity


def next_item_softmax(users: torch.Tensor, items: torch.Tensor, *, temperature: float = 0.05,
                      similarity: str = "cosine", item_logq: torch.Tensor | None = None,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of ``sim(u_i, v_j) / temperature - log q_j`` over the batch's items ``j``, target
    ``j = i``, with the ``mask``-ed candidates left out.

    Args:
        users: ``(B, d)`` user-tower embeddings.
        items: ``(B, d)`` item-tower embeddings; ``items[i]`` is user ``i``'s next item.
        temperature: divides the similarities (> 0).
        similarity: ``"cosine"``, ``"dot"`` or ``"euclidean"``.
        item_logq: ``(B,)`` log sampling probability of each row's item (logQ correction), or None.
        mask: ``(B, B)`` bool, ``True`` = not a negative for that row; the diagonal is never excluded.

    Returns:
        Scalar loss.

    Example:
        >>> u, v = torch.eye(2), torch.eye(2)
        >>> round(float(next_item_softmax(u, v, temperature=1.0)), 4)  # log(1 + e^-1)
        0.3133
    """
    _check_embeddings(users, items)
    _check_temperature(temperature)
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity: expected one of {SIMILARITIES}, got {similarity!r}")
    b = users.shape[0]
    logits = pairwise_similarity(users, items, similarity) / temperature
    if item_logq is not None:
        if not isinstance(item_logq, torch.Tensor) or item_logq.shape != (b,):
            raise ValueError(f"item_logq: expected a ({b},) tensor, got "
                             f"{tuple(item_logq.shape) if isinstance(item_logq, torch.Tensor) else item_logq!r}")
        if not bool(torch.isfinite(item_logq).all()) or bool((item_logq > 0).any()):
            raise ValueError("item_logq: expected finite log probabilities (<= 0)")
        logits = logits - item_logq.to(logits.dtype)[None, :]
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.shape != (b, b) or mask.dtype != torch.bool:
            raise ValueError(f"mask: expected a ({b}, {b}) bool tensor")
        mask = mask & ~torch.eye(b, dtype=torch.bool, device=mask.device)
        logits = logits.masked_fill(mask, float("-inf"))
    return F.cross_entropy(logits, torch.arange(b, device=logits.device))


def catalogue_softmax(users: torch.Tensor, catalogue: torch.Tensor, columns: torch.Tensor, *,
                      temperature: float = 0.05, similarity: str = "cosine",
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of ``sim(u_i, c_j) / temperature`` over every catalogue item ``j``, target
    ``j = columns[i]``, with the ``mask``-ed items left out.

    Every candidate, the target included, is a row of ``catalogue`` (a cache: no gradient), so the gradient
    reaches the user tower only. A target embedded afresh beside cached negatives would differ from them in
    ways that have nothing to do with the user (dropout, the weights' drift since the cache was made), and the
    softmax would learn to tell fresh from cached instead of liked from not.

    Args:
        users: ``(B, d)`` user-tower embeddings.
        catalogue: ``(N, d)`` cached embeddings of the catalogue's items.
        columns: ``(B,)`` int64, the catalogue row of each row's next item, in ``[0, N)``.
        temperature: divides the similarities (> 0).
        similarity: ``"cosine"``, ``"dot"`` or ``"euclidean"``.
        mask: ``(B, N)`` bool, ``True`` = not a negative for that row (an item the user already picked); a row's
            own column is never excluded.

    Returns:
        Scalar loss.

    Example:
        >>> u = torch.eye(2)
        >>> cat = torch.tensor([[0.0, 1.0], [2.0, 0.0], [1.0, 0.0]])
        >>> round(float(catalogue_softmax(u, cat, torch.tensor([2, 0]), temperature=1.0, similarity="dot")), 4)
        0.9795
    """
    if not isinstance(users, torch.Tensor) or users.dim() != 2:
        raise ValueError("users: expected a (B, d) tensor")
    _check_temperature(temperature)
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity: expected one of {SIMILARITIES}, got {similarity!r}")
    b, d = users.shape
    if not isinstance(catalogue, torch.Tensor) or catalogue.dim() != 2 or catalogue.shape[1] != d:
        raise ValueError(f"catalogue: expected an (N, {d}) tensor, got "
                         f"{tuple(catalogue.shape) if isinstance(catalogue, torch.Tensor) else catalogue!r}")
    n = catalogue.shape[0]
    if (not isinstance(columns, torch.Tensor) or columns.shape != (b,)
            or columns.dtype not in (torch.int64, torch.int32)
            or bool((columns < 0).any()) or bool((columns >= n).any())):
        raise ValueError(f"columns: expected a ({b},) integer tensor of catalogue rows in [0, {n})")
    columns = columns.long()
    logits = pairwise_similarity(users.float(), catalogue.detach().float(), similarity) / temperature
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.shape != (b, n) or mask.dtype != torch.bool:
            raise ValueError(f"mask: expected a ({b}, {n}) bool tensor")
        mask = mask.clone()
        mask[torch.arange(b, device=columns.device), columns] = False
        logits = logits.masked_fill(mask, float("-inf"))
    return F.cross_entropy(logits, columns)


def sequence_softmax(users: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, candidates: torch.Tensor, *,
                     temperature: float = 0.1) -> torch.Tensor:
    """Mean cross-entropy, over every non-padded position of a batch of item sequences, of the cosine between the
    user's vector after that position and every candidate item, over ``temperature``, the next item the target
    (the sequence user tower's objective, :mod:`textcl.recommend.sequence`).

    Args:
        users: ``(B, L, d)`` the user's vector after each position.
        items: ``(N, d)`` every item's vector (with gradient: both towers train).
        targets: ``(B, L)`` int64, the item after each position, ``-1`` where there is none (padding).
        candidates: ``(N,)`` bool, the items the softmax runs over (those seen in training); every target must
            be one.
        temperature: divides the cosines (> 0).

    Returns:
        Scalar loss (0 when no position has a target).

    Example:
        >>> u = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
        >>> v = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
        >>> t, c = torch.tensor([[-1, 1]]), torch.tensor([True, True, False])
        >>> round(float(sequence_softmax(u, v, t, c, temperature=1.0)), 4)  # log(1 + e^-1)
        0.3133
    """
    if not isinstance(users, torch.Tensor) or users.dim() != 3:
        raise ValueError("users: expected a (B, L, d) tensor")
    _check_temperature(temperature)
    b, length, d = users.shape
    if not isinstance(items, torch.Tensor) or items.dim() != 2 or items.shape[1] != d:
        raise ValueError(f"items: expected an (N, {d}) tensor")
    n = items.shape[0]
    if not isinstance(targets, torch.Tensor) or targets.shape != (b, length) or targets.dtype != torch.int64:
        raise ValueError(f"targets: expected a ({b}, {length}) int64 tensor of item rows or -1")
    if not isinstance(candidates, torch.Tensor) or candidates.shape != (n,) or candidates.dtype != torch.bool:
        raise ValueError(f"candidates: expected an ({n},) bool tensor")
    real = targets >= 0
    if bool((targets >= n).any()) or bool((targets < -1).any()):
        raise ValueError(f"targets: expected item rows in [0, {n}) or -1")
    if not bool(real.any()):
        return users.sum() * 0.0
    if not bool(candidates[targets[real]].all()):
        raise ValueError("targets: every target must be a candidate (an item seen in training)")
    u = F.normalize(users[real].float(), dim=-1)
    logits = (u @ F.normalize(items.float(), dim=-1).T) / temperature
    logits = logits.masked_fill(~candidates, float("-inf"))
    return F.cross_entropy(logits, targets[real])


def accidental_hits(item_keys: torch.Tensor, history_keys: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, B)`` bool: candidate ``j`` (row ``j``'s item) is row ``i``'s own item again, or in row ``i``'s
    history; the diagonal is False.

    Args:
        item_keys: ``(B,)`` int64 keys of each row's item.
        history_keys: ``(B, H)`` int64 keys of each row's history items; pad a short history with the row's own
            item key (it matches nothing the first rule does not).
    """
    if not isinstance(item_keys, torch.Tensor) or item_keys.dim() != 1:
        raise ValueError("item_keys: expected a (B,) tensor")
    b = item_keys.shape[0]
    hits = item_keys[:, None] == item_keys[None, :]
    if history_keys is not None:
        if not isinstance(history_keys, torch.Tensor) or history_keys.dim() != 2 or history_keys.shape[0] != b:
            raise ValueError(f"history_keys: expected a ({b}, H) tensor")
        hits |= (history_keys[:, :, None] == item_keys[None, None, :]).any(dim=1)
    return hits & ~torch.eye(b, dtype=torch.bool, device=hits.device)


class NextItemLoss(nn.Module):
    """Softmax of users against their next items: over the batch's items, with logQ correction and
    accidental-hit masking, or over the whole catalogue.

    Args:
        temperature: softmax temperature.
        similarity: ``"cosine"``, ``"dot"`` or ``"euclidean"``.
        logq_correction: subtract each in-batch candidate's ``log q`` (needs ``positive_logq`` in the call).
        mask_hits: leave out candidates that are the row's own item or in its history (needs ``positive_keys``,
            and ``history_keys`` for the second; with the catalogue, ``catalogue_mask`` too).
        negatives: ``"batch"`` (the other rows' items) or ``"catalogue"`` (the in-batch loss plus
            :func:`catalogue_softmax` over the cached catalogue; needs ``catalogue`` and ``positive_columns``).

    Inputs:
        ===============  =============  ====================================================
        anchors          ``(B, d)``     the user tower's embedding of each row's history
        positives        ``(B, d)``     the item tower's embedding of each row's next item
        positive_keys    ``(B,)`` int   item keys (:func:`~textcl.losses.text_keys` of the ids)
        history_keys     ``(B, H)`` int history item keys, padded with the row's own key
        positive_logq    ``(B,)``       log sampling probability of each row's item
        catalogue        ``(N, d)``     cached embeddings of the catalogue (``negatives="catalogue"``)
        positive_columns ``(B,)`` int   each row's item's row in ``catalogue``
        catalogue_mask   ``(B, N)`` bool the items each row's user already picked
        ===============  =============  ====================================================
    """

    citation = """
@inproceedings{yi2019sampling,
    title = "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item Recommendations",
    author = "Yi, Xinyang and Yang, Ji and Hong, Lichan and Cheng, Derek Zhiyuan and Heldt, Lukasz and
              Kumthekar, Aditee and Zhao, Zhe and Wei, Li and Chi, Ed",
    booktitle = "ACM Conference on Recommender Systems (RecSys)",
    year = "2019",
}
"""

    def __init__(self, temperature: float = 0.05, similarity: str = "cosine", *, logq_correction: bool = True,
                 mask_hits: bool = True, negatives: str = "batch"):
        super().__init__()
        _check_temperature(temperature)
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity: expected one of {SIMILARITIES}, got {similarity!r}")
        if negatives not in ("batch", "catalogue"):
            raise ValueError(f"negatives: expected 'batch' or 'catalogue', got {negatives!r}")
        self.temperature, self.similarity = float(temperature), similarity
        self.logq_correction, self.mask_hits = bool(logq_correction), bool(mask_hits)
        self.negatives = negatives

    def forward(self, anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None = None, *,
                positive_keys: torch.Tensor | None = None, history_keys: torch.Tensor | None = None,
                positive_logq: torch.Tensor | None = None, catalogue: torch.Tensor | None = None,
                positive_columns: torch.Tensor | None = None,
                catalogue_mask: torch.Tensor | None = None) -> torch.Tensor:
        if negatives is not None:
            raise ValueError("negatives: the next-item loss takes its negatives from the batch or the catalogue only")
        extra = None
        if self.negatives == "catalogue":
            if catalogue is None or positive_columns is None:
                raise ValueError("catalogue, positive_columns: negatives='catalogue' needs the cached catalogue and "
                                 "each row's item's row in it")
            if self.mask_hits and catalogue_mask is None:
                raise ValueError("catalogue_mask: mask_hits needs the items each row's user already picked")
            extra = catalogue_softmax(anchors, catalogue, positive_columns, temperature=self.temperature,
                                      similarity=self.similarity, mask=catalogue_mask if self.mask_hits else None)
        if self.logq_correction and positive_logq is None:
            raise ValueError("positive_logq: logq_correction needs each row's log sampling probability")
        if self.mask_hits and positive_keys is None:
            raise ValueError("positive_keys: mask_hits needs each row's item key")
        mask = accidental_hits(positive_keys, history_keys) if self.mask_hits else None
        loss = next_item_softmax(anchors, positives, temperature=self.temperature, similarity=self.similarity,
                                 item_logq=positive_logq if self.logq_correction else None, mask=mask)
        return loss if extra is None else loss + extra

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, similarity={self.similarity!r}, "
                f"logq_correction={self.logq_correction}, mask_hits={self.mask_hits}, negatives={self.negatives!r}")

