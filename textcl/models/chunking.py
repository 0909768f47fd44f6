"""Run a padded token batch as length-homogeneous chunks, so a forward costs the tokens it holds.

A training step often mixes sequences of very different lengths: 8-token queries and 128-token passages,
or anchors, positives and hard negatives of a triple. Padded into one ``(B, L)`` batch, every query is run
as ``L`` tokens. Instead, the rows are sorted by their real length, cut into chunks whose padding is small,
each chunk is trimmed to its own widest row and embedded, and the embeddings are put back in the input
order. All chunks share one autograd graph, so a single ``backward`` reaches every row.

The cut points minimise ``sum(rows x width) + overhead x chunks`` exactly (a dynamic programme over the
sorted lengths): ``overhead`` is the fixed cost of one more forward/backward, in tokens.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

__all__ = ["CHUNK_OVERHEAD_TOKENS", "chunk_overhead_for", "plan_chunks", "row_lengths", "forward_by_length"]

#: the fixed cost of one more forward/backward pass, in tokens of work, by device type. CPU: measured on
#: MiniLM with 2 threads, where 64 was fastest (benchmarks/RESULTS.md, "Step layout"). CUDA: not measured
#: yet; a GPU runs thousands of tokens in the time of one kernel launch, so chunks there stay large.
CHUNK_OVERHEAD_TOKENS = {"cpu": 64, "cuda": 4096}


def chunk_overhead_for(device: torch.device | str) -> int:
    """The default chunk overhead (tokens) on ``device``."""
    return CHUNK_OVERHEAD_TOKENS.get(torch.device(device).type, CHUNK_OVERHEAD_TOKENS["cuda"])


def plan_chunks(lengths: np.ndarray | list[int], overhead: int = CHUNK_OVERHEAD_TOKENS["cpu"]) -> list[tuple[int, int]]:
    """Cut rows sorted by decreasing length into chunks ``[(start, stop), ...]``.

    A chunk costs ``(stop - start) * lengths[start] + overhead``; the plan has the least total cost.

    Args:
        lengths: (n,) non-increasing row lengths.
        overhead: the cost of one more chunk, in tokens (>= 0).
    Returns:
        consecutive ``(start, stop)`` pairs covering ``0..n``; ``[]`` for ``n == 0``.

    Example:
        >>> plan_chunks([100, 100, 10, 10], overhead=50)   # 2*100 + 2*10 + 2*50 = 320 < 4*100 + 50
        [(0, 2), (2, 4)]
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    n = len(lengths)
    if n and np.any(np.diff(lengths) > 0):
        raise ValueError("lengths: expected a non-increasing sequence (sort the rows longest first)")
    if overhead < 0:
        raise ValueError(f"overhead: expected a non-negative number of tokens, got {overhead!r}")
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    for stop in range(1, n + 1):
        starts = np.arange(stop)
        # a chunk [start, stop) is as wide as its first (longest) row
        cost = best[:stop] + (stop - starts) * lengths[:stop] + overhead
        cut[stop] = int(np.argmin(cost))
        best[stop] = cost[cut[stop]]
    bounds, stop = [], n
    while stop > 0:
        bounds.append((int(cut[stop]), stop))
        stop = int(cut[stop])
    return bounds[::-1]


def row_lengths(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) mask -> (B,) the width each row needs: one past its last attended position (0 if none).

    Not the mask's sum: token cutoff may mask positions in the middle of a row."""
    width = attention_mask.shape[1]
    if width == 0:
        return torch.zeros(attention_mask.shape[0], dtype=torch.long, device=attention_mask.device)
    attended = attention_mask.ne(0)
    last = width - attended.flip(1).int().argmax(1)
    return torch.where(attended.any(1), last, torch.zeros_like(last))


def forward_by_length(embed: Callable[[dict[str, torch.Tensor]], torch.Tensor],
                      features: Mapping[str, torch.Tensor], overhead: int | None = None) -> torch.Tensor:
    """``embed(features)`` computed as length-homogeneous chunks.

    Args:
        embed: ``features -> (m, d)``, e.g. :meth:`Encoder.embed`.
        features: ``input_ids``, ``attention_mask`` (B, L) and any other (B, L) tensors (``token_type_ids``),
            right-padded.
        overhead: see :func:`plan_chunks`; None takes :func:`chunk_overhead_for` the features' device.
    Returns:
        (B, d) embeddings in the input order, equal to ``embed(features)`` up to floating-point rounding for
        an encoder whose padded positions are masked out (every Hugging Face encoder with right padding).
    """
    mask = features["attention_mask"]
    n = mask.shape[0]
    if overhead is None:
        overhead = chunk_overhead_for(mask.device)
    lengths = row_lengths(mask).cpu()
    if n == 0:
        return embed(dict(features))
    order = torch.argsort(-lengths, stable=True)
    sorted_lengths = lengths[order].clamp(min=1).numpy()
    bounds = plan_chunks(sorted_lengths, overhead)
    if len(bounds) == 1 and sorted_lengths[0] == mask.shape[1]:
        return embed(dict(features))  # one chunk with no padding to trim: nothing to reorder
    order_dev = order.to(mask.device)
    outs = []
    for start, stop in bounds:
        rows = order_dev[start:stop]
        width = int(sorted_lengths[start])
        outs.append(embed({k: v[rows, :width] for k, v in features.items()}))
    inverse = torch.empty_like(order_dev)
    inverse[order_dev] = torch.arange(n, device=mask.device)
    return torch.cat(outs)[inverse]
