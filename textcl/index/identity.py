"""Whether a model given to search an index (``textcl serve INDEX --index-model``, ``textcl index search/add
--model``) is the one its vectors came from.

An index built with a local model folder records that folder's fingerprint (``model_fingerprint``): a substitute,
a folder or a hub name (resolved to its folder first), must have the same. An index built through a server
records, at the build, a probe (``probe``): a short, a medium and a long text (over any BERT's 512 tokens) and
their vectors at the index's width; a substitute must embed each within :data:`MIN_COSINE`. A model wider than an
index built with ``--dim`` is truncated to it (:func:`~textcl.index.encoding.truncate_to_index`) in every case.
"""
from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from textcl.errors import ConfigError
from textcl.index.encoding import encode_texts, encoder_dim, truncate_to_index
from textcl.index.errors import IndexCorruptedError
from textcl.index.probe import PROBE_TEXTS, make_probe, probe_vectors  # noqa: F401 (part of this module's API)

MANIFEST = "manifest.json"
MIN_COSINE = 0.999
def _first_line(exc: Exception) -> str:
    return str(exc).split("\n")[0].removesuffix(" Tried:").rstrip(".")


def check_fingerprint(model: str, path: str | os.PathLike, manifest: dict[str, Any], flag: str) -> None:
    """ConfigError naming ``flag`` unless ``model`` (a folder, or a hub name resolved to its folder) has the
    fingerprint the manifest records; nothing to do when it records none."""
    from textcl.errors import TextclError
    from textcl.index.faiss_index import model_fingerprint
    from textcl.models.resolve import resolve_model

    recorded = manifest.get("model_fingerprint")
    if recorded is None:
        return
    try:
        folder = resolve_model(model)
        fingerprint = model_fingerprint(folder)
        why = f"no weight files in {folder}"
    except (TextclError, OSError) as exc:
        fingerprint, why = None, _first_line(exc)
    if fingerprint is None:
        raise ConfigError(flag, f"{model} cannot be compared with the model_fingerprint that {Path(path) / MANIFEST} "
                          f"records ({why}); expected the folder of the model the index was built with")
    if fingerprint != recorded:
        raise ConfigError(flag, f"{model} is not the model {path} was built with (its weights differ from the "
                          f"model_fingerprint in its {MANIFEST}); expected that model's folder")


def check_probe(encoder, model: str, path: str | os.PathLike, manifest: dict[str, Any], flag: str) -> None:
    """ConfigError naming ``flag`` unless ``encoder`` (``model``, fitted to the index) embeds each text of the
    manifest's probe within :data:`MIN_COSINE` of its recorded vector; nothing to do without a probe."""
    found = probe_vectors(manifest, path)
    if found is None:
        return
    texts, recorded = found
    server = (manifest.get("server") or {}).get("server", "that built it")
    where = f"{model} does not embed the probe texts that {Path(path) / MANIFEST} records as the server {server} did"
    width = encoder_dim(encoder)
    if width != recorded.shape[1]:
        raise ConfigError(flag, f"{where} ({width} dimensions, not {recorded.shape[1]}); expected the model that "
                          "server serves")
    cosines = np.sum(encode_texts(encoder, texts) * recorded, axis=1)
    worst = int(np.argmin(cosines))
    if cosines[worst] < MIN_COSINE:
        raise ConfigError(flag, f"{where} (cosine {cosines[worst]:.4f} for text {worst}; expected {MIN_COSINE} or "
                          "more for each); expected the model that server serves")


def checked_encoder(path: str | os.PathLike, manifest: dict[str, Any], given: str | None, flag: str,
                    load: Callable[[str], Any]):
    """The encoder to embed queries and documents of the index folder ``path`` with: ``given`` (``flag``), checked
    against the manifest's fingerprint before it loads and its probe after, else the index's own model; either
    truncated to an index built with ``--dim``. ``load(name)`` loads a model."""
    from textcl.index.faiss_index import index_model

    if given is not None:
        check_fingerprint(given, path, manifest, flag)
    encoder = load(given if given is not None else index_model(path, manifest, flag=flag))
    truncate_to_index(encoder, int(manifest["dim"]))  # an index built with --dim holds the first dim dimensions
    if given is not None and manifest.get("model_fingerprint") is None:
        check_probe(encoder, given, path, manifest, flag)
    return encoder
