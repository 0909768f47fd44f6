"""Read documents to index from ``.jsonl``, ``.txt``, ``.csv``/``.tsv`` files or a BEIR folder, streaming.

* ``.jsonl``: one object per line with ``text`` (required), ``id`` or ``_id`` (default: the line number),
  ``title`` (prepended to the text, as BEIR does) and any other keys, kept as metadata.
* ``.txt``: one document per non-blank line; the id is the line number.
* ``.csv`` / ``.tsv``: a header row with a ``text`` column and optionally ``id``/``_id`` and ``title``;
  other columns become metadata. A ``.tsv`` has no quoting: quote characters are part of the text.
* a BEIR folder: its ``corpus.jsonl`` (``_id``, ``title``, ``text``).

Every error names the file and line (non-UTF-8 bytes, invalid JSON, a missing ``text``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from textcl.data.beir import doc_text, iter_corpus
from textcl.data.readers import csv_reader, iter_jsonl, iter_lines, read_lines
from textcl.data.records import Document
from textcl.errors import DataFormatError, EmptyQueryError


def _from_record(rec: dict, default_id: str, path: Path, lineno: int) -> Document:
    text = rec.get("text")
    if not isinstance(text, str):
        raise DataFormatError(path, lineno, "missing a string field 'text'")
    doc_id = rec.get("id", rec.get("_id", default_id))
    title = rec.get("title") or ""
    meta = {k: v for k, v in rec.items() if k not in ("id", "_id", "text")}
    return Document(str(doc_id), doc_text(str(title), text), meta)


def _iter_txt(path: Path) -> Iterator[Document]:
    for lineno, line in iter_lines(path):
        if line.strip():
            yield Document(str(lineno), line.strip(), {})


def _iter_csv(path: Path) -> Iterator[Document]:
    reader = csv_reader(path, read_lines(path), dicts=True)
    if not reader.fieldnames or "text" not in reader.fieldnames:
        raise DataFormatError(path, 1, f"the header needs a 'text' column; got {reader.fieldnames}")
    for n, row in enumerate(reader, start=1):
        if None in row:
            raise DataFormatError(path, reader.line_num, "more columns than the header")
        yield _from_record(row, str(n), path, reader.line_num)


def read_documents(path: str | os.PathLike) -> Iterator[Document]:
    """Yield :class:`Document` objects from ``path`` (see the module docstring for the formats)."""
    path = Path(path)
    if path.is_dir():
        corpus = path / "corpus.jsonl"
        if not corpus.exists():
            raise FileNotFoundError(f"{path}: a folder must be a BEIR folder with corpus.jsonl")
        for _, doc_id, rec in iter_corpus(corpus):
            meta = {k: v for k, v in rec.items() if k not in ("text",)}
            yield Document(doc_id, doc_text(rec.get("title") or "", rec["text"]), meta)
        return
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        for lineno, obj in iter_jsonl(path):
            yield _from_record(obj, str(lineno), path, lineno)
    elif suffix == ".txt":
        yield from _iter_txt(path)
    elif suffix in (".csv", ".tsv"):
        yield from _iter_csv(path)
    else:
        raise DataFormatError(path, None, f"unknown document format {suffix!r}; use .jsonl, .txt, .csv, .tsv "
                              "or a BEIR folder")


def read_queries(arg: str) -> list[str]:
    """A query argument: a file of queries (``.txt`` one per non-blank line, ``.jsonl`` with ``text``) or the
    query. An empty or whitespace-only query, a ``.jsonl`` line with an empty text, and a file without a
    query raise errors that say which."""
    path = Path(arg)
    if not path.is_file():
        if not arg.strip():
            raise EmptyQueryError("the query is empty (or only whitespace): give some text, or a file of queries")
        return [arg]
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        queries = []
        for lineno, obj in iter_jsonl(path):
            text = _from_record(obj, str(lineno), path, lineno).text
            if not text.strip():
                raise DataFormatError(path, lineno, "the query text is empty (or only whitespace)")
            queries.append(text)
    else:
        queries = [d.text for d in _iter_txt(path)]
    if not queries:
        raise DataFormatError(path, None, "no queries: the file holds no non-blank line")
    return queries
