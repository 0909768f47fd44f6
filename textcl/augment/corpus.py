"""Reading plain-text corpora: one text per line, UTF-8."""
from __future__ import annotations

import os

from textcl.errors import DataFormatError


def read_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a UTF-8 text file, without their line endings (blank lines kept, as ``""``).

    Raises ``FileNotFoundError`` for a missing file and ``DataFormatError(path, line, ...)`` for bytes that
    are not UTF-8, naming the first bad line.
    """
    with open(path, "rb") as fh:
        data = fh.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataFormatError(path, line, f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]
