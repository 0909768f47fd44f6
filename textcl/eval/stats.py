"""Correlations and bootstrap statistics for STS evaluation.

All functions take 1-D arrays of equal length n. Spearman is the Pearson correlation of average ranks
(ties share the mean rank), as in ``scipy.stats.spearmanr``. Both are NaN where they are undefined (fewer
than 2 pairs, or a side whose values are all equal); :func:`undefined_reason` says why in words.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

N_BOOTSTRAP = 1000


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of (R, n) arrays -> (R,)."""
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    denom = np.sqrt((x * x).sum(-1) * (y * y).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (x * y).sum(-1) / denom, np.nan)


def pearson(x, y) -> float:
    return float(_pearson_rows(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)))


def spearman(x, y) -> float:
    return float(_pearson_rows(rankdata(x), rankdata(y)))


def _shown(x: float) -> str:
    return str(float(f"{x:.6g}"))  # 3.0, 0.812345


def _side_reason(values: np.ndarray, what: str) -> str | None:
    n = len(values)
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        return f"{bad} of {n} {what} are not finite"
    if np.all(values == values[0]):
        return f"all {n} {what} are equal ({_shown(values[0])})"
    return None


def undefined_reason(gold, pred=None) -> str | None:
    """Why Spearman and Pearson of (``gold``, ``pred``) are undefined, or None when they are defined.

    They are undefined for fewer than 2 pairs (``"only 1 pair"``), for a side whose values are all equal
    (``"all 5 gold scores are equal (3.0)"``, ``"all 5 predicted similarities are equal (1.0)"``: zero
    variance) and for a side with NaN or infinite values. ``pred=None`` checks the gold scores alone.
    """
    gold = np.asarray(gold, dtype=np.float64)
    if len(gold) < 2:
        return "no pairs" if len(gold) == 0 else "only 1 pair"
    reason = _side_reason(gold, "gold scores")
    if reason is None and pred is not None:
        reason = _side_reason(np.asarray(pred, dtype=np.float64), "predicted similarities")
    return reason


def _resample_spearman(gold: np.ndarray, pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Spearman on each row of resampling indices idx (R, n) -> (R,)."""
    return _pearson_rows(rankdata(gold[idx], axis=1), rankdata(pred[idx], axis=1))


def bootstrap_indices(n: int, n_resamples: int = N_BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """(n_resamples, n) indices drawn with replacement from a seeded generator."""
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def bootstrap_ci(gold, pred, *, n_resamples: int = N_BOOTSTRAP, seed: int = 0, level: float = 0.95,
                 chunk: int = 100) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of Spearman(gold, pred), resampling pairs.

    Returns (low, high) as correlations (not ×100).
    """
    gold = np.asarray(gold, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    idx = bootstrap_indices(len(gold), n_resamples, seed)
    stats = np.concatenate([_resample_spearman(gold, pred, idx[i:i + chunk]) for i in range(0, n_resamples, chunk)])
    alpha = (1.0 - level) / 2.0
    low, high = np.nanquantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)


def paired_bootstrap(gold, pred_a, pred_b, *, n_resamples: int = N_BOOTSTRAP, seed: int = 0, level: float = 0.95,
                     chunk: int = 100) -> dict[str, float]:
    """Paired bootstrap test of Spearman(gold, pred_a) − Spearman(gold, pred_b) on the same pairs.

    Each resample draws the same pair indices for both models. The two-sided p-value is twice the share
    of resampled differences on the other side of zero from the observed difference (capped at 1).

    Returns ``diff``, ``ci95`` bounds ``low``/``high`` (correlations, not ×100) and ``p_value``.
    """
    gold = np.asarray(gold, dtype=np.float64)
    pred_a = np.asarray(pred_a, dtype=np.float64)
    pred_b = np.asarray(pred_b, dtype=np.float64)
    diff = spearman(gold, pred_a) - spearman(gold, pred_b)
    idx = bootstrap_indices(len(gold), n_resamples, seed)
    diffs = np.concatenate([
        _resample_spearman(gold, pred_a, idx[i:i + chunk]) - _resample_spearman(gold, pred_b, idx[i:i + chunk])
        for i in range(0, n_resamples, chunk)
    ])
    return _paired_result(diff, diffs, level)


def _paired_result(diff: float, diffs: np.ndarray, level: float) -> dict[str, float]:
    """``diff``, the ``level`` CI of the resampled ``diffs`` and the two-sided p-value: twice the share of
    resampled differences on the other side of zero from ``diff`` (capped at 1)."""
    tail = np.mean(diffs <= 0) if diff > 0 else np.mean(diffs >= 0) if diff < 0 else 0.5
    alpha = (1.0 - level) / 2.0
    low, high = np.nanquantile(diffs, [alpha, 1.0 - alpha])
    return {"diff": float(diff), "low": float(low), "high": float(high), "p_value": float(min(1.0, 2.0 * tail))}


def paired_mean_bootstrap(a, b, *, n_resamples: int = N_BOOTSTRAP, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Paired bootstrap test of mean(a) − mean(b) for two models' per-query scores on the same queries
    (e.g. each query's nDCG@10 from ``evaluate_retrieval(..., per_query=True)``).

    Args:
        a, b: ``(n,)`` scores of the same n queries, in the same order.
    Returns:
        ``diff``, ``ci95`` bounds ``low``/``high`` and the two-sided ``p_value``, as :func:`paired_bootstrap`.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"a, b: expected two non-empty (n,) arrays of one shape, got {a.shape} and {b.shape}")
    d = a - b
    return _paired_result(float(d.mean()), d[bootstrap_indices(len(d), n_resamples, seed)].mean(axis=1), level)
