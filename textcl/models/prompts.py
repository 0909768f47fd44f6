"""Prompts: the instructions some models expect before each text (``"query: "``, ``"passage: "``).

A sentence-transformers folder names them in ``config_sentence_transformers.json``: ``prompts`` (name ->
text, put before the text) and ``default_prompt_name`` (the one used when none is asked for, as
``SentenceTransformer.encode`` does). ``Encoder.load`` reads them with the model; any other encoder reads its
folder's when first asked, once, under a lock (two threads asking first must not both read, nor see the prompts
before the default). Set ``encoder.prompts = {"query": "query: "}`` (and ``encoder.default_prompt_name``) to use
others.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Sequence

from textcl._io import read_json

CONFIG_FILE = "config_sentence_transformers.json"
_LOAD_LOCK = threading.Lock()


def read_prompts(folder: str | os.PathLike | None) -> tuple[dict[str, str], str | None]:
    """``(prompts, default_prompt_name)`` of a model folder; ``({}, None)`` when it names none."""
    path = Path(folder) / CONFIG_FILE if folder is not None else None
    if path is None or not path.is_file():
        return {}, None
    config = read_json(path)
    prompts = config.get("prompts") if isinstance(config, dict) else None
    prompts = {str(k): str(v) for k, v in prompts.items()} if isinstance(prompts, dict) else {}
    default = config.get("default_prompt_name") if isinstance(config, dict) else None
    return prompts, default if default in prompts else None


def prompts_of(encoder) -> tuple[dict[str, str], str | None]:
    """The encoder's ``(prompts, default_prompt_name)``: its own attributes when set, else its folder's
    (read once, under a lock, and kept on the encoder)."""
    if getattr(encoder, "prompts", None) is None:
        with _LOAD_LOCK:
            if getattr(encoder, "prompts", None) is None:
                prompts, encoder.default_prompt_name = read_prompts(getattr(encoder, "_folder", None))
                encoder.prompts = prompts  # last: a thread that sees the prompts sees the default too
    return encoder.prompts, getattr(encoder, "default_prompt_name", None)


def prompt_text(encoder, prompt_name: str | None) -> str:
    """The text put before each input for ``prompt_name`` (None: the default prompt, else none). Raises
    ``ValueError`` naming the prompts the model has when it has no prompt of that name."""
    prompts, default = prompts_of(encoder)
    name = default if prompt_name is None else prompt_name
    if name is None:
        return ""
    if name not in prompts:
        have = ", ".join(sorted(prompts)) if prompts else f"none (no prompts in its {CONFIG_FILE})"
        raise ValueError(f"prompt_name: {name!r} is not a prompt of this model; its prompts: {have}")
    return prompts[name]


def apply_prompt(encoder, texts: Sequence[str], prompt_name: str | None) -> list[str]:
    """``texts`` with the prompt ``prompt_name`` (None: the default one, if any) put before each."""
    prefix = prompt_text(encoder, prompt_name)
    return [prefix + t for t in texts] if prefix else list(texts)
