"""One rank's shard of a corpus, embedded chunk by chunk into its own memmap and resumable; and its assembly.

Files in a work folder that every rank sees (on several nodes: a shared file system, since rank 0 reads the
other ranks' files)::

    shards.json                    {"key": ...}: what the folder was started for (see prepare_work)
    shard-<rank>-of-<world>.f32    (hi - lo, d) float32 memmap: rows [lo, hi) of the corpus, in plan order
    shard-<rank>-of-<world>.json   {"key": ..., "rows": [lo, hi], "n_chunks": c, "done": k}

A chunk's vectors are flushed before the state, written atomically, records the chunk done: a killed rank
keeps its finished chunks, and a rerun with the same key, rows and chunks encodes only the rest.

"Plan order" is whatever order the caller cuts into chunks (input order for the index build, the encoder's
length order for ``textcl encode``). Shards are contiguous runs of whole *units* (the index build's chunks,
the encoder's batches): a unit is always encoded in one piece, so the bits do not depend on the world size.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from textcl._io import atomic_write_json, read_json
import textcl.encode.dist as _dist
from textcl.encode.dist import Launch
from textcl.errors import DataFormatError, TextclError

WORK_STATE = "shards.json"


class ShardError(TextclError, RuntimeError):
    """A shard rank 0 must assemble is missing or unfinished. The message names the file."""


# ---------------------------------------------------------------- bounds (pure)


def shard_bounds(n: int, world: int) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` ranges, one per rank, covering ``0..n`` exactly once: rank ``r`` gets
    ``[r*n//world, (r+1)*n//world)``, so sizes differ by at most one (some are empty when ``n < world``).

    Example:
        >>> shard_bounds(10, 3)
        [(0, 3), (3, 6), (6, 10)]
    """
    if world < 1 or n < 0:
        raise ValueError(f"expected n >= 0 and world >= 1, got n={n}, world={world}")
    return [(r * n // world, (r + 1) * n // world) for r in range(world)]


def balanced_bounds(costs: Sequence[float], world: int) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` ranges of units, one per rank, covering ``0..len(costs)`` exactly once with
    near-equal total cost: range ``r`` ends at the unit boundary nearest to ``(r+1)/world`` of the whole.

    Example:
        >>> balanced_bounds([4, 1, 1, 1, 1], 2)   # the long first unit is a shard by itself
        [(0, 1), (1, 5)]
    """
    if world < 1:
        raise ValueError(f"expected world >= 1, got {world}")
    cum = np.concatenate([[0.0], np.cumsum(np.asarray(costs, dtype=np.float64))])
    cuts = [0]
    for r in range(1, world):
        target = cum[-1] * r / world
        i = int(np.searchsorted(cum, target, side="left"))  # cum[i - 1] < target <= cum[i]
        if i > 0 and target - cum[i - 1] < cum[i] - target:
            i -= 1
        cuts.append(max(i, cuts[-1]))
    cuts.append(len(cum) - 1)
    return list(zip(cuts, cuts[1:]))


# ---------------------------------------------------------------- one rank's shard


def shard_files(work: Path, rank: int, world: int) -> tuple[Path, Path]:
    """(vectors memmap, state JSON) of shard ``rank`` of ``world`` in ``work``."""
    stem = f"shard-{rank}-of-{world}"
    return Path(work) / f"{stem}.f32", Path(work) / f"{stem}.json"


def _read_state(path: Path) -> dict | None:
    """The state in ``path``; None when there is none. A file that cannot be read is an error that names it:
    states are written atomically, so it was damaged from outside, and guessing could mix two runs."""
    try:
        state = read_json(path)
    except FileNotFoundError:
        return None
    except DataFormatError as exc:
        raise DataFormatError(exc.path, exc.line, f"{exc.reason}; delete {path.parent} to encode afresh") from None
    if not isinstance(state, dict):
        raise DataFormatError(path, None, f"expected a JSON object, got {type(state).__name__}; delete "
                              f"{path.parent} to encode afresh")
    return state


def encode_shard(work: str | Path, launch: Launch, chunks: Sequence[tuple[int, int]], dim: int, key: dict,
                 encode_rows: Callable[[int, int], np.ndarray], *, show_progress: bool = False,
                 desc: str = "encoding") -> int:
    """Encode this rank's shard: ``chunks`` are consecutive ``(a, b)`` row ranges in plan order (the shard is
    ``[chunks[0][0], chunks[-1][1])``; may be empty), each embedded by ``encode_rows(a, b) -> (b - a, dim)``
    into ``shard-<rank>-of-<world>.f32`` and then recorded done.

    A leftover shard with the same ``key`` (JSON values), rows and number of chunks is resumed after its last
    finished chunk; anything else there is replaced. Returns the number of chunks encoded by this call.
    """
    work = Path(work)
    for (_, b), (a, _) in zip(chunks, chunks[1:]):
        if a != b:
            raise ValueError(f"chunks must be consecutive; got one ending at {b} and the next starting at {a}")
    if any(b <= a for a, b in chunks):
        raise ValueError(f"every chunk must hold a row; got {[c for c in chunks if c[1] <= c[0]][:3]}")
    lo, hi = (chunks[0][0], chunks[-1][1]) if chunks else (0, 0)
    vpath, spath = shard_files(work, launch.rank, launch.world)
    head = {"key": key, "rows": [lo, hi], "n_chunks": len(chunks)}
    state = _read_state(spath)
    done = 0
    if state is not None and {k: state.get(k) for k in head} == head:
        done = state.get("done")
        if not isinstance(done, int) or not 0 <= done <= len(chunks):
            raise DataFormatError(spath, None, f"'done' should be a chunk count from 0 to {len(chunks)}, got "
                                  f"{done!r}; delete {work} to encode afresh")
        if done and not (vpath.is_file() and vpath.stat().st_size == (hi - lo) * dim * 4):
            done = 0  # the vectors went missing: the recorded chunks cannot be trusted
    if done == 0:
        vpath.unlink(missing_ok=True)
        atomic_write_json(spath, {**head, "done": 0})
    if done == len(chunks):
        return 0

    from tqdm.auto import tqdm

    out = np.memmap(vpath, dtype=np.float32, mode="r+" if vpath.exists() else "w+", shape=(hi - lo, dim))
    # the rate and ETA are those of this run: resumed rows count in the position, not the speed
    with tqdm(total=hi - lo, initial=chunks[done][0] - lo, desc=desc, unit="text", disable=not show_progress,
              dynamic_ncols=True) as bar:
        for i in range(done, len(chunks)):
            a, b = chunks[i]
            vecs = np.asarray(encode_rows(a, b), dtype=np.float32)
            if vecs.shape != (b - a, dim):
                raise ValueError(f"encoding rows {a}..{b} gave shape {vecs.shape}; expected {(b - a, dim)}")
            out[a - lo : b - lo] = vecs
            out.flush()
            atomic_write_json(spath, {**head, "done": i + 1})
            bar.update(b - a)
    del out
    return len(chunks) - done


# ---------------------------------------------------------------- the folder, and assembly on rank 0


def prepare_work(work: str | Path, key: dict, launch: Launch) -> None:
    """Rank 0 keeps ``work`` if it was started for ``key`` (JSON values, including the world size as
    ``key["world"]``), else empties it, saying why on stderr when it held another run's shards; then every
    rank waits until the folder is ready."""
    work = Path(work)
    if launch.is_main:
        state = _read_state(work / WORK_STATE) if work.is_dir() else None
        if state is None or state.get("key") != key:
            if state is not None:
                old = state.get("key") if isinstance(state.get("key"), dict) else {}
                same_but_world = {**old, "world": key.get("world")} == key
                why = (f"its shards were encoded by {old.get('world')} processes and this run has {key.get('world')}"
                       if same_but_world else "it was started for another input, model or settings")
                print(f"textcl: discarding {work}: {why}; encoding afresh", file=sys.stderr)
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            atomic_write_json(work / WORK_STATE, {"key": key})
    _dist.barrier(launch)


def shard_pieces(work: str | Path, world: int, dim: int, n: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """For rank 0, after every rank finished: ``(lo, hi, vectors)`` of each non-empty shard in rank order,
    ``vectors`` a read-only (hi - lo, dim) memmap. Raises :class:`ShardError` naming the file of a shard that
    is missing or unfinished, or when the shards do not cover rows ``0..n`` in order."""
    work = Path(work)
    pos = 0
    for rank in range(world):
        vpath, spath = shard_files(work, rank, world)
        state = _read_state(spath)
        if state is None:
            raise ShardError(f"{spath}: missing; every rank writes its shard there for rank 0 to read (on several "
                             "nodes the output must be on a file system they share)")
        if state.get("done") != state.get("n_chunks"):
            raise ShardError(f"{spath}: shard {rank} of {world} is unfinished ({state.get('done')} of "
                             f"{state.get('n_chunks')} chunks)")
        lo, hi = state["rows"]
        if lo == hi:
            continue
        if lo != pos:
            raise ShardError(f"{spath}: holds rows {lo}..{hi}, expected rows from {pos}")
        yield lo, hi, np.memmap(vpath, dtype=np.float32, mode="r", shape=(hi - lo, dim))
        pos = hi
    if pos != n:
        raise ShardError(f"{work}: the shards hold rows 0..{pos}, expected 0..{n}")


def remove_shards(work: str | Path, world: int) -> None:
    """Delete the shard files of ``world`` ranks from ``work`` (after assembly)."""
    for rank in range(world):
        for path in shard_files(Path(work), rank, world):
            path.unlink(missing_ok=True)
