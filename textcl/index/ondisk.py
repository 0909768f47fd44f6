"""IVF indexes whose inverted lists live in a file on disk, built shard by shard in bounded memory.

A folder holds two files::

    index.faiss    the header: coarse quantizer, codec (SQ ranges, PQ codebooks), each list's size and offset
    index.ivfdata  the inverted lists in FAISS's ``OnDiskInvertedLists`` layout: per list, its codes then its
                   int64 ids; memory-mapped read-only by :func:`read_ondisk`, so RAM holds only the pages touched

The build is three steps, each a function of files only, so separate processes (e.g. torchrun ranks, one
shard each) can run the middle one::

    train_ondisk("IVF4096,SQ8", sample, "trained.faiss")               # once: quantizer + codec
    fill_shard("trained.faiss", chunks_of_shard_i, f"shard-{i}.faiss")  # per shard: (ids, vectors) chunks
    merge_shards("trained.faiss", shard_paths, "my-index")              # once: index.faiss + index.ivfdata

:func:`build_ondisk` runs all three in one process. Peak memory is the training sample, or one shard's codes
(see :func:`shard_rows`), whichever is larger, never the corpus.

Why not ``faiss.contrib.ondisk.merge_ondisk``: it maps every shard and the output at once and every page it
touches counts in the process's resident set, so the peak RSS of a merge grows with the corpus (4 shards of
20 MB: VmHWM +155 MiB with ``merge_ondisk``, +21 MiB here); it also prints to stdout. :func:`merge_shards` maps one shard at a time and writes the output with ``pwrite``; its
``index.ivfdata`` is byte for byte the one ``merge_ondisk`` writes. (Its header records no free slots, where
FAISS's marks the whole file free, which only matters to writers; the file is read-only here.)

Vectors are searched by inner product, so give L2-normalised rows (cosine), as ``encode_texts`` returns them;
they are not normalised again here, so a build from the same rows equals an in-memory one bit for bit. Ids are
the caller's int64s (>= 0), stored in the lists themselves (IVF needs no ``IndexIDMap2``); their uniqueness
across shards is the caller's to ensure.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from textcl._io import atomic_path
from textcl.errors import ConfigError
import textcl.index.factory as fx
from textcl.index.errors import DimensionMismatchError, EmptyCorpusError, IndexCorruptedError, IndexStateError

INDEX_FILE = "index.faiss"
LISTS_FILE = "index.ivfdata"
SHARD_BYTES = 256 * 2**20  # codes + ids of one shard, held in memory while it is filled (up to 2x: list growth)

Chunk = tuple[np.ndarray, np.ndarray]  # (ids (n,) int64, vectors (n, d) float32)


def make_ivf(factory: str, dim: int):
    """A fresh, untrained ``faiss.index_factory(dim, factory, METRIC_INNER_PRODUCT)`` that has inverted lists
    (``IVF...``, optionally behind a transform such as ``OPQ``); no ``IndexIDMap2`` around it."""
    import faiss

    if factory == "auto" or factory.startswith("IDMap"):
        raise ConfigError("factory", f"{factory!r}: give an IVF factory string such as IVF4096,SQ8")
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "invalid"
        raise ConfigError("factory", f"{factory!r} is not a FAISS index_factory string ({first})") from None
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        ivf = None
    base = faiss.downcast_index(index)
    if isinstance(base, faiss.IndexRefine) or (ivf is not None and isinstance(faiss.downcast_index(ivf),
                                                                              faiss.IndexIVFFastScan)):
        raise ConfigError("factory", f"{factory!r}: an on-disk index needs plain inverted lists; fast-scan codes "
                                     "(x4fs) are packed in blocks and a refinement (RFlat) keeps every vector in "
                                     "memory: use IVF4096,SQ8 or IVF4096,PQ32, or auto")
    if ivf is None or isinstance(ivf, faiss.IndexIVFPQR):
        raise ConfigError("factory", f"{factory!r} has no inverted lists to keep on disk: an on-disk index needs "
                                     "an IVF factory such as IVF4096,SQ8, IVF4096,Flat or IVF4096,PQ32")
    fx._no_polysemous(index)
    fx.set_search_defaults(index)
    return index


def auto_factory(n: int) -> str:
    """``auto`` for an on-disk index of ``n`` vectors: ``IVF{nlist},SQ8`` (1 byte per dimension on disk),
    ``nlist`` a power of two near 4 sqrt(n) as in :func:`textcl.index.factory.ivf_nlist`."""
    return f"IVF{fx.ivf_nlist(n)},SQ8"


def shard_rows(code_size: int, shard_bytes: int = SHARD_BYTES) -> int:
    """Vectors per shard so that one shard's codes and ids take about ``shard_bytes`` of memory."""
    return max(1, int(shard_bytes) // (int(code_size) + 8))


def _ivf(index):
    import faiss

    return faiss.extract_index_ivf(index)


def _write(index, path: str | os.PathLike) -> Path:
    import faiss

    path = Path(path)
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    return path


# ---------------------------------------------------------------- 1. train
def train_ondisk(factory: str, sample: np.ndarray, path: str | os.PathLike):
    """Train ``factory`` (an IVF factory string) on ``sample`` (m, d) unit rows and write the empty trained
    index to ``path``; return it. Too small a sample raises ConfigError (39 vectors per list at least)."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    if sample.ndim != 2 or len(sample) == 0:
        raise ConfigError("sample", f"expected a non-empty (m, d) array of training vectors, got shape {sample.shape}")
    index = make_ivf(factory, sample.shape[1])
    fx.train(index, sample, factory)
    _write(index, path)
    return index


def _read_trained(trained: str | os.PathLike):
    import faiss

    path = Path(trained)
    if not path.is_file():
        raise IndexStateError(f"{path}: no trained index; write one with train_ondisk first")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise IndexCorruptedError(f"{path}: FAISS cannot read it ({str(exc).strip()[:200]})") from None
    try:
        ivf = _ivf(index)
    except RuntimeError:
        ivf = None
    if ivf is None:
        raise ConfigError("trained", f"{path}: not an IVF index; an on-disk index needs one (e.g. IVF4096,SQ8)")
    if not index.is_trained:
        raise IndexStateError(f"{path}: the index is not trained; train it with train_ondisk first")
    if index.ntotal != 0:
        raise IndexStateError(f"{path}: holds {index.ntotal} vectors; give the empty trained index")
    return index


# ---------------------------------------------------------------- 2. fill one shard
def fill_shard(trained: str | os.PathLike, chunks: Iterable[Chunk], path: str | os.PathLike) -> int:
    """Add ``chunks`` (an iterable of ``(ids (n,) int64, vectors (n, d) unit rows)``) to a copy of the trained index
    and write it to ``path`` (atomically) as a FAISS index file; return the number of vectors added.

    Only this shard's codes are held in memory. Raises DimensionMismatchError naming the chunk whose
    vectors are not ``d``-dimensional, ConfigError for ids that do not match the vectors or are negative.
    """
    index = _read_trained(trained)
    count = 0
    for c, (ids, vecs) in enumerate(chunks):
        vecs = np.asarray(vecs)
        if vecs.ndim != 2 or vecs.shape[1] != index.d:
            raise DimensionMismatchError(f"{path}: chunk {c}: vectors of shape {vecs.shape}, but the trained index "
                                         f"{trained} holds {index.d}-d vectors")
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) != len(vecs):
            raise ConfigError("ids", f"{path}: chunk {c}: {len(ids)} ids for {len(vecs)} vectors")
        if len(ids) and ids.min() < 0:
            raise ConfigError("ids", f"{path}: chunk {c}: ids must be >= 0 (-1 marks a missing result), "
                                     f"got {ids.min()}")
        if len(ids):
            index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), ids)
            count += len(ids)
    _write(index, path)
    return count


# ---------------------------------------------------------------- 3. merge
def _read_shard(path: Path):
    """A shard's index and its IVF, the lists memory-mapped read-only (pages are read only when touched)."""
    import faiss

    if not path.is_file():
        raise IndexStateError(f"{path}: no such shard file (did fill_shard finish?)")
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        ivf = _ivf(index)
    except RuntimeError as exc:
        raise IndexCorruptedError(f"{path}: FAISS cannot read it as an IVF index ({str(exc).strip()[:200]})") from None
    return index, ivf


def _shard_sizes(path: Path, trained: Path, trained_bytes: np.ndarray) -> np.ndarray:
    """The shard's list sizes (nlist,) uint64, after checking that it holds the trained index that
    ``trained_bytes`` serialises (quantizer, codec, every parameter): compared with its lists emptied."""
    import faiss

    index, ivf = _read_shard(path)
    nlist = int(ivf.nlist)
    sizes = np.fromiter((ivf.invlists.list_size(j) for j in range(nlist)), dtype=np.uint64, count=nlist)
    empty = faiss.ArrayInvertedLists(nlist, ivf.code_size)
    ivf.replace_invlists(empty, True)
    empty.this.disown()  # the index owns it now
    index.ntotal = ivf.ntotal = 0
    if not np.array_equal(faiss.serialize_index(index), trained_bytes):
        raise ConfigError("shards", f"{path}: not filled from {trained} (another quantizer, codec or factory); "
                                    "fill every shard from the same trained index")
    return sizes


def merge_shards(trained: str | os.PathLike, shards: Sequence[str | os.PathLike], folder: str | os.PathLike) -> int:
    """Concatenate the shards' inverted lists, list by list in shard order, into ``folder/index.ivfdata`` and
    write the header ``folder/index.faiss``; return the number of vectors. Each shard must have been filled
    from ``trained`` (checked: a shard from another training raises ConfigError naming it).

    Memory: one shard mapped at a time (its pages are released when the next is opened); the output is
    written with ``pwrite``, never mapped.
    """
    import faiss

    index = _read_trained(trained)
    ivf = _ivf(index)
    nlist, code_size = int(ivf.nlist), int(ivf.code_size)
    trained_bytes = faiss.serialize_index(index)
    shards = [Path(s) for s in shards]
    if not shards:
        raise EmptyCorpusError("no shards to merge")
    sizes = np.zeros(nlist, dtype=np.uint64)
    for path in shards:
        sizes += _shard_sizes(path, Path(trained), trained_bytes)
    ntotal = int(sizes.sum())
    if ntotal == 0:
        raise EmptyCorpusError(f"the {len(shards)} shards hold no vectors")

    # FAISS lays the lists out (offset, capacity = size) and records the relative file name in the header.
    lists = faiss.OnDiskInvertedLists(nlist, code_size, LISTS_FILE)
    lists.set_all_lists_sizes(faiss.swig_ptr(sizes))
    offsets = np.fromiter((lists.lists.at(j).offset for j in range(nlist)), dtype=np.int64, count=nlist)
    totsize = int((sizes.astype(np.int64) * (code_size + 8)).sum())
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    filled = np.zeros(nlist, dtype=np.int64)
    with atomic_path(folder / LISTS_FILE) as tmp:
        with open(tmp, "wb") as fh:
            fh.truncate(totsize)
            fd = fh.fileno()
            for path in shards:
                shard, sivf = _read_shard(path)
                il = sivf.invlists
                for j in range(nlist):
                    n = il.list_size(j)
                    if not n:
                        continue
                    codes = faiss.rev_swig_ptr(il.get_codes(j), n * code_size)
                    ids = faiss.rev_swig_ptr(il.get_ids(j), n)
                    cap = int(sizes[j])
                    # list j: codes at offset, ids after its `cap` codes (OnDiskInvertedLists::get_ids)
                    os.pwrite(fd, codes, int(offsets[j] + filled[j] * code_size))
                    os.pwrite(fd, ids, int(offsets[j] + cap * code_size + filled[j] * 8))
                    filled[j] += n
                del shard, sivf, il
    lists.totsize = totsize
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # the index owns it now
    index.ntotal = ivf.ntotal = ntotal
    _write(index, folder / INDEX_FILE)
    return ntotal


# ---------------------------------------------------------------- reading
def read_ondisk(folder: str | os.PathLike):
    """Open ``folder/index.faiss`` with its lists ``folder/index.ivfdata`` memory-mapped read-only.

    The lists file is looked up in the folder the header is read from, never at the path recorded at build
    time, so a moved or copied folder opens. Raises IndexCorruptedError for a missing or truncated lists file.
    """
    import faiss

    folder = Path(folder)
    header = folder / INDEX_FILE
    try:  # the header only; the lists are mapped below, from this folder
        index = faiss.read_index(str(header), faiss.IO_FLAG_SKIP_IVF_DATA | faiss.IO_FLAG_READ_ONLY)
        lists = faiss.downcast_InvertedLists(_ivf(index).invlists)
    except RuntimeError as exc:
        raise IndexCorruptedError(f"{header}: FAISS cannot read it ({str(exc).strip()[:200]})") from None
    if not isinstance(lists, faiss.OnDiskInvertedLists):
        raise IndexCorruptedError(f"{header}: its inverted lists are not on disk ({type(lists).__name__})")
    path = (folder / LISTS_FILE).resolve()
    if not path.is_file():
        raise IndexCorruptedError(f"{path}: missing; the on-disk index's inverted lists are gone")
    if path.stat().st_size != lists.totsize:
        raise IndexCorruptedError(f"{path}: {path.stat().st_size:,} bytes, the header {header} expects "
                                  f"{lists.totsize:,}; the file is truncated or from another build")
    lists.filename = str(path)
    lists.do_mmap()
    return index


def is_ondisk(index) -> bool:
    import faiss

    try:
        return isinstance(faiss.downcast_InvertedLists(_ivf(index).invlists), faiss.OnDiskInvertedLists)
    except (RuntimeError, AttributeError, TypeError):
        return False


def write_header(index, path: str | os.PathLike) -> None:
    """Write an on-disk index's header to ``path``, recording the lists file by its bare name."""
    import faiss

    lists = faiss.downcast_InvertedLists(_ivf(index).invlists)
    mapped = lists.filename
    lists.filename = LISTS_FILE
    try:
        faiss.write_index(index, str(path))
    finally:
        lists.filename = mapped


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Hard-link ``src`` to ``dst`` (instant, no extra disk), or copy it where links are impossible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


# ---------------------------------------------------------------- one process
def chunked(chunks: Iterable[Chunk], rows: int) -> Iterator[Iterator[Chunk]]:
    """Group a stream of ``(ids, vectors)`` chunks into shards of whole chunks, each closed once it holds
    ``rows`` vectors or more. Consume each shard before asking for the next."""
    it = iter(chunks)
    head = [next(it, None)]

    def shard() -> Iterator[Chunk]:
        n = 0
        while head[0] is not None and n < rows:
            n += len(head[0][0])
            yield head[0]
            head[0] = next(it, None)

    while head[0] is not None:
        yield shard()


def build_ondisk(folder: str | os.PathLike, factory: str, sample: np.ndarray, chunks: Iterable[Chunk],
                 shard_size: int | None = None, work: str | os.PathLike | None = None) -> int:
    """Train on ``sample``, fill shards of ``shard_size`` vectors (default :func:`shard_rows`) from
    ``chunks`` and merge them into ``folder``; return the number of vectors. Shard files go to ``work``
    (default ``folder/.shards``) and are removed afterwards."""
    folder = Path(folder)
    work = Path(work) if work is not None else folder / ".shards"
    work.mkdir(parents=True, exist_ok=True)
    try:
        trained = work / "trained.faiss"
        index = train_ondisk(factory, sample, trained)
        rows = shard_size or shard_rows(_ivf(index).code_size)
        del index
        paths = []
        for i, shard in enumerate(chunked(chunks, rows)):
            paths.append(work / f"shard-{i:05d}.faiss")
            fill_shard(trained, shard, paths[-1])
        return merge_shards(trained, paths, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- in a SearchIndex folder
def lists_entry(folder: str | os.PathLike) -> dict:
    """The manifest's ``lists`` entry for ``folder/index.ivfdata``: file, bytes and a checksum of its ends
    (the policy of ``vectors.f32``: hashing gigabytes on every load is too slow)."""
    from textcl.index.compressed import CHECK_POLICY, ends_sha256

    path = Path(folder) / LISTS_FILE
    nbytes = path.stat().st_size
    return {"file": LISTS_FILE, "bytes": nbytes, "checksum": {"policy": CHECK_POLICY, "sha256": ends_sha256(path, nbytes)}}


def check_lists(folder: str | os.PathLike, entry: dict, verify: bool = True) -> None:
    """Check ``folder/index.ivfdata`` against the manifest's ``lists`` entry; raise IndexCorruptedError."""
    from textcl.index.compressed import verify_ends

    path = Path(folder) / LISTS_FILE
    if not path.is_file():
        raise IndexCorruptedError(f"{path}: missing from the index folder (the on-disk inverted lists)")
    size = path.stat().st_size
    if size != int(entry.get("bytes", -1)):
        raise IndexCorruptedError(f"{path}: {size:,} bytes, manifest says {entry.get('bytes')}; the file is truncated "
                                  "or from another build: rebuild the index with `textcl index build --on-disk`")
    verify_ends(path, size, entry, verify, "textcl index build --on-disk")


def read_only_error(action: str) -> IndexStateError:
    return IndexStateError(
        f"cannot {action}: this index keeps its inverted lists on disk ({LISTS_FILE}) and is read-only after "
        "the build; rebuild it with the changed documents (`textcl index build --on-disk`). Deleting works: "
        "deleted ids are filtered out of every search."
    )
