"""Record readers: the one place that parses the lines of a data file.

One reader per file kind, one error style: every error is a :class:`~textcl.errors.DataFormatError` whose
message starts with ``file:line:`` and says what was expected.

* Lines: UTF-8, ending at ``"\n"`` only (never at U+2028, U+0085 or ``\x0c``, where ``str.splitlines()``
  would also split); a trailing ``"\r"`` and a leading UTF-8 BOM are dropped.
* JSON Lines: one JSON value (:func:`iter_json_lines`) or object (:func:`iter_jsonl`) per non-blank line.
* CSV / TSV: :func:`csv_reader` (a ``.tsv`` has no quoting; a ``.csv`` is standard, quoted fields may span
  lines).
* A whole JSON file: :func:`read_json_file`.

The typed readers on top (documents, pairs and triples, STS pairs, BEIR folders, texts) are the other
modules of :mod:`textcl.data`.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from textcl.errors import DataFormatError

_BOM = b"\xef\xbb\xbf"


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield (line number, line) for each line of a UTF-8 file, streaming, without line endings.

    Raises ``FileNotFoundError`` for a missing file and ``DataFormatError(path, line, "not valid UTF-8 ...")``
    for bytes that are not UTF-8, naming the first bad line.
    """
    offset = 0  # bytes before this line (after the BOM), for the error message
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):  # a binary file splits at b"\n" only
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataFormatError(path, lineno, f"not valid UTF-8 ({exc.reason} at byte "
                                                    f"{offset + exc.start})") from None
            offset += len(raw)
            yield lineno, (line[:-1] if line.endswith("\n") else line).rstrip("\r")


def read_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a UTF-8 text file, without their line endings (blank lines kept, as ``""``)."""
    return [line for _, line in iter_lines(path)]


def iter_json_lines(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Yield (line number, JSON value) for each non-blank line of a JSONL file, streaming."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(path, lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        except (ValueError, RecursionError) as exc:  # valid JSON Python refuses: 4,300+ digits, deep nesting
            raise DataFormatError(path, lineno, f"not readable JSON ({exc})") from None
        yield lineno, value


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSONL file of objects."""
    for lineno, obj in iter_json_lines(path):
        if not isinstance(obj, dict):
            raise DataFormatError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def csv_reader(path: str | os.PathLike, lines: Iterable[str], *, dicts: bool = False, offset: int = 0):
    """A ``csv.reader`` (``csv.DictReader`` with ``dicts``) over ``lines`` (from :func:`read_lines`) of
    ``path``: a ``.tsv`` is tab-separated with quotes kept as text (``csv.QUOTE_NONE``), anything else is
    a standard comma-separated file whose quoted fields may span lines. ``line_num`` is the line within ``lines``;
    ``offset`` is the file's lines before them. A malformed row raises :class:`DataFormatError` with its file line."""
    if Path(path).suffix.lower() == ".tsv":
        fmt: dict[str, Any] = {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    else:
        fmt = {"delimiter": ","}
    rows = (line + "\n" for line in lines)  # the "\n" keeps line breaks inside quoted fields
    return _CheckedReader(csv.DictReader(rows, **fmt) if dicts else csv.reader(rows, **fmt), path, offset)


#: a cell may be as long as the line that holds it (the file is in memory already); csv's default is 131,072
csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))


class _CheckedReader:
    """A ``csv.reader`` or ``csv.DictReader`` whose ``csv.Error`` becomes a :class:`DataFormatError` naming the
    file and line; every other attribute (``line_num``, ``fieldnames``) is the wrapped reader's."""

    def __init__(self, reader, path, offset: int = 0):
        self._reader, self._path, self._offset = reader, path, offset

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._reader)
        except csv.Error as exc:
            raise DataFormatError(self._path, self._offset + self._reader.line_num,
                                  f"not a valid CSV row ({exc}); expected comma-separated fields") from None

    @property
    def fieldnames(self):
        """A ``DictReader``'s header (read on first use: its errors are named by line too)."""
        try:
            return self._reader.fieldnames
        except csv.Error as exc:
            raise DataFormatError(self._path, self._offset + max(1, self._reader.line_num),
                                  f"not a valid CSV header ({exc}); expected comma-separated column names") from None

    def __getattr__(self, name):
        return getattr(self._reader, name)


def read_json_file(path: str | os.PathLike) -> Any:
    """The JSON value of a whole file (UTF-8, BOM allowed); invalid JSON is reported with its line."""
    text = "\n".join(read_lines(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, exc.lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # valid JSON Python refuses: 4,300+ digits, deep nesting
        raise DataFormatError(path, None, f"not readable JSON ({exc})") from None
