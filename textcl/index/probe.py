"""The probe an index built through a server records: a few texts and their vectors as that server embedded them,
which any model that later stands in for the server (``--index-model``, ``index search/add --model``) must
reproduce (:mod:`textcl.index.identity` checks it)."""
from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import numpy as np

from textcl.index.encoding import encode_texts
from textcl.index.errors import IndexCorruptedError

MANIFEST = "manifest.json"
PROBE_TEXTS = (
    "A short probe.",
    "A medium probe text: the model that built this index gives these words the vector recorded beside them.",
    " ".join(["The long probe runs past the model's token limit, so truncation is compared as well."] * 40),
)


def make_probe(encoder) -> dict[str, Any] | None:
    """``{"texts": [...], "vectors": base64 float32 (n, d)}`` of :data:`PROBE_TEXTS` as ``encoder`` embeds them
    (unit length); without the long text when the encoder refuses it (a server that does not truncate)."""
    from textcl.errors import TextclError

    texts = list(PROBE_TEXTS)
    try:
        vectors = encode_texts(encoder, texts)
    except TextclError:
        texts = texts[:2]
        vectors = encode_texts(encoder, texts)
    return {"texts": texts, "vectors": base64.b64encode(vectors.astype("<f4").tobytes()).decode("ascii")}


def probe_vectors(manifest: dict[str, Any], path: str | os.PathLike) -> tuple[list[str], np.ndarray] | None:
    """The manifest's probe as (texts, float32 (n, dim) vectors), or None; IndexCorruptedError when malformed."""
    probe = manifest.get("probe")
    if probe is None:
        return None
    where = f"{Path(path) / MANIFEST}: probe"
    texts = probe.get("texts") if isinstance(probe, dict) else None
    if not (isinstance(texts, list) and texts and all(isinstance(t, str) for t in texts)):
        raise IndexCorruptedError(f"{where}: expected {{\"texts\": [text, ...], \"vectors\": base64}}, got "
                                  f"{probe!r:.100}")
    dim = int(manifest["dim"])
    try:
        raw = base64.b64decode(probe.get("vectors"), validate=True)
    except (TypeError, ValueError):
        raw = b""
    if len(raw) != 4 * dim * len(texts):
        raise IndexCorruptedError(f"{where}: vectors: expected {len(texts)} x {dim} float32 in base64")
    return texts, np.frombuffer(raw, dtype="<f4").reshape(len(texts), dim).astype(np.float32)
