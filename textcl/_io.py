"""File helpers shared by the package.

* Atomic writes: write to a temporary file in the same folder, fsync, then rename; a reader never sees a
  half-written file, and a crash leaves the previous version in place. Missing parent folders are created.
  :func:`check_writable` tells before any work whether such a write can succeed.
* Reading textcl's own JSON files (:func:`read_json`); data files users bring are read by
  :mod:`textcl.data.readers`.
* Locating data files shipped inside installed packages without importing them.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from textcl.errors import DataFormatError, OutputPathError

@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` as a whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def check_writable(path: str | os.PathLike, flag: str, *, folder: bool = False) -> None:
    """Raise :class:`~textcl.errors.OutputPathError` naming ``flag`` and ``path`` if the atomic writers above
    could not write an output file (``folder=True``: an output folder) at ``path``.

    Meant to run before the work that produces the output. The path must not be an existing folder (a file
    path) or an existing file (``folder=True``); its nearest existing ancestor must be a folder this process
    may create entries in (missing folders below it are created by the writers), and an existing output
    folder must be writable too.
    """
    text = os.fspath(path)
    if not text:
        raise OutputPathError(flag, "''", "the path is empty")
    p = Path(text)
    if p.is_dir() and not folder:
        raise OutputPathError(flag, text, "is a folder; give a file name")
    if not folder and text.endswith(("/", os.sep)):
        raise OutputPathError(flag, text, "ends with a slash; give a file name")
    if p.exists() and not p.is_dir() and folder:
        raise OutputPathError(flag, text, "is a file, not a folder")
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputPathError(flag, text, f"{ancestor} is a file, not a folder")
    for where in (ancestor, p) if folder and p.is_dir() else (ancestor,):
        if not os.access(where, os.W_OK | os.X_OK):
            raise OutputPathError(flag, text, f"the folder {where} is not writable")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _finite(obj: Any) -> Any:
    """NaN and infinities become None: JSON has no spelling for them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write strict JSON (NaN written as null) atomically."""
    atomic_write_text(path, json.dumps(_finite(obj), indent=2, allow_nan=False) + "\n")


def atomic_save_npy(path: str | os.PathLike, array) -> None:
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file handle: np.save would append ".npy"
        np.save(fh, array)


# ---------------------------------------------------------------- textcl's own files


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in one of textcl's own files (a manifest, a checkpoint's state, a model folder's
    config). Raises ``FileNotFoundError``, or :class:`~textcl.errors.DataFormatError` naming the file and
    line of invalid JSON or UTF-8. Data files users bring are read by :mod:`textcl.data` instead."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, raw[:exc.start].count(b"\n") + 1, f"not valid UTF-8 ({exc.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, exc.lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from None


def packaged_path(module: str, *parts: str) -> Path | None:
    """``<folder of package module>/<parts...>`` if that package is installed and the path exists, else
    None. The package is located with ``importlib.util.find_spec``, never imported."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a missing parent package; a module with no spec
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*parts)
        if path.exists():
            return path
    return None
