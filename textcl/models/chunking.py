"""Run a padded token batch as length-homogeneous chunks, so a forward costs the tokens it holds.

A training step often mixes sequences of very different lengths: 8-token queries and 128-token passages,
or anchors, positives and hard negatives of a triple. Padded into one ``(B, L)`` batch, every query is run
as ``L`` tokens. Instead, the rows are sorted by their real length, cut into chunks whose padding is small,
each chunk is trimmed to its own widest row and embedded, and the embeddings are put back in the input
order. All chunks share one autograd graph, so a single ``backward`` reaches every row.

The cut points minimise ``sum(rows x width) + overhead x chunks`` exactly (a dynamic programme over the
sorted lengths): ``overhead`` is the fixed cost of one more forward/backward, in tokens. The trainer measures
it for its model on the machine at hand (:func:`measured_chunk_overhead`, cached); the constants below are
the fallback of an encoder used outside the trainer.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

__all__ = ["CHUNK_OVERHEAD_TOKENS", "chunk_overhead_for", "plan_chunks", "row_lengths", "forward_by_length",
           "chunk_cost_probe", "measured_chunk_overhead"]

#: the fixed cost of one more forward/backward pass, in tokens of work, by device type. CPU: measured on
#: MiniLM with 2 threads, where 64 was fastest (benchmarks/RESULTS.md, "Step layout"); the trainer measures it
#: per machine and model. CUDA: on an H200 one chunk per forward (trimmed to the widest row) trained 1.2-1.6x
#: faster than cutting at 4,096 tokens on every shape measured (benchmarks/RESULTS.md, "GPU"): the GPU is
#: launch-bound at these sizes, so it takes no cut below 65,536 tokens of saved padding.
CHUNK_OVERHEAD_TOKENS = {"cpu": 64, "cuda": 65536}


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


def chunk_cost_probe(embed: Callable[[dict[str, torch.Tensor]], torch.Tensor], params: list[torch.Tensor],
                     vocab_size: int, device: torch.device, *, width: int = 32,
                     rows: tuple[int, ...] = (1, 2, 4, 8, 16), repeats: int = 3,
                     bf16: bool = False) -> dict[str, float]:
    """Time ``embed`` forward and backward (to ``params``, leaving their ``.grad`` alone) on ``rows x width``
    token batches and fit ``seconds = fixed + per_token x tokens`` by least squares.

    Returns ``{"fixed_s", "per_token_s", "overhead_tokens", "fit_r2"}``: one more chunk costs ``fixed_s /
    per_token_s`` tokens of work (at least 1); ``fit_r2`` is the fit's R^2 (times disturbed by other work fit a
    line badly). Runs without changing any random state."""
    from textcl.models.calibration import best_time

    tokens, seconds = [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        for r in rows:
            feats = {"input_ids": torch.randint(5, max(6, vocab_size), (r, width), device=device),
                     "attention_mask": torch.ones(r, width, dtype=torch.long, device=device)}

            def run() -> None:
                with torch.enable_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    out = embed(feats)
                torch.autograd.grad(out.float().square().mean(), params, allow_unused=True)

            tokens.append(r * width)
            seconds.append(best_time(run, repeats, device.type))
    x, y = np.asarray(tokens, dtype=np.float64), np.asarray(seconds, dtype=np.float64)
    per_token, fixed = np.polyfit(x, y, 1)
    residual = y - (per_token * x + fixed)
    r2 = 1.0 - float(residual @ residual) / max(float(((y - y.mean()) @ (y - y.mean()))), 1e-300)
    per_token = max(float(per_token), 1e-12)
    fixed = max(float(fixed), 1e-12)
    return {"fixed_s": fixed, "per_token_s": per_token, "overhead_tokens": max(1.0, fixed / per_token),
            "fit_r2": max(r2, 1e-9)}


#: a chunk-cost fit explaining less of the variance than this was disturbed by other work: not cached
MIN_FIT_R2 = 0.95


def measured_chunk_overhead(encoder, *, bf16: bool = False,
                            probe: Callable[[], dict[str, float]] | None = None) -> tuple[int, dict]:
    """The per-chunk cost, in tokens, of ``encoder`` (a :class:`~textcl.models.Encoder`) on its device and at
    this precision, measured once per machine, model shape and precision, then cached
    (:func:`textcl.models.calibration.measured`). Returns ``(tokens, cache entry)``. ``probe`` replaces the
    measurement (tests)."""
    from textcl.models.calibration import measured

    config = encoder.model.config
    shape = {"model_type": getattr(config, "model_type", ""), "hidden": int(config.hidden_size),
             "layers": int(getattr(config, "num_hidden_layers", 0)),
             "heads": int(getattr(config, "num_attention_heads", 0)),
             "intermediate": int(getattr(config, "intermediate_size", 0) or 0), "bf16": bool(bf16)}
    device = encoder.device
    if device.type == "cuda" and probe is None:
        # a small-batch probe misses what costs on a GPU (launches, per-shape kernel choice); the end-to-end
        # measurement behind CHUNK_OVERHEAD_TOKENS["cuda"] decides
        return chunk_overhead_for(device), {"cached": False, "steady": True, "values": {}}
    if probe is None:
        def probe():
            was_training = encoder.training
            encoder.eval()  # no dropout: the measurement draws no random numbers
            try:
                params = [p for p in encoder.parameters() if p.requires_grad]
                return chunk_cost_probe(encoder.embed, params, int(getattr(config, "vocab_size", 1000)), device,
                                        bf16=bf16)
            finally:
                encoder.train(was_training)
    entry = measured("chunk", device.type, shape, probe, steady=lambda v: v.get("fit_r2", 1.0) >= MIN_FIT_R2,
                     required=("overhead_tokens",))
    if not entry["steady"]:  # other work shared the cores: the device's default decides this run
        return chunk_overhead_for(device), entry
    return int(round(min(entry["values"]["overhead_tokens"], 65536.0))), entry
