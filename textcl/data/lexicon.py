"""Synonym lexicons for the ``synonym`` augmenter: a JSON object ``{"word": ["synonym", ...], ...}``."""
from __future__ import annotations

import os

from textcl.data.readers import read_json_file
from textcl.errors import ConfigError, DataFormatError


def read_lexicon(path: str | os.PathLike) -> dict[str, list[str]]:
    """The lexicon in a JSON file. Errors are :class:`~textcl.errors.ConfigError` on the ``lexicon`` field,
    naming the file (and the line of invalid JSON)."""
    try:
        data = read_json_file(path)
    except FileNotFoundError as exc:
        raise ConfigError("lexicon", f"no such lexicon file {os.fspath(path)!r} (nor 'wordnet')") from exc
    except DataFormatError as exc:
        raise ConfigError("lexicon", f"not a JSON lexicon: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError("lexicon", f"{os.fspath(path)}: must hold a JSON object of word -> [synonyms]")
    return data
