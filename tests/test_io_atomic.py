"""Atomic folders: a writer killed at any step leaves the old or the new folder, complete, once recovered."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import textcl._io as io
from _crash import CRASH_AT_EVERY_STEP
from textcl._io import atomic_dir, recover_dir

# Run in a child process: replace TARGET by a two-file folder, dying (os._exit, as SIGKILL would: no cleanup)
# at the CRASH_AT-th call of any file-system step the writer takes.
KILLED_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path

    from textcl._io import atomic_dir

    target, crash_at = Path(sys.argv[1]), int(sys.argv[2])
""") + CRASH_AT_EVERY_STEP + textwrap.dedent("""
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("new")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("new")
    print("saved", steps)
""")
OLD = {"a.txt": "old", "sub/b.txt": "old"}
NEW = {"a.txt": "new", "sub/b.txt": "new"}


def write(target: Path, version: str) -> None:
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text(version)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text(version)


def contents(target: Path) -> dict[str, str]:
    return {p.relative_to(target).as_posix(): p.read_text() for p in target.rglob("*") if p.is_file()}


def test_a_writer_killed_at_any_step_leaves_the_old_or_the_new_folder(tmp_path):
    target = tmp_path / "ix"
    seen = []
    for crash_at in range(200):
        write(target, "old")
        run = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target), str(crash_at)],
                             capture_output=True, text=True)
        assert run.returncode in (0, 17), run.stderr
        recover_dir(target)
        got = contents(target)
        assert got in (OLD, NEW), f"killed at step {crash_at}: {got}"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"], f"killed at step {crash_at}: leftovers"
        seen.append(got == NEW)
        if run.returncode == 0:
            break
    else:
        pytest.fail("the writer never finished")
    # killed before the swap: the old folder; killed after the second rename: the new one
    assert not seen[0] and seen[-1] and seen.index(True) > 1


def test_the_old_copy_is_restored_when_the_folder_is_missing(tmp_path):
    target = tmp_path / "ix"
    write(target, "old")
    target.rename(tmp_path / ".ix.old")  # what a kill between atomic_dir's two renames leaves
    (tmp_path / ".ix.k2j4abcd.tmp").mkdir()  # and the new version, not yet renamed in (maybe incomplete)
    assert recover_dir(target) == target and contents(target) == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]
    write(target, "new")  # and the next save works
    assert contents(target) == NEW


def test_a_live_writers_temporary_folder_is_left_alone(tmp_path):
    target = tmp_path / "ix"
    write(target, "old")
    (tmp_path / ".ix.deadbeef.tmp").mkdir()  # a dead writer's
    (tmp_path / ".ix.json.deadbeef.tmp").mkdir()  # not a temporary folder of ix (of ix.json's writer)
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("new")
        recover_dir(target)  # e.g. a reader loading the folder while the server saves it
        assert tmp.is_dir() and (tmp / "a.txt").exists()
        assert not (tmp_path / ".ix.deadbeef.tmp").exists() and (tmp_path / ".ix.json.deadbeef.tmp").exists()
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("new")
    assert contents(target) == NEW


def test_every_file_and_folder_is_fsynced_before_the_rename_and_the_rename_after(tmp_path, monkeypatch):
    target = tmp_path / "ix"
    write(target, "old")
    events: list[tuple] = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd):
        events.append(("fsync", os.fstat(fd).st_ino))
        return fsync(fd)

    def recording_replace(src, dst):
        inodes = {p.stat().st_ino for p in [Path(src), *Path(src).rglob("*")]} if Path(src).is_dir() else set()
        events.append(("replace", Path(src).name, Path(dst).name, inodes))
        return replace(src, dst)

    monkeypatch.setattr(io.os, "fsync", recording_fsync)
    monkeypatch.setattr(io.os, "replace", recording_replace)
    write(target, "new")
    [into] = [i for i, e in enumerate(events) if e[0] == "replace" and e[2] == "ix"]
    synced = {e[1] for e in events[:into] if e[0] == "fsync"}
    assert events[into][3] and events[into][3] <= synced  # the folder, its subfolder and both files
    assert ("fsync", tmp_path.stat().st_ino) in events[into + 1:]  # the parent, after the rename
    assert contents(target) == NEW


def test_atomic_path_makes_the_rename_durable(tmp_path, monkeypatch):
    synced = []
    fsync = os.fsync
    monkeypatch.setattr(io.os, "fsync", lambda fd: synced.append(os.fstat(fd).st_ino) or fsync(fd))
    io.atomic_write_text(tmp_path / "f.txt", "x")
    assert (tmp_path / "f.txt").stat().st_ino in synced and tmp_path.stat().st_ino in synced


def test_recover_dir_names_both_paths_when_it_cannot_restore(tmp_path, monkeypatch):
    target = tmp_path / "ix"
    write(target, "old")
    target.rename(tmp_path / ".ix.old")

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io.os, "replace", refuse)
    with pytest.raises(io.TextclError, match=rf"{target}: missing after an interrupted save; its previous "
                                             rf"version is {tmp_path / '.ix.old'}.*rename it to ix by hand"):
        recover_dir(target)


def test_a_model_folder_whose_save_was_killed_resolves_to_its_previous_version(tmp_path):
    from textcl.models import resolve_model

    model = tmp_path / "runs" / "model"
    write(model, "old")  # Encoder.save writes its folder with atomic_dir
    model.rename(model.with_name(".model.old"))
    (model.with_name(".model.x1y2z3ab.tmp")).mkdir()
    assert resolve_model(model) == model and contents(model) == OLD
    assert sorted(p.name for p in model.parent.iterdir()) == ["model"]


def test_a_folder_behind_a_symbolic_link_is_saved_where_it_is_and_the_link_stays(tmp_path):
    """``index -> v3``: each save swaps v3's contents and keeps the link (the link itself used to be renamed
    away, the save reported as failed, and every later save failed on the leftover link)."""
    from textcl._io import atomic_dir

    real = tmp_path / "v3"
    real.mkdir()
    (real / "a.txt").write_text("one")
    link = tmp_path / "index"
    link.symlink_to(real, target_is_directory=True)
    for text in ("two", "three"):
        with atomic_dir(link) as tmp:
            (tmp / "a.txt").write_text(text)
        assert link.is_symlink() and (link / "a.txt").read_text() == text == (real / "a.txt").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "v3"]


def test_a_saved_folder_has_ordinary_permissions_and_a_link_loop_is_left_to_the_caller(tmp_path):
    import stat

    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o777 & ~mask  # not mkdtemp's 0700
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert recover_dir(loop) == loop  # no RuntimeError("Symlink loop"): the loader's own error names it
