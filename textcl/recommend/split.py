"""Leave-one-out splits of an interaction log in time order, and a cold-start split that holds items out.

Conventions (both splits):

* A user's interactions are ordered by ``(timestamp, order)``: ties in time keep the order of the file.
* **Leave-one-out**: a user's last interaction is the test item, the one before it the validation item, the
  rest (in time order) the training sequence. A user with fewer than :data:`MIN_INTERACTIONS` (3) interactions
  keeps them all in training and has no validation or test item.
* **Repeated rows** (the same user, item and timestamp) are one interaction: the first in the file is kept.
  A log that repeats a line would otherwise put a user's validation or test item into their own history.
* **Re-interactions** (the same user and item at different times) are kept as they are, in time order: an item
  may appear in a training sequence more than once, and the validation or test item may also appear earlier
  in the user's history when the user picked it before. Nothing is deduplicated.
* Users keep the order of their first interaction in the log; histories are in time order, most recent LAST.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, NamedTuple

import numpy as np

from textcl.data.interactions import Interaction

#: the interactions a user needs to have a validation and a test item (one training item, at least)
MIN_INTERACTIONS = 3
STAGES = ("valid", "test")


@dataclass
class Split:
    """``train[user]``: the user's training items in time order; ``valid[user]`` / ``test[user]``: the held-out
    item of each stage, for the users evaluated there."""

    train: dict[str, list[str]]
    valid: dict[str, str]
    test: dict[str, str]

    def history(self, user: str, stage: str) -> list[str]:
        """The items ``user`` picked before ``stage``'s item, in time order (most recent last): the training
        items for ``"valid"``; the training items and then the validation item for ``"test"``."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
        if user not in getattr(self, stage):
            raise KeyError(f"user {user!r} has no {stage} item")
        items = list(self.train.get(user, []))
        if stage == "test":
            items.append(self.valid[user])
        return items


class ColdSplit(NamedTuple):
    """What :func:`cold_split` returns: the warm split, the held-out items, and the cold-start stage
    (``cold_test[user]``: a held-out item to find; ``cold_history[user]``: what the user picked before it, held-out
    items left out, in time order, most recent last)."""

    split: Split
    cold_items: set[str]
    cold_test: dict[str, str]
    cold_history: dict[str, list[str]]


def user_sequences(interactions: Iterable[Interaction]) -> dict[str, list[str]]:
    """user -> their items ordered by ``(timestamp, order)``; users in order of first appearance. A row that
    repeats an earlier row's user, item and timestamp is dropped."""
    by_user: dict[str, list[Interaction]] = {}
    seen: set[tuple] = set()
    for x in interactions:
        if (x.user, x.item, x.timestamp) in seen:
            continue
        seen.add((x.user, x.item, x.timestamp))
        by_user.setdefault(x.user, []).append(x)
    return {user: [x.item for x in sorted(rows, key=lambda x: (x.timestamp, x.order))]
            for user, rows in by_user.items()}


def leave_one_out(interactions: Iterable[Interaction]) -> Split:
    """Per user, in time order: the last item is the test item, the one before it the validation item, the
    rest the training sequence. A user with fewer than 3 interactions keeps them all in training and is in
    neither ``valid`` nor ``test``. Re-interactions are kept (see the module docstring)."""
    train: dict[str, list[str]] = {}
    valid: dict[str, str] = {}
    test: dict[str, str] = {}
    for user, items in user_sequences(interactions).items():
        if len(items) < MIN_INTERACTIONS:
            train[user] = items
            continue
        train[user], valid[user], test[user] = items[:-2], items[-2], items[-1]
    return Split(train, valid, test)


def choose_cold_items(items: Iterable[str], fraction: float, seed: int = 0) -> set[str]:
    """``round(fraction * n)`` (at least 1) of the ``n`` distinct ``items``, drawn without replacement by
    ``numpy.random.default_rng(seed)`` from the sorted ids, so that the draw depends only on the ids and seed."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    pool = sorted(set(items))
    if not pool:
        return set()
    n_cold = min(len(pool), max(1, round(fraction * len(pool))))
    chosen = np.random.default_rng(seed).choice(len(pool), size=n_cold, replace=False)
    return {pool[int(i)] for i in chosen}


def cold_split(interactions: Iterable[Interaction], fraction: float = 0.1, seed: int = 0) -> ColdSplit:
    """A split for cold-start evaluation: ``fraction`` of the items are held out of training altogether.

    Exactly:

    1. The cold items are :func:`choose_cold_items` of the items that occur in the log (``fraction``, ``seed``).
    2. :func:`leave_one_out` is computed on the FULL log, cold items included: each user's validation and test
       items are the same as without a cold split.
    3. ``split.train``: each user's training sequence with every cold item removed (time order kept); users
       left with no training item are dropped. No cold item is ever trained on.
    4. ``split.valid``: the users whose validation item is not cold and who have at least one training item.
       ``split.test``: those of ``split.valid`` whose test item is not cold (so the test history, training
       items and then the validation item, has no cold item either).
    5. The cold-start stage: the users whose leave-one-out test item (on the full log) is cold.
       ``cold_test[user]`` is that item; ``cold_history[user]`` is everything the user picked before it
       (training items, then the validation item) with cold items removed, most recent last. A user whose
       history is then empty is left out (there is nothing to recommend from).

    Returns a :class:`ColdSplit` ``(split, cold_items, cold_test, cold_history)``.
    """
    interactions = list(interactions)
    cold = choose_cold_items((x.item for x in interactions), fraction, seed)
    full = leave_one_out(interactions)
    train = {user: kept for user, items in full.train.items() if (kept := [i for i in items if i not in cold])}
    valid = {user: item for user, item in full.valid.items() if item not in cold and user in train}
    test = {user: item for user, item in full.test.items() if user in valid and item not in cold}
    cold_test: dict[str, str] = {}
    cold_history: dict[str, list[str]] = {}
    for user, target in full.test.items():
        if target not in cold:
            continue
        history = [i for i in full.history(user, "test") if i not in cold]
        if history:
            cold_test[user], cold_history[user] = target, history
    return ColdSplit(Split(train, valid, test), cold, cold_test, cold_history)


def item_counts(split: Split) -> dict[str, int]:
    """item -> its number of training interactions (re-interactions counted each time): the popularity
    baseline's scores."""
    return dict(Counter(item for items in split.train.values() for item in items))


def log_sampling_probability(counts: dict, items) -> dict:
    """``item -> log(count / total)`` for each of ``items``: the logQ of an item whose ``counts`` are its
    appearances among what batches are drawn from (the training rows' items, ``task.rows_logq``); an item
    missing from ``counts`` is refused: it was never sampled into a batch."""
    total = sum(counts.values())
    if total <= 0:
        raise ValueError("counts: expected at least one training interaction")
    missing = [i for i in items if counts.get(i, 0) <= 0]
    if missing:
        raise ValueError(f"counts: item {missing[0]!r} has no training interaction, so no sampling probability")
    return {i: math.log(counts[i] / total) for i in items}
