"""File helpers shared by the package.

* Atomic writes: write to a temporary file in the same folder, fsync, then rename; a reader never sees a
  half-written file, and a crash leaves the previous version in place. Missing parent folders are created.
  :func:`check_writable` tells before any work whether such a write can succeed.
* Atomic folders (:func:`atomic_dir`): a folder replaced as a whole takes two renames; a process killed between
  them leaves the previous version under ``.NAME.old``, which :func:`recover_dir` puts back. Whoever loads a
  folder that :func:`atomic_dir` writes calls :func:`recover_dir` first.
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
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from textcl.errors import DataFormatError, OutputPathError, TextclError


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the entries of folder ``path`` (names created, renamed, removed) durable. A no-op where folders
    cannot be opened or synced (Windows, some network file systems)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (``root`` included)."""
    for folder, _, files in os.walk(root):
        for name in files:
            file = os.path.join(folder, name)
            if not os.path.islink(file):
                _fsync_file(file)
        fsync_dir(folder)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``, and the
    rename is made durable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


class _FolderLock:
    """An exclusive ``flock`` on a folder, dropped by :meth:`release` or when the process dies.

    ``held``: True once locked; False when ``blocking=False`` and another open file holds it, or when the
    folder cannot be locked here (no ``fcntl``, a file system without flock on folders, a vanished folder):
    then ``supported`` is False too."""

    def __init__(self, path: str | os.PathLike, blocking: bool = True):
        self.held, self.supported, self._fd = False, True, None
        try:
            import fcntl

            self._fd = os.open(path, os.O_RDONLY)
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            self.held = True
        except BlockingIOError:
            pass
        except (ImportError, OSError):
            self.supported = False
        if not self.held:
            self.release()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "_FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _old_copy(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def _temp_folders(path: Path) -> list[Path]:
    """The temporary folders :func:`atomic_dir` creates beside ``path`` (``.NAME.<random>.tmp``)."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[^.]+\.tmp")
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    return [p for p in entries if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _real(path: Path) -> Path:
    """A folder reached through a symbolic link (``index -> v3``) is saved and recovered where it really is:
    the link stays, the folder behind it is swapped."""
    if not path.is_symlink():
        return path
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # a loop: left as it is, so the caller's own error names the path
        return path


def _remove(path: Path) -> None:
    """Remove a folder, or a symbolic link (never what it points to)."""
    if path.is_symlink():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def recover_dir(path: str | os.PathLike) -> Path:
    """Put the folder ``path`` back in a complete state after an :func:`atomic_dir` write was killed; return
    ``path``.

    ``path`` missing with ``.NAME.old`` beside it (killed between the two renames): the old copy, complete,
    is renamed back. ``path`` present: a leftover ``.NAME.old`` is removed. Either way, temporary folders of
    writers that died are removed; a live writer's (locked, see :func:`atomic_dir`) is left alone, and a
    writer in the middle of its swap is waited for. Cheap when there is nothing to do (one listing).
    Raises :class:`~textcl.errors.TextclError` when the old copy cannot be renamed back (e.g. a read-only
    folder), naming both paths.
    """
    path = _real(Path(path))
    old = _old_copy(path)
    if not old.exists() and not old.is_symlink() and not _temp_folders(path):
        return path
    with _FolderLock(path.parent):  # atomic_dir swaps under this lock: never look at a half-done swap
        if not path.exists() and old.is_dir():
            try:
                os.replace(old, path)
            except OSError as exc:
                raise TextclError(f"{path}: missing after an interrupted save; its previous version is {old}, "
                                  f"which could not be renamed back ({exc.strerror or exc}): rename it to "
                                  f"{path.name} by hand") from None
            fsync_dir(path.parent)
        elif path.exists() and (old.exists() or old.is_symlink()):
            _remove(old)
        for tmp in _temp_folders(path):
            with _FolderLock(tmp, blocking=False) as probe:
                if probe.held:  # no live writer holds it: its writer died
                    shutil.rmtree(tmp, ignore_errors=True)
    return path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` as a whole.

    The temporary folder (``.NAME.<random>.tmp``) is flocked while it is written, so that
    :func:`recover_dir` in another process can tell it from a dead writer's. On success every file and
    folder in it is fsynced; then, under a lock on the parent folder, ``path`` (if present) is renamed to
    ``.NAME.old``, the temporary folder to ``path``, the parent is fsynced and ``.NAME.old`` removed. A kill
    at any point leaves either the previous folder or the new one, complete, once :func:`recover_dir` ran.
    """
    path = _real(Path(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    with _FolderLock(path.parent):  # created and locked in one step, as recover_dir sees it
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; the saved folder is an ordinary one
        mine = _FolderLock(tmp)
    try:
        yield tmp
        _fsync_tree(tmp)
        with _FolderLock(path.parent):
            if path.exists():
                old = _old_copy(path)
                if old.exists() or old.is_symlink():  # a previous writer's, left since recover_dir above
                    _remove(old)
                os.replace(path, old)
                os.replace(tmp, path)
                fsync_dir(path.parent)
                _remove(old)
            else:
                os.replace(tmp, path)
                fsync_dir(path.parent)
    finally:
        mine.release()
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
