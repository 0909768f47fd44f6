"""Pairwise similarity of row-aligned embeddings: a (n, d), b (n, d) -> (n,)."""
from __future__ import annotations

import numpy as np

SIMILARITIES = ("cosine", "dot", "euclidean", "manhattan")


def paired_similarity(a: np.ndarray, b: np.ndarray, fn: str = "cosine") -> np.ndarray:
    """Similarity of a[i] and b[i]; ``euclidean`` and ``manhattan`` are negated distances (higher = closer)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if fn == "cosine":
        na = np.linalg.norm(a, axis=1)
        nb = np.linalg.norm(b, axis=1)
        return (a * b).sum(1) / np.maximum(na * nb, 1e-12)
    if fn == "dot":
        return (a * b).sum(1)
    if fn == "euclidean":
        return -np.linalg.norm(a - b, axis=1)
    if fn == "manhattan":
        return -np.abs(a - b).sum(1)
    raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}; got {fn!r}")
