"""The data layer: the one place that reads data files (see ARCHITECTURE.md).

:mod:`~textcl.data.readers` parses lines, JSON Lines and CSV/TSV with one error style (``file:line: what was
expected``); the modules on top turn records into typed values (:mod:`~textcl.data.records`): documents
(:mod:`~textcl.data.documents`), training examples (:mod:`~textcl.data.pairs`), scored STS pairs
(:mod:`~textcl.data.sts`), BEIR folders (:mod:`~textcl.data.beir`), texts and ids (:mod:`~textcl.data.texts`).
"""
from textcl.data.records import Document, Example, ScoredPair

__all__ = ["Document", "Example", "ScoredPair"]
