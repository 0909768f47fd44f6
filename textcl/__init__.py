"""textcl: contrastive learning of sentence embeddings.

Public API (imported lazily so that ``import textcl`` stays cheap)::

    from textcl import Encoder, evaluate_sts, compare_sts, load_sts
    from textcl import TrainConfig, train            # contrastive training
    from textcl import SearchIndex, evaluate_retrieval  # FAISS search and retrieval metrics
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Encoder": "textcl.models",
    "load_sts": "textcl.data.sts",
    "STSData": "textcl.data.sts",
    "evaluate_sts": "textcl.eval.sts",
    "compare_sts": "textcl.eval.sts",
    "TrainConfig": "textcl.config",
    "load_config": "textcl.config",
    "train": "textcl.train",
    "SearchIndex": "textcl.index",
    "evaluate_retrieval": "textcl.eval.retrieval",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'textcl' has no attribute {name!r}")
