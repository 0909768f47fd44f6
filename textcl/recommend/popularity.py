"""The popularity baseline: every user gets the same list, items ordered by their number of training interactions.

A text model that does not beat it has learned nothing user-specific. It is ranked with the protocol of
:mod:`textcl.recommend.metrics`: the whole catalogue, the user's seen items left out (the target never), ties
pessimistic. Ties matter here: every item with the target's training count ranks above it, so a target never
seen in training ranks below every other remaining item.

Inputs are plain dicts and lists of item and user ids (strings, or any hashable), not split objects.
"""
from __future__ import annotations

from typing import Hashable, Iterable, Mapping, Sequence

import torch

from textcl.recommend.metrics import rank_of_target, ranking_metrics


def popularity_scores(item_counts: Mapping[Hashable, int], items: Sequence[Hashable]) -> torch.Tensor:
    """``(I,)`` float64 score of each of ``items``: its count in ``item_counts`` (0 for an item not in it)."""
    return torch.tensor([float(item_counts.get(item, 0)) for item in items], dtype=torch.float64)


def _item_index(items: Sequence[Hashable]) -> dict:
    index = {item: i for i, item in enumerate(items)}
    if len(index) != len(items):
        raise ValueError(f"items: expected distinct item ids, got {len(items)} ids of which {len(index)} distinct")
    return index


def _lookup(index: dict, item, what: str) -> int:
    if item not in index:
        raise ValueError(f"{what}: item {item!r} is not in items (the catalogue of {len(index)} items)")
    return index[item]


def popularity_metrics(train_counts: Mapping[Hashable, int], items: Sequence[Hashable],
                       targets_by_user: Mapping[Hashable, Hashable],
                       seen_by_user: Mapping[Hashable, Iterable[Hashable]],
                       k: int = 10, n_bootstrap: int = 0, seed: int = 0) -> dict:
    """:func:`~textcl.recommend.metrics.ranking_metrics` of the popularity ranking.

    Every item of ``items`` is scored by its training count (:func:`popularity_scores`); for each user of
    ``targets_by_user`` (in its order) the target is ranked among all items, the user's ``seen_by_user`` items
    left out (the target never).

    Args:
        train_counts: item -> number of training interactions.
        items: the catalogue, ``I`` distinct item ids (the columns of the ranking).
        targets_by_user: user -> the held-out item to find.
        seen_by_user: user -> the items already seen (excluded); every user of ``targets_by_user`` needs an entry.
    Raises:
        ValueError: duplicate ``items``, a target or seen item not in ``items``, a user with no ``seen_by_user``
            entry, or no users.
    """
    index = _item_index(items)
    users = list(targets_by_user)
    if not users:
        raise ValueError("targets_by_user: expected at least one user, got none")
    missing = [u for u in users if u not in seen_by_user]
    if missing:
        raise ValueError(f"seen_by_user: no entry for user {missing[0]!r} ({len(missing)} users of targets_by_user "
                         f"missing; give an empty list for a user who has seen nothing)")
    targets = torch.tensor([_lookup(index, targets_by_user[u], f"targets_by_user[{u!r}]") for u in users],
                           dtype=torch.long)
    exclude = [torch.tensor([_lookup(index, item, f"seen_by_user[{u!r}]") for item in seen_by_user[u]],
                            dtype=torch.long) for u in users]
    scores = popularity_scores(train_counts, items)[None, :].expand(len(users), len(items))  # (U, I), no copy
    return ranking_metrics(rank_of_target(scores, targets, exclude), k=k, n_bootstrap=n_bootstrap, seed=seed)
