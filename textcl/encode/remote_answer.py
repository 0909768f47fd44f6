"""The ``data`` of an OpenAI embeddings answer, checked before it is trusted (:class:`~textcl.encode.remote.
RemoteEncoder`): every item an object, the ``index`` fields a permutation of ``0..n-1``, every ``embedding``
a list of numbers or base64 float32, finite, all of one width (``dimensions`` when asked for). A message names the
field (``data[3].index``) and what was expected; the caller puts the server's address before it.
"""
from __future__ import annotations

import base64
import binascii
import numbers
from typing import Any

import numpy as np


class AnswerError(ValueError):
    """The answer is not ``n`` embeddings: the message names the field and what was expected."""


def decode_embedding(value: Any, where: str = "embedding") -> np.ndarray:
    """One ``embedding``: base64 little-endian float32 bytes, or a list of numbers -> float32 ``(d,)``."""
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b"?"
        if len(raw) % 4 == 0:
            return _finite(np.frombuffer(raw, dtype="<f4").astype(np.float32), where)
    elif isinstance(value, list) and all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in value):
        try:
            with np.errstate(over="ignore"):  # beyond float32's range: inf, refused below
                vec = np.asarray(value, dtype=np.float64).astype(np.float32)
        except OverflowError:  # an integer beyond float64's range (JSON allows 10**400)
            raise AnswerError(f"{where}: not finite") from None
        return _finite(vec, where)
    raise AnswerError(f"{where}: expected a list of numbers or base64 float32, got {value!r:.60}")


def _finite(vec: np.ndarray, where: str) -> np.ndarray:
    """``vec``, or :class:`AnswerError` when it holds a NaN or an infinity (they would poison an index)."""
    if not np.isfinite(vec).all():
        raise AnswerError(f"{where}: not finite")
    return vec


def embeddings_of(answer: Any, n: int, dim: int | None) -> np.ndarray:
    """float32 ``(n, d)`` in input order from an answer to ``n`` texts; raises :class:`AnswerError`."""
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list) or len(data) != n:
        raise AnswerError(f"{len(data) if isinstance(data, list) else 'no'} embeddings for {n} texts")
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise AnswerError(f"data[{i}]: expected an object with index and embedding, got {type(item).__name__}")
        index = item.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise AnswerError(f"data[{i}].index: expected an integer, got {index!r:.40}")
    indexes = [item["index"] for item in data]
    if sorted(indexes) != list(range(n)):
        raise AnswerError(f"data[].index: expected each of 0 to {n - 1} once, got {indexes[:20]}")
    vecs: list[np.ndarray | None] = [None] * n
    for i, item in enumerate(data):
        vecs[item["index"]] = decode_embedding(item.get("embedding"), f"data[{i}].embedding")
    widths = sorted({len(v) for v in vecs})
    if len(widths) != 1 or widths[0] == 0:
        raise AnswerError(f"data[].embedding: expected one width, got widths {widths}")
    if dim is not None and widths[0] != dim:
        raise AnswerError(f"data[].embedding: expected {dim} numbers (dimensions), got {widths[0]}")
    return np.stack(vecs)
