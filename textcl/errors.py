"""Exceptions with messages that say where the problem is and what was expected."""
from __future__ import annotations

import os


class TextclError(Exception):
    """Base class for errors textcl raises on bad input."""


class DataFormatError(TextclError, ValueError):
    """A data file is malformed. The message starts with ``path:line:`` when a line is to blame."""

    def __init__(self, path: str | os.PathLike, line: int | None, message: str):
        self.path = os.fspath(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ConfigError(TextclError, ValueError):
    """A recipe or config field is invalid. The message names the field (dotted path)."""

    def __init__(self, field: str, message: str, source: str | None = None):
        self.field = field
        self.reason = message
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__(f"{prefix}{field}: {message}")


class ModelNotFoundError(TextclError, OSError):
    """A model name or path could not be resolved. The message lists everything that was tried."""


class UnknownDatasetError(TextclError, KeyError):
    """A named dataset is not known. The message lists the known names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class OutputPathError(TextclError, OSError):
    """An output path given on the command line cannot be written. The message starts with the option and
    the path as the user gave them (``--json out/x.json: ...``)."""

    def __init__(self, flag: str, path: str | os.PathLike, message: str):
        self.flag = flag
        self.path = os.fspath(path)
        self.reason = message
        super().__init__(f"{flag} {self.path}: {message}")


class UndefinedCorrelationError(TextclError, ValueError):
    """No evaluated set has a defined correlation (each has one pair, or equal gold scores or predictions)."""


class EmptyQueryError(TextclError, ValueError):
    """A search query is empty or only whitespace: it would match arbitrary documents."""
