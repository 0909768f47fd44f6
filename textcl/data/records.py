"""Typed records: what the readers of :mod:`textcl.data` give to the rest of the package.

* :class:`Document` - something to index and search (``textcl index``, retrieval corpora, the doc store).
* :class:`Example` - one training row: an anchor, its positive, and optionally a hard negative and a group.
* :class:`ScoredPair` - two sentences and a graded similarity score (the STS layouts).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class Document:
    """A document: its id, the text that is encoded (a BEIR title is already prepended), and metadata."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Example:
    """A training row. Unlabeled data repeats the text as ``anchor`` and ``positive``; scored data holds
    ``sentence1`` as ``anchor``, ``sentence2`` as ``positive`` and their gold ``score``."""

    anchor: str
    positive: str
    negative: Optional[str] = None
    group: Optional[str] = None  #: pairs of one group are never each other's negatives
    score: Optional[float] = None  #: a graded similarity (data.kind scored)
    item: Optional[str] = None  #: data.kind interactions: the id of the positive (the next item)
    user: Optional[str] = None  #: data.kind interactions: whose row it is
    position: Optional[int] = None  #: data.kind interactions: the item's index in the user's training sequence


@dataclass(frozen=True)
class ScoredPair:
    """Two sentences and their gold similarity ``score`` (e.g. 0-5 for STS-B)."""

    sentence1: str
    sentence2: str
    score: float
