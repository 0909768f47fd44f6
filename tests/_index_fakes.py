"""Deterministic fake encoders for the index, retrieval and mining tests."""
from __future__ import annotations

import zlib

import numpy as np


class HashEncoder:
    """Bag of words hashed into ``dim`` buckets (crc32, so stable across processes); unit rows."""

    def __init__(self, dim: int = 64, name: str = "hash-bow"):
        self.dim = dim
        self.name = name
        self.calls = 0

    def encode(self, texts, batch_size: int = 32):
        self.calls += 1
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().replace(".", " ").replace(",", " ").split():
                out[i, zlib.crc32(w.encode()) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=out, where=norms > 0)


class FailingEncoder(HashEncoder):
    """Raises after ``ok_calls`` successful encode calls, like a build killed mid-way."""

    def __init__(self, ok_calls: int, dim: int = 64):
        super().__init__(dim)
        self.ok_calls = ok_calls

    def encode(self, texts, batch_size: int = 32):
        if self.calls >= self.ok_calls:
            raise KeyboardInterrupt("killed")
        return super().encode(texts, batch_size)


def clustered(n: int, dim: int, n_clusters: int, seed: int = 0, spread: float = 0.35):
    """(n, dim) unit vectors around ``n_clusters`` random unit centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    labels = rng.integers(0, n_clusters, n)
    x = centres[labels] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
