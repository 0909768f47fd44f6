"""Errors raised by the search index. Each subclasses :class:`textcl.errors.TextclError`, so the CLI prints it."""
from __future__ import annotations

from textcl.errors import EmptyQueryError, TextclError

__all__ = ["DimensionMismatchError", "DuplicateIdError", "EmptyCorpusError", "EmptyQueryError", "IndexCorruptedError",
           "IndexStateError", "UnknownIdError"]


class IndexStateError(TextclError, RuntimeError):
    """An operation that needs documents ran on an index that has none (e.g. search before build)."""


class EmptyCorpusError(TextclError, ValueError):
    """A build was asked to index zero documents."""


class DuplicateIdError(TextclError, ValueError):
    """A document id is already in the index (use ``upsert`` to replace it) or repeats within one batch."""


class UnknownIdError(TextclError, KeyError):
    """``delete`` named ids that are not in the index."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class IndexCorruptedError(TextclError, OSError):
    """An index folder is incomplete, or a file in it does not match the checksum in its manifest."""


class DimensionMismatchError(TextclError, ValueError):
    """The encoder's embedding dimension differs from the index's."""
