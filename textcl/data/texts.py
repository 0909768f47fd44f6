"""Read a list of texts from .txt (one per line), .jsonl (a text field) or .csv/.tsv (a text column), and
lists of ids (one per line)."""
from __future__ import annotations

import os
from pathlib import Path

from textcl.data.readers import csv_reader, iter_json_lines, iter_lines, read_lines
from textcl.errors import DataFormatError


def read_texts(path: str | os.PathLike, *, field: str = "text") -> list[str]:
    """Texts from a file; blank lines of a .txt are skipped. Errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        out = []
        for lineno, row in iter_json_lines(path):
            if isinstance(row, str):
                out.append(row)
            elif isinstance(row, dict) and isinstance(row.get(field), str):
                out.append(row[field])
            else:
                raise DataFormatError(path, lineno, f"expected a JSON string or an object with a string {field!r} field")
        return out
    if suffix in (".csv", ".tsv"):
        reader = csv_reader(path, read_lines(path), dicts=True)
        if reader.fieldnames is None or field not in reader.fieldnames:
            raise DataFormatError(path, 1, f"no {field!r} column in the header {reader.fieldnames}")
        out = []
        for row in reader:
            value = row.get(field)
            if value is None:
                raise DataFormatError(path, reader.line_num, f"missing {field!r} column")
            out.append(value)
        return out
    return [line for line in read_lines(path) if line.strip()]


def read_ids(path: str | os.PathLike) -> list[str]:
    """Document ids, one per non-blank line, surrounding whitespace removed (``textcl index delete @FILE``)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"id file {os.fspath(path)!r} does not exist")
    return [line.strip() for _, line in iter_lines(path) if line.strip()]
