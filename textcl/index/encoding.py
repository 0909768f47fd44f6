"""Turning texts into unit-length float32 vectors with any encoder.

An encoder is any object with ``encode(list[str]) -> np.ndarray`` of shape ``(n, d)``; one that also has
``encode_documents(ids, texts)`` embeds documents through it (:func:`encode_documents`). Keyword arguments
(``batch_size``, ``normalize``, ``show_progress``) are passed only to encoders whose ``encode`` accepts them.
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

import numpy as np

from textcl.index.errors import DimensionMismatchError


def _accepted_kwargs(fn, wanted: dict[str, Any]) -> dict[str, Any]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(wanted)
    return {k: v for k, v in wanted.items() if k in params}


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise the rows of ``x`` (n, d) in place and return it; all-zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def encode_texts(encoder, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
    """Encode ``texts`` into a C-contiguous float32 array of shape ``(len(texts), d)`` with unit-norm rows."""
    texts = list(texts)
    kwargs = _accepted_kwargs(
        encoder.encode, {"batch_size": batch_size, "normalize": True, "show_progress": show_progress}
    )
    vecs = encoder.encode(texts, **kwargs)
    if hasattr(vecs, "detach"):  # a torch tensor
        vecs = vecs.detach().cpu().numpy()
    vecs = np.ascontiguousarray(np.asarray(vecs, dtype=np.float32))
    if vecs.ndim != 2 or vecs.shape[0] != len(texts):
        raise ValueError(f"encoder returned shape {vecs.shape} for {len(texts)} texts; expected (n, d)")
    return normalize_rows(vecs)


def encode_documents(encoder, docs: Sequence[Any], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
    """Documents (objects with ``id`` and ``text``) as a C-contiguous float32 ``(len(docs), d)`` array of unit rows:
    through the encoder's ``encode_documents(ids, texts)`` when it has one (a model whose item vectors depend on
    the id as well as the text: a sequence recommender's, :class:`textcl.recommend.tower.SequenceTower`), else
    their texts through :func:`encode_texts`."""
    docs = list(docs)
    by_id = getattr(encoder, "encode_documents", None)
    if not callable(by_id):
        return encode_texts(encoder, [d.text for d in docs], batch_size, show_progress)
    vecs = np.ascontiguousarray(np.asarray(by_id([d.id for d in docs], [d.text for d in docs]), dtype=np.float32))
    if vecs.ndim != 2 or vecs.shape[0] != len(docs):
        raise ValueError(f"encoder returned shape {vecs.shape} for {len(docs)} documents; expected (n, d)")
    return normalize_rows(vecs)


def encoder_dim(encoder) -> int:
    """The encoder's output dimension: its ``dim`` attribute, or the width of one encoded probe text."""
    truncated = getattr(encoder, "truncate_dim", None)  # textcl Encoder / SentenceTransformer with a --dim
    if isinstance(truncated, int):
        return truncated
    for attr in ("dim", "dimension"):
        value = getattr(encoder, attr, None)
        if isinstance(value, (int, np.integer)):
            return int(value)
    getter = getattr(encoder, "get_sentence_embedding_dimension", None)
    if callable(getter) and getter():
        return int(getter())
    return int(encode_texts(encoder, ["dimension probe"]).shape[1])


def encoder_name(encoder) -> str | None:
    name = getattr(encoder, "name", None)
    return name if isinstance(name, str) else None


def check_dim(encoder, dim: int, where: str) -> None:
    """Raise :class:`DimensionMismatchError` when ``encoder`` does not produce ``dim``-wide vectors."""
    got = encoder_dim(encoder)
    if got != dim:
        raise DimensionMismatchError(
            f"{where}: the index holds {dim}-dimensional vectors but the encoder "
            f"{encoder_name(encoder) or type(encoder).__name__!r} produces {got}-dimensional ones; "
            "load the index with the model that built it"
        )


def truncate_to_index(encoder, dim: int) -> None:
    """An index built with ``--dim d`` (a Matryoshka model's first d dimensions) holds d-wide vectors: an
    encoder that is wider and can truncate (``truncate_dim``) is set to produce them, so queries match."""
    if hasattr(encoder, "truncate_dim") and getattr(encoder, "dim", 0) > dim:
        encoder.truncate_dim = int(dim)
