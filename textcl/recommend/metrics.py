"""Full-ranking evaluation for recommendation: every catalogue item is ranked for every user.

This is the protocol of the recommender papers that do not sample negatives: for user ``u`` the target item is
ranked against **all** ``I`` items of the catalogue, except the items the user has already seen.

Conventions:

* **Ranks are 0-based**: rank 0 is the top of the list.
* **Excluded items** (the user's history) are removed from the ranking before the target's rank is counted.
  **The target itself is never excluded**, even when it appears in ``exclude`` (a user may see an item again;
  dropping the target would leave nothing to find).
* **Ties are broken pessimistically**: every other item whose score equals the target's counts as ranked above
  it. Optimistic tie-breaking (or breaking by item index) inflates the metrics of a model that outputs constant
  or heavily quantised scores: a model that scores every item 0 would put every target at rank 0.
* **NaN scores** count as ``-inf``: the lowest score, tied with every other NaN (so a model that outputs only
  NaN gets the worst rank, not the best).
* **Metrics** with one target per user: ``recall@k`` (= hit@k) is 1 if ``rank < k``; ``ndcg@k`` is
  ``1 / log2(rank + 2)`` if ``rank < k`` (the ideal DCG is 1: one relevant item); ``mrr@k`` is
  ``1 / (rank + 1)`` if ``rank < k``; each is 0 otherwise. Values are fractions in [0, 1] (not x100), averaged
  over users. Confidence intervals are percentile bootstraps over users
  (:func:`textcl.eval.stats.bootstrap_indices`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from textcl.eval.stats import bootstrap_indices

#: Upper bound on the elements of one chunk of scores compared at once (users x items) when no chunk size is given.
CHUNK_ELEMENTS = 1 << 22


# ---------------------------------------------------------------------------------------------------- scoring
def score_users(user_vecs: torch.Tensor, item_vecs: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """Scores of every item for every user: the dot product ``user_vecs @ item_vecs.T`` in float32.

    With L2-normalised inputs (or ``normalize=True``, which normalises both sides first) the score is the cosine.

    Args:
        user_vecs: ``(U, d)`` user embeddings.
        item_vecs: ``(I, d)`` item embeddings.
    Returns:
        ``(U, I)`` float32 scores.
    """
    user_vecs, item_vecs = torch.as_tensor(user_vecs), torch.as_tensor(item_vecs)
    if user_vecs.ndim != 2:
        raise ValueError(f"user_vecs: expected a 2-D (U, d) tensor, got shape {tuple(user_vecs.shape)}")
    if item_vecs.ndim != 2 or item_vecs.shape[1] != user_vecs.shape[1]:
        raise ValueError(f"item_vecs: expected a 2-D (I, d) tensor with d = {user_vecs.shape[1]} (as user_vecs), "
                         f"got shape {tuple(item_vecs.shape)}")
    users, items = user_vecs.float(), item_vecs.float()
    if normalize:
        users = torch.nn.functional.normalize(users, dim=1)
        items = torch.nn.functional.normalize(items, dim=1)
    return users @ items.T


# ---------------------------------------------------------------------------------------------------- ranks
def _check_scores_targets(scores, targets) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.as_tensor(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores: expected a 2-D (U, I) tensor (users x items), got shape {tuple(scores.shape)}")
    n_users, n_items = scores.shape
    targets = torch.as_tensor(targets)
    if targets.shape != (n_users,):
        raise ValueError(f"targets: expected a (U,) = ({n_users},) tensor of item indices (one per row of scores), "
                         f"got shape {tuple(targets.shape)}")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool or targets.is_complex():
        raise ValueError(f"targets: expected an integer (U,) tensor of item indices, got dtype {targets.dtype}")
    targets = targets.long()
    bad = ((targets < 0) | (targets >= n_items)).nonzero().flatten()
    if len(bad):
        u = int(bad[0])
        raise ValueError(f"targets: expected item indices in [0, I) = [0, {n_items}), got {int(targets[u])} "
                         f"for user {u} ({len(bad)} out of range)")
    return scores, targets


def _check_exclude(exclude, n_users: int, n_items: int):
    """``None``, a ``(U, I)`` bool tensor, or a list of ``U`` 1-D index tensors, checked."""
    if exclude is None:
        return None
    if isinstance(exclude, (torch.Tensor, np.ndarray)):
        exclude = torch.as_tensor(exclude)
        if exclude.dtype != torch.bool or exclude.shape != (n_users, n_items):
            raise ValueError(f"exclude: expected a (U, I) = ({n_users}, {n_items}) bool mask or a list of U index "
                             f"tensors, got a {exclude.dtype} tensor of shape {tuple(exclude.shape)}")
        return exclude
    if len(exclude) != n_users:
        raise ValueError(f"exclude: expected a list of U = {n_users} 1-D index tensors (one per user) or a (U, I) "
                         f"bool mask, got {len(exclude)} entries")
    out = []
    for u, idx in enumerate(exclude):
        idx = torch.as_tensor(idx)
        if idx.ndim == 1 and idx.numel() == 0:
            idx = idx.long()  # [] is float32 to torch
        if idx.ndim != 1 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise ValueError(f"exclude[{u}]: expected a 1-D integer tensor of item indices, got shape "
                             f"{tuple(idx.shape)} and dtype {idx.dtype}")
        idx = idx.long()
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n_items):
            raise ValueError(f"exclude[{u}]: expected item indices in [0, I) = [0, {n_items}), got "
                             f"{int(idx.min()) if int(idx.min()) < 0 else int(idx.max())}")
        out.append(idx)
    return out


def _exclude_mask(exclude, start: int, stop: int, n_items: int, device) -> torch.Tensor | None:
    """``(stop - start, I)`` bool mask of the excluded items of users ``start..stop``."""
    if exclude is None:
        return None
    if isinstance(exclude, torch.Tensor):
        return exclude[start:stop].to(device)
    rows = [torch.full((len(idx),), u, dtype=torch.long) for u, idx in enumerate(exclude[start:stop])]
    mask = torch.zeros(stop - start, n_items, dtype=torch.bool, device=device)
    if rows:
        mask[torch.cat(rows).to(device), torch.cat(exclude[start:stop]).to(device)] = True
    return mask


def _chunk_ranks(scores: torch.Tensor, targets: torch.Tensor, excluded: torch.Tensor | None) -> torch.Tensor:
    """Pessimistic 0-based ranks for one chunk: ``scores`` ``(c, I)``, ``targets`` ``(c,)`` -> ``(c,)``."""
    if scores.dtype.is_floating_point:
        scores = torch.nan_to_num(scores, nan=-float("inf"), posinf=float("inf"), neginf=-float("inf"))
    target_scores = scores.gather(1, targets[:, None])  # (c, 1)
    above = scores >= target_scores  # (c, I): ties count as above
    if excluded is not None:
        above &= ~excluded
    above[torch.arange(len(targets), device=scores.device), targets] = False  # the target is never above itself
    return above.sum(dim=1)


def rank_of_target(scores: torch.Tensor, targets: torch.Tensor,
                   exclude: Sequence[torch.Tensor] | torch.Tensor | None = None,
                   chunk_size: int | None = None) -> torch.Tensor:
    """0-based rank of each user's target among all items, the user's excluded items removed.

    The rank of user ``u``'s target ``t`` is the number of items ``j != t``, not excluded for ``u``, with
    ``scores[u, j] >= scores[u, t]``: **ties are pessimistic** (an item scored equal to the target ranks above
    it; optimistic tie-breaking would give a constant-score model perfect metrics). **The target is never
    excluded**, even if it is listed in ``exclude``. NaN scores count as the lowest (``-inf``).

    Args:
        scores: ``(U, I)`` scores, higher is better (users x items), on any device.
        targets: ``(U,)`` integer item index of each user's target, in ``[0, I)``.
        exclude: the items to leave out of each user's ranking (already seen): a list of ``U`` 1-D index tensors
            (lists of ints are fine), or a ``(U, I)`` bool mask (True = excluded), or None for none.
        chunk_size: users ranked at once, bounding the temporary ``(chunk_size, I)`` tensors; None picks
            ``max(1, CHUNK_ELEMENTS // I)``. The result does not depend on it.
    Returns:
        ``(U,)`` int64 ranks, on the CPU.
    Raises:
        ValueError: ``scores`` not 2-D, ``targets`` not ``(U,)`` integer indices in range, ``exclude`` of the
            wrong length or shape or with out-of-range indices.
    """
    scores, targets = _check_scores_targets(scores, targets)
    n_users, n_items = scores.shape
    exclude = _check_exclude(exclude, n_users, n_items)
    if chunk_size is None:
        chunk_size = max(1, CHUNK_ELEMENTS // max(1, n_items))
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive number of users, got {chunk_size}")
    targets = targets.to(scores.device)
    ranks = [
        _chunk_ranks(scores[a:a + chunk_size], targets[a:a + chunk_size],
                     _exclude_mask(exclude, a, min(a + chunk_size, n_users), n_items, scores.device)).cpu()
        for a in range(0, n_users, chunk_size)
    ]
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)


# ---------------------------------------------------------------------------------------------------- metrics
def per_user_metrics(ranks, k: int = 10) -> dict[str, np.ndarray]:
    """``{"recall@k", "ndcg@k", "mrr@k"}`` -> ``(U,)`` float64 per-user values of 0-based ``ranks`` ``(U,)``."""
    ranks = _check_ranks(ranks)
    if k < 1:
        raise ValueError(f"k: expected a cutoff >= 1, got {k}")
    hit = ranks < k
    r = ranks.astype(np.float64)
    return {f"recall@{k}": hit.astype(np.float64),
            f"ndcg@{k}": np.where(hit, 1.0 / np.log2(r + 2.0), 0.0),
            f"mrr@{k}": np.where(hit, 1.0 / (r + 1.0), 0.0)}


def _check_ranks(ranks) -> np.ndarray:
    ranks = ranks.detach().cpu().numpy() if isinstance(ranks, torch.Tensor) else np.asarray(ranks)
    if ranks.ndim != 1 or not len(ranks):
        raise ValueError(f"ranks: expected a non-empty (U,) array of 0-based ranks, got shape {ranks.shape}")
    if not np.issubdtype(ranks.dtype, np.integer) or ranks.min() < 0:
        raise ValueError(f"ranks: expected non-negative integer ranks, got dtype {ranks.dtype}"
                         + (f" and minimum {ranks.min()}" if np.issubdtype(ranks.dtype, np.number) else ""))
    return ranks.astype(np.int64)


def _bootstrap_ci(values: np.ndarray, idx: np.ndarray, level: float = 0.95, chunk: int = 100) -> list[float]:
    """Percentile CI ``[low, high]`` of the mean of ``values`` ``(n,)`` over resampling indices ``idx`` ``(R, n)``."""
    means = np.concatenate([values[idx[i:i + chunk]].mean(axis=1) for i in range(0, len(idx), chunk)])
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return [float(low), float(high)]


def ranking_metrics(ranks, k: int = 10, n_bootstrap: int = 0, seed: int = 0) -> dict:
    """Mean ``recall@k``, ``ndcg@k`` and ``mrr@k`` (fractions in [0, 1]) of 0-based ``ranks`` ``(U,)``, and
    ``n_users``.

    With ``n_bootstrap`` resamples of the users (:func:`~textcl.eval.stats.bootstrap_indices` with ``seed``; the
    same resamples for every metric), ``ci95`` maps each metric to its 95% percentile interval ``[low, high]``;
    without, there is no ``ci95`` key.
    """
    per_user = per_user_metrics(ranks, k)
    n = len(next(iter(per_user.values())))
    out: dict = {name: float(v.mean()) for name, v in per_user.items()}
    out["n_users"] = int(n)
    if n_bootstrap:
        idx = bootstrap_indices(n, int(n_bootstrap), seed)
        out["ci95"] = {name: _bootstrap_ci(v, idx) for name, v in per_user.items()}
    return out
