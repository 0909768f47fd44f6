"""Deterministic batch order: a function of (seed, epoch) alone, so a resumed run sees the same batches."""
from __future__ import annotations

import numpy as np

GROUP_WINDOW = 50  # batches per length-sorted window


def epoch_batches(lengths: np.ndarray, batch_size: int, *, seed: int, epoch: int,
                  group_by_length: bool = True, drop_last: bool = True) -> list[np.ndarray]:
    """Batches of example indices for one epoch.

    The examples are shuffled with a generator seeded by (seed, epoch). With ``group_by_length``, each window
    of ``GROUP_WINDOW * batch_size`` shuffled examples is sorted by length before it is cut into batches, and
    the batches are shuffled again: batches pad little, and their order stays random. The last short batch
    is dropped (in-batch negatives want full batches) unless ``drop_last`` is False.

    Args:
        lengths: (n,) a length proxy per example (characters).
    Returns:
        a list of (batch_size,) int64 index arrays.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if group_by_length:
        window = GROUP_WINDOW * batch_size
        parts = []
        for start in range(0, len(order), window):
            chunk = order[start:start + window]
            parts.append(chunk[np.argsort(-lengths[chunk], kind="stable")])
        order = np.concatenate(parts) if parts else order
    stop = len(order) - (len(order) % batch_size if drop_last else 0)
    batches = [order[i:i + batch_size] for i in range(0, stop, batch_size)]
    if group_by_length:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
