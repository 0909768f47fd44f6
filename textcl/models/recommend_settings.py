"""How a model trained for recommendation turns a user's history into the text it embeds.

A run with ``data.kind: interactions`` saves, beside the model (in its folder), ``textcl_recommend.json``:

    {"history": 10, "separator": " | "}

``history``: how many of the user's most recent items the user's text holds; ``separator``: what joins their
texts, most recent first. ``textcl serve``'s ``POST /recommend`` reads it from the served model's folder. It
lives here, in ``models/``, because both the writer (``recommend/``, at the end of training) and the reader
(``serve/``) may import ``models/`` and neither may import the other.
"""
from __future__ import annotations

import os
from pathlib import Path

from textcl.errors import ConfigError

#: in a model's folder: how ``/recommend`` turns a history into the user's text
SETTINGS_FILE = "textcl_recommend.json"


def user_text(texts, history: int, separator: str) -> str:
    """The user's text from their items' ``texts`` in time order (oldest first): the last ``history`` of them,
    most recent first, joined by ``separator``. Training (``InteractionTask.history_text``) and serving
    (``POST /recommend``) both build it here."""
    return separator.join(list(texts)[-history:][::-1])


def settings_files(history: int, separator: str) -> dict[str, dict]:
    """``{SETTINGS_FILE: {"history", "separator"}}``, checked: what a model folder's save writes into the folder
    before it is renamed into place (``Encoder.save(..., extra_json=...)``), so that no reader ever sees the
    model without its settings."""
    settings = {"history": history, "separator": separator}
    _check(settings, Path(SETTINGS_FILE))
    return {SETTINGS_FILE: settings}


def write_recommend_settings(folder: str | os.PathLike, history: int, separator: str) -> Path:
    """Write ``FOLDER/textcl_recommend.json`` atomically; its path."""
    from textcl._io import atomic_write_json

    settings = {"history": history, "separator": separator}
    path = Path(folder) / SETTINGS_FILE
    _check(settings, path)  # never write a file the server would refuse
    atomic_write_json(path, settings)
    return path


def read_recommend_settings(folder: str | os.PathLike) -> dict | None:
    """``{"history": int >= 1, "separator": str}`` from ``FOLDER/textcl_recommend.json``; None when the folder
    has no such file. Raises :class:`~textcl.errors.ConfigError` naming the file and the field for a bad value,
    and :class:`~textcl.errors.DataFormatError` naming the file and line for invalid JSON."""
    from textcl._io import read_json

    path = Path(folder) / SETTINGS_FILE
    if not path.is_file():
        return None
    settings = read_json(path)
    _check(settings, path)
    return {"history": settings["history"], "separator": settings["separator"]}


def _check(settings, path: Path) -> None:
    if not isinstance(settings, dict):
        raise ConfigError("(top level)", f"expected a JSON object {{\"history\": ..., \"separator\": ...}}, got "
                          f"{type(settings).__name__}", source=str(path))
    for field in ("history", "separator"):
        if field not in settings:
            raise ConfigError(field, "missing; expected {\"history\": a positive number of items, \"separator\": a "
                              "text}", source=str(path))
    history = settings["history"]
    if not isinstance(history, int) or isinstance(history, bool) or history < 1:
        raise ConfigError("history", f"expected a positive number of items, got {history!r}", source=str(path))
    separator = settings["separator"]
    if not isinstance(separator, str):
        raise ConfigError("separator", f"expected a text (e.g. \" | \"), got {separator!r}", source=str(path))
