"""The body of a ``/v1/embeddings`` answer, as JSON bytes, rendered off the event loop.

Floats are the slow part: the standard library's ``json`` writes 32 vectors of 384 floats in about 12 ms on
this project's CPU, ``orjson`` (a ``textcl[serve]`` dependency) in 0.5 ms, each float32 in its shortest
form, which reads back to the same float32. ``base64`` is each vector's little-endian float32 bytes, as
OpenAI sends them (the official Python client asks for it and decodes it itself).
"""
from __future__ import annotations

import base64
import json

import numpy as np

try:
    import orjson
except ImportError:  # a plain install without the serve extra's orjson: slower, same answer
    orjson = None


def _vector(row: np.ndarray, encoding_format: str):
    if encoding_format == "base64":
        return base64.b64encode(row.astype("<f4", copy=False).tobytes()).decode("ascii")
    return row if orjson is not None else row.tolist()


def render_embeddings(vectors: np.ndarray, encoding_format: str, model: str, tokens: int) -> bytes:
    """``{object: "list", data: [{object: "embedding", index, embedding}], model, usage}`` as JSON bytes;
    ``vectors``: float32 ``(n, d)``, C-contiguous."""
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": _vector(row, encoding_format)}
                 for i, row in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": int(tokens), "total_tokens": int(tokens)},
    }
    if orjson is not None:
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(body, separators=(",", ":")).encode()
