"""Compressed first passes with exact rescoring: ``binary``, ``SQ8+rescore``, ``binary+rescore10``, ...

* :class:`BinaryIndex` keeps 1 bit per dimension (the sign of each component) in a FAISS
  ``IndexBinaryIDMap(IndexBinaryFlat)`` and ranks by Hamming distance.
* :class:`VectorFile` keeps the float32 vectors on disk (``vectors.f32``, row ``i`` = integer id ``i``); only the
  candidates of a search are read, through a memory map, so RAM holds the compressed codes and the OS page
  cache serves the reads.
* :func:`rescore` turns ``k * r`` first-pass candidates into the top ``k`` by exact inner product.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from textcl.index.errors import IndexCorruptedError

VECTORS_FILE = "vectors.f32"
CHECK_BYTES = 1 << 20  # the checksum covers the first and the last MiB of the rows, not the middle
CHECK_POLICY = ("sha256 of the byte count, the first MiB and the last MiB of the rows; the middle is not "
                "hashed, since hashing gigabytes on every load is too slow")
_COPY_ROWS_BYTES = 64 << 20  # copy, and read candidates for rescoring, in blocks of about this many bytes
_GATHER_BYTES = 1 << 20  # gather candidate rows ~1 MiB at a time: 2-3x faster than one big gather (L2 cache)
IDMAP_BYTES = 8  # the id map's int64 id per vector
# IndexIDMap2 adds a reverse hash map (id -> position) for reconstruct(): measured 43 B per vector in RAM, not in
# the file. SearchIndex never reconstructs (rescoring reads vectors.f32), so the binary index, whose codes are
# only 48 B at d = 384, uses the plain IndexBinaryIDMap; remove_ids costs O(n) either way.
REV_MAP_BYTES = 43


# ---------------------------------------------------------------- binary first pass
def binarize(x: np.ndarray) -> np.ndarray:
    """(n, d) float -> (n, d / 8) uint8 codes: bit j is 1 where component j is > 0."""
    return np.packbits(np.asarray(x) > 0, axis=1)


class BinaryIndex:
    """A FAISS ``IndexBinaryIDMap(IndexBinaryFlat(d))`` behind the float-index calls :class:`SearchIndex` makes.

    Vectors go in as float32 (n, d) and are kept as their sign bits (d / 8 bytes). ``search`` returns scores
    ``1 - 2 * hamming / d``: the cosine of the +-1 sign vectors, so higher is better as for the float indexes.
    """

    is_binary = True
    is_trained = True

    def __init__(self, index):
        self.index = index
        self.d = int(index.d)

    @classmethod
    def new(cls, dim: int) -> "BinaryIndex":
        import faiss

        return cls(faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(int(dim))))

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def code_size(self) -> int:
        return self.d // 8

    def add_with_ids(self, x: np.ndarray, ids: np.ndarray) -> None:
        self.index.add_with_ids(binarize(x), np.asarray(ids, dtype=np.int64))

    def remove_ids(self, ids: np.ndarray) -> int:
        return self.index.remove_ids(np.asarray(ids, dtype=np.int64))

    def search(self, q: np.ndarray, k: int, params=None) -> tuple[np.ndarray, np.ndarray]:
        dist, labels = self.index.search(binarize(q), int(k), params=params)
        scores = (1.0 - 2.0 * dist.astype(np.float64) / self.d).astype(np.float32)
        scores[labels < 0] = -np.inf
        return scores, labels

    @staticmethod
    def params(sel):
        """FAISS search parameters carrying an ``IDSelector`` (or None)."""
        if sel is None:
            return None
        import faiss

        params = faiss.SearchParameters()
        params.sel = sel
        return params

    def write(self, path: str | os.PathLike) -> None:
        import faiss

        faiss.write_index_binary(self.index, str(path))

    @classmethod
    def read(cls, path: str | os.PathLike) -> "BinaryIndex":
        import faiss

        return cls(faiss.read_index_binary(str(path)))


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between the rows of two uint8 code arrays: (n, c) x (m, c) -> (n, m) int."""
    xor = np.bitwise_xor(np.asarray(a, np.uint8)[:, None, :], np.asarray(b, np.uint8)[None, :, :])
    return np.unpackbits(xor, axis=2).sum(axis=2)


# ---------------------------------------------------------------- memory accounting
def memory_bytes_per_vector(index) -> float:
    """Bytes each vector costs in RAM: its code plus the id map (8 B, and 43 B more for IndexIDMap2's reverse
    hash map), plus inverted-list ids (IVF, 8 B) or graph links (HNSW)."""
    import faiss

    if getattr(index, "is_binary", False):
        return float(index.code_size + IDMAP_BYTES)
    total = float(IDMAP_BYTES + (REV_MAP_BYTES if isinstance(index, faiss.IndexIDMap2) else 0))
    base = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    while isinstance(base, faiss.IndexPreTransform):
        base = faiss.downcast_index(base.index)
    if isinstance(base, faiss.IndexHNSW):
        n = max(int(base.ntotal), 1)
        links = base.hnsw.neighbors.size() * 4 + base.hnsw.offsets.size() * 8 + base.hnsw.levels.size() * 4
        storage = faiss.downcast_index(base.storage)
        return total + storage.code_size + links / n
    if isinstance(base, faiss.IndexIVF):
        return total + base.code_size + 8
    if isinstance(base, faiss.IndexRefine):
        inner = faiss.downcast_index(base.base_index)
        return total + getattr(inner, "code_size", 0) + faiss.downcast_index(base.refine_index).code_size
    return total + float(getattr(base, "code_size", 4 * index.d))


def is_lossless(index) -> bool:
    """True when ``index`` (an IndexIDMap2) already scores with the exact float32 vectors, so rescoring its
    candidates can change nothing: Flat, IVF*,Flat, HNSW*(,Flat), refined indexes."""
    import faiss

    base = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    lossless = (faiss.IndexFlat, faiss.IndexIVFFlat, faiss.IndexHNSWFlat, faiss.IndexRefineFlat)
    return isinstance(base, lossless)


# ---------------------------------------------------------------- float vectors on disk
def _same_file(path: Path, ident: tuple[int, int] | None) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return ident is not None and (st.st_dev, st.st_ino) == ident


class VectorFile:
    """float32 rows on disk, row ``i`` holding the vector of integer id ``i`` (ids are never reused, so a row
    is written once and never changed; rows of deleted ids stay as garbage).

    Two parts: the *base*, a file from a saved folder (or a streaming build) with ``base_rows`` valid rows,
    read-only; and the *tail*, a file in ``workdir`` with the rows added since. :meth:`save` writes the folder's
    ``vectors.f32`` without copying what it can link: a fresh index's tail, a streaming build's file, or the
    base when it is the file of the very folder being replaced and unchanged since it was opened (then only
    the tail is appended to it, so saving after an ``add`` costs O(rows added)). Otherwise (another folder,
    another file system) it copies. Rows are only ever appended past the old folder's ``rows``, so a reader
    of the old folder, or a save interrupted before its rename, never sees a changed row; rows past ``rows``
    are ignored, and :meth:`save` copies instead of linking while they are there. One writer per folder.
    """

    def __init__(self, workdir: str | os.PathLike, dim: int):
        self.dim = int(dim)
        self.row_bytes = 4 * self.dim
        self.rows = 0
        self._workdir = Path(workdir)
        self._base: Path | None = None
        self._base_ident: tuple[int, int] | None = None
        self._base_rows = 0
        self._base_linkable = False  # a streaming build's file: ours to link into the output
        self._base_mm: np.memmap | None = None
        self._tail_mm: np.memmap | None = None
        self._tail = self._new_tail()

    def _new_tail(self) -> Path:
        n = 0
        while (path := self._workdir / f"vectors.tail{n}.f32").exists():
            n += 1
        path.touch()
        return path

    # ------------------------------------------------------------ opening and writing
    def open(self, path: str | os.PathLike, rows: int, linkable: bool = False) -> None:
        """Use ``path``'s first ``rows`` rows as the base (a loaded folder's file, or a streaming build's)."""
        path = Path(path).absolute()  # mapped when first read: the working folder may have changed by then
        st = path.stat()
        if st.st_size < rows * self.row_bytes:
            raise IndexCorruptedError(f"{path}: {st.st_size:,} bytes, expected at least {rows * self.row_bytes:,} "
                                      f"({rows:,} rows of {self.dim} float32)")
        self._base, self._base_ident, self._base_rows = path, (st.st_dev, st.st_ino), int(rows)
        self._base_linkable = linkable
        self._base_mm = None
        self._drop_tail()
        self.rows = int(rows)

    def _drop_tail(self) -> None:
        self._tail_mm = None
        self._tail.unlink(missing_ok=True)  # unlink, never truncate: a save may have linked it into a folder
        self._tail = self._new_tail()

    def write(self, first_row: int, vecs: np.ndarray) -> None:
        """Write ``vecs`` (m, d) as rows ``first_row ..``; rows past them become invalid."""
        if first_row < self._base_rows:
            raise ValueError(f"row {first_row} is in the read-only base (rows < {self._base_rows})")
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        self._tail_mm = None
        with open(self._tail, "r+b") as fh:
            fh.seek((first_row - self._base_rows) * self.row_bytes)
            fh.write(vecs.tobytes())
        self.rows = first_row + len(vecs)

    # ------------------------------------------------------------ reading
    def _maps(self) -> tuple[np.memmap | None, np.memmap | None]:
        if self._base is not None and self._base_mm is None and self._base_rows:
            self._base_mm = np.memmap(self._base, dtype=np.float32, mode="r", shape=(self._base_rows, self.dim))
        tail_rows = self.rows - self._base_rows
        if tail_rows > 0 and (self._tail_mm is None or len(self._tail_mm) != tail_rows):
            self._tail_mm = np.memmap(self._tail, dtype=np.float32, mode="r", shape=(tail_rows, self.dim))
        return self._base_mm, self._tail_mm

    def take(self, ids: np.ndarray) -> np.ndarray:
        """The rows of ``ids`` (1-d, each in ``0 .. rows-1``; sorted ids read the file in order)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.dim), np.float32)
        if len(ids) == 0:
            return out
        if ids.min() < 0 or ids.max() >= self.rows:
            bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
            raise IndexCorruptedError(f"vector row {bad} requested; the vector file has rows 0..{self.rows - 1}")
        base, tail = self._maps()
        in_base = ids < self._base_rows
        if in_base.any():
            out[in_base] = base[ids[in_base]]
        if not in_base.all():
            out[~in_base] = tail[ids[~in_base] - self._base_rows]
        return out

    def iter_blocks(self, base: bool = True):
        """The valid rows as (m, d) arrays, the base's (unless ``base=False``) then the tail's, ~64 MiB each."""
        step = max(1, _COPY_ROWS_BYTES // self.row_bytes)
        base_mm, tail_mm = self._maps()
        for part in (base_mm if base else None, tail_mm):
            if part is None:
                continue
            for lo in range(0, len(part), step):
                yield np.asarray(part[lo : lo + step])

    # ------------------------------------------------------------ saving
    def save(self, folder: str | os.PathLike, final: str | os.PathLike) -> dict:
        """Write ``folder/vectors.f32`` (``folder`` is the temporary folder that will become ``final``); return
        the manifest's ``vectors`` entry. Call :meth:`saved` once ``final`` is in place."""
        target = Path(folder) / VECTORS_FILE
        final = Path(final)
        nbytes = self.rows * self.row_bytes
        if self._base is not None:
            source = self._base if self._linkable(final) else None
        else:
            source = self._tail if self.rows else None  # our own working file, dropped by saved()
        linked = False
        if source is not None:
            try:
                os.link(source, target)
                linked = True
            except OSError:  # another file system, or no hard links: copy
                target.unlink(missing_ok=True)
        blocks = () if linked and self._base is None else self.iter_blocks(base=not linked)
        with open(target, "r+b" if linked else "wb") as fh:
            if linked:
                fh.seek(self._base_rows * self.row_bytes)
            for block in blocks:
                fh.write(block.tobytes())
            fh.truncate(nbytes)
            fh.flush()
            os.fsync(fh.fileno())
        return {"file": VECTORS_FILE, "dtype": "float32", "rows": self.rows, "dim": self.dim, "bytes": nbytes,
                "checksum": {"policy": CHECK_POLICY, "sha256": ends_sha256(target, nbytes)}}

    def _linkable(self, final: Path) -> bool:
        """Link the base only if nothing else can see the rows appended to it: a streaming build's own file,
        or the file of the folder being replaced, unchanged since it was opened (same inode, same size)."""
        if not _same_file(self._base, self._base_ident):
            return False
        if self._base_linkable:
            return True
        try:
            same_folder = final.exists() and os.path.samefile(self._base.parent, final)
        except OSError:
            return False
        return same_folder and self._base.stat().st_size == self._base_rows * self.row_bytes

    def saved(self, final: str | os.PathLike) -> None:
        """After a save: the folder's file becomes the base, and the tail starts empty."""
        self.open(Path(final) / VECTORS_FILE, self.rows)

    def close(self) -> None:
        self._base_mm = self._tail_mm = None


def ends_sha256(path: str | os.PathLike, nbytes: int) -> str:
    """The vector file's checksum: see :data:`CHECK_POLICY`."""
    digest = hashlib.sha256(str(nbytes).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(min(CHECK_BYTES, nbytes)))
        fh.seek(max(0, nbytes - CHECK_BYTES))
        digest.update(fh.read(min(CHECK_BYTES, nbytes)))
    return digest.hexdigest()


def check_vector_file(folder: Path, entry: dict, dim: int, verify: bool = True) -> Path:
    """Check a saved folder's vector file against its manifest ``entry``; return its path."""
    path = folder / entry.get("file", VECTORS_FILE)
    if not path.exists():
        raise IndexCorruptedError(f"{path}: missing from the index folder (its factory rescores with it)")
    if int(entry.get("dim", dim)) != dim or entry.get("dtype", "float32") != "float32":
        raise IndexCorruptedError(f"{path}: manifest says {entry.get('dim')}-d {entry.get('dtype')}, expected "
                                  f"{dim}-d float32")
    nbytes = int(entry["rows"]) * 4 * dim
    size = path.stat().st_size
    if size < nbytes:
        raise IndexCorruptedError(f"{path}: {size:,} bytes, manifest says {entry['rows']:,} rows ({nbytes:,} bytes); "
                                  "the file is truncated: rebuild the index with `textcl index build`")
    verify_ends(path, nbytes, entry, verify, "textcl index build")
    return path


def verify_ends(path: Path, nbytes: int, entry: dict, verify: bool, rebuild: str) -> None:
    """Raise IndexCorruptedError when ``entry``'s checksum of the first and last MiB of ``path``'s first
    ``nbytes`` bytes (see :func:`ends_sha256`) does not match the file; ``rebuild``: the command to suggest."""
    expected = entry.get("checksum", {}).get("sha256")
    if verify and expected and ends_sha256(path, nbytes) != expected:
        raise IndexCorruptedError(f"{path}: checksum mismatch (first/last MiB differ from the manifest); the file "
                                  f"is corrupted: rebuild the index with `{rebuild}`")


# ---------------------------------------------------------------- rescoring
def rescore(queries: np.ndarray, candidates: np.ndarray, vectors: VectorFile, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``k`` among first-pass candidates.

    ``queries`` (nq, d) float32 unit rows; ``candidates`` (nq, m) int64 ids, -1 where the first pass found none.
    Returns (scores (nq, k) float32 inner products, ids (nq, k) int64), best first, padded with -inf / -1. Ties
    keep the first pass's order.
    """
    nq, m = candidates.shape
    scores = np.full((nq, k), -np.inf, np.float32)
    labels = np.full((nq, k), -1, np.int64)
    outer = max(1, _COPY_ROWS_BYTES // max(1, m * vectors.row_bytes))  # rows read from the file at once
    inner = max(1, _GATHER_BYTES // max(1, m * vectors.row_bytes))  # rows gathered per matmul: cache-sized
    for lo in range(0, nq, outer):
        block, qb = candidates[lo : lo + outer], queries[lo : lo + outer]
        flat = block.ravel()
        valid = flat >= 0
        uniq, inv = np.unique(flat[valid], return_inverse=True)  # each row read once, in file order
        rows = vectors.take(uniq) if len(uniq) else np.zeros((1, vectors.dim), np.float32)
        pos = np.zeros(flat.shape, np.intp)
        pos[valid] = inv.ravel()
        exact = np.empty(block.shape, np.float32)
        for s in range(0, len(block), inner):
            gathered = rows[pos[s * m : (s + inner) * m]].reshape(-1, m, vectors.dim)
            exact[s : s + inner] = np.matmul(gathered, qb[s : s + inner, :, None])[:, :, 0]
        exact[~valid.reshape(block.shape)] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        scores[lo : lo + outer, : order.shape[1]] = np.take_along_axis(exact, order, axis=1)
        labels[lo : lo + outer, : order.shape[1]] = np.take_along_axis(block, order, axis=1)
    labels[~np.isfinite(scores)] = -1
    return scores, labels
