"""Semantic search: a FAISS index with a SQLite doc store, streaming builds, hard-negative mining."""
from textcl.index.docstore import DocStore, Document
from textcl.index.errors import (
    DimensionMismatchError,
    DuplicateIdError,
    EmptyCorpusError,
    EmptyQueryError,
    IndexCorruptedError,
    IndexStateError,
    UnknownIdError,
)
from textcl.index.factory import choose_factory
from textcl.index.faiss_index import Hit, SearchIndex, index_model
from textcl.index.streaming import build_streaming

__all__ = [
    "SearchIndex", "Hit", "build_streaming", "index_model", "DocStore", "Document", "choose_factory",
    "DimensionMismatchError", "DuplicateIdError", "EmptyCorpusError", "EmptyQueryError", "IndexCorruptedError",
    "IndexStateError", "UnknownIdError",
]
