"""BEIR retrieval folders: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

* ``corpus.jsonl``: one JSON object per line with ``_id``, ``text`` and optional ``title`` (other keys are
  kept as metadata).
* ``queries.jsonl``: one JSON object per line with ``_id`` and ``text``.
* ``qrels/<split>.tsv``: tab-separated with the header ``query-id  corpus-id  score``; ``score`` is an
  integer relevance grade (0 = judged not relevant).

Every error names the file and line: a line that is not UTF-8, not JSON, not an object, or lacks a field.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from textcl.data.readers import iter_jsonl, iter_lines
from textcl.errors import DataFormatError


@dataclass
class BeirData:
    """``corpus``: doc id -> {"title", "text", ...}; ``queries``: query id -> text;
    ``qrels``: query id -> {doc id: grade}. Only queries that appear in ``qrels`` are kept, as BEIR does."""

    corpus: dict[str, dict[str, Any]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _field(obj: dict, key: str, path: Path, lineno: int, required: bool = True) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise DataFormatError(path, lineno, f"missing field {key!r}")
        return ""
    if isinstance(value, (int, float)) and key == "_id":
        return str(value)
    if not isinstance(value, str):
        raise DataFormatError(path, lineno, f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def iter_corpus(path: str | os.PathLike) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """Yield (line, doc id, {"title", "text", ...}) from a BEIR ``corpus.jsonl`` without loading it whole."""
    path = Path(path)
    for lineno, obj in iter_jsonl(path):
        doc_id = _field(obj, "_id", path, lineno)
        rec = {k: v for k, v in obj.items() if k != "_id"}
        rec["text"] = _field(obj, "text", path, lineno)
        rec["title"] = _field(obj, "title", path, lineno, required=False)
        yield lineno, doc_id, rec


def doc_text(title: str, text: str) -> str:
    """How BEIR encodes a document: ``title + " " + text``, stripped (so an empty title adds nothing)."""
    return (title + " " + text).strip()


def load_corpus(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    corpus: dict[str, dict[str, Any]] = {}
    for lineno, doc_id, rec in iter_corpus(path):
        if doc_id in corpus:
            raise DataFormatError(path, lineno, f"duplicate _id {doc_id!r}")
        corpus[doc_id] = rec
    return corpus


def load_queries(path: str | os.PathLike) -> dict[str, str]:
    path = Path(path)
    queries: dict[str, str] = {}
    for lineno, obj in iter_jsonl(path):
        qid = _field(obj, "_id", path, lineno)
        if qid in queries:
            raise DataFormatError(path, lineno, f"duplicate _id {qid!r}")
        queries[qid] = _field(obj, "text", path, lineno)
    return queries


def load_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Read ``query-id<TAB>corpus-id<TAB>score`` rows after a header line."""
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        cols = line.split("\t")
        if lineno == 1:
            if [c.strip() for c in cols[:3]] != ["query-id", "corpus-id", "score"]:
                raise DataFormatError(path, 1, f"expected the header 'query-id<TAB>corpus-id<TAB>score', got {line!r}")
            continue
        if len(cols) != 3:
            raise DataFormatError(path, lineno, f"expected 3 tab-separated columns, got {len(cols)}")
        try:
            score = int(float(cols[2]))
        except ValueError:
            raise DataFormatError(path, lineno, f"score {cols[2]!r} is not a number") from None
        qrels.setdefault(cols[0].strip(), {})[cols[1].strip()] = score
    return qrels


def load_beir(folder: str | os.PathLike, split: str = "test") -> BeirData:
    """Load a BEIR folder. Raises FileNotFoundError naming a missing file, DataFormatError for bad lines, and
    DataFormatError when a qrels query id is not in ``queries.jsonl``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a BEIR folder (expected corpus.jsonl, queries.jsonl, qrels/)")
    paths = {"corpus": folder / "corpus.jsonl", "queries": folder / "queries.jsonl",
             "qrels": folder / "qrels" / f"{split}.tsv"}
    for p in paths.values():
        if not p.exists():
            have = sorted(x.stem for x in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
            extra = f" (splits present: {', '.join(have)})" if p == paths["qrels"] and have else ""
            raise FileNotFoundError(f"{p}: missing from the BEIR folder{extra}")
    qrels = load_qrels(paths["qrels"])
    queries = load_queries(paths["queries"])
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise DataFormatError(paths["qrels"], None, f"{len(missing)} query id(s) not in queries.jsonl, "
                              f"e.g. {missing[0]!r}")
    corpus = load_corpus(paths["corpus"])
    if not corpus:
        raise DataFormatError(paths["corpus"], None, "the corpus is empty")
    return BeirData(corpus, {q: queries[q] for q in qrels}, qrels)
