"""Score one trained model at several embedding dimensions from a single encoding pass.

:class:`Truncated` wraps an encoder: every text is encoded once at full width (cached), and ``encode``
returns the first ``dim`` dimensions, renormalised - what ``Encoder.encode(texts, dim=d)`` computes, without
re-running the model per dimension. textcl's own STS and retrieval evaluators then score it.
"""
from __future__ import annotations

import numpy as np


class Truncated:
    def __init__(self, encoder, cache: dict | None = None):
        self.encoder, self.cache, self.dim = encoder, {} if cache is None else cache, encoder.dim
        self.name = getattr(encoder, "name", "model")

    def at(self, dim: int) -> "Truncated":
        view = Truncated(self.encoder, self.cache)
        view.dim = dim
        return view

    def encode(self, texts, batch_size: int = 64, **_):
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            vecs = self.encoder.encode(missing, batch_size=batch_size, normalize=False)
            self.cache.update(zip(missing, vecs))
        out = np.stack([self.cache[t][: self.dim] for t in texts]).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def scores_at_dims(encoder, dims, beir_dir) -> dict:
    """{dim: {"stsb-test": Spearman x100, "ndcg@10": x100 on beir_dir}} for each dim."""
    from textcl.eval.retrieval import evaluate_retrieval
    from textcl.eval.sts import evaluate_sts

    base = Truncated(encoder)
    out = {}
    for d in dims:
        view = base.at(d)
        sts = evaluate_sts(view, ["stsb-test"])["sets"]["stsb-test"]["spearman"]
        out[d] = {"stsb-test": round(sts, 2), "ndcg@10": round(100 * evaluate_retrieval(view, beir_dir)["ndcg@10"], 2)}
    return out
