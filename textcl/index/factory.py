"""FAISS index factory strings: the ``auto`` rule, construction with ``IndexIDMap2`` and IVF/PQ training.

Every index uses inner product on L2-normalised vectors, i.e. cosine similarity.
"""
from __future__ import annotations

import math
import re

import numpy as np

from textcl.errors import ConfigError

DEFAULT_MEMORY_BUDGET = 4 * 2**30  # bytes of vectors + index structure (not the doc store)
FLAT_MAX_DOCS = 50_000
HNSW_MAX_DOCS = 2_000_000
HNSW_M = 32
# FAISS prints a warning below 39 training points per centroid and its k-means subsamples above 256.
MIN_TRAIN_PER_CENTROID = 39
TRAIN_PER_CENTROID = 64
DEFAULT_TRAIN = 65_536  # scalar quantisers (SQ8) estimate per-dimension ranges from this many


def _bytes_flat(n: int, dim: int) -> int:
    return n * (4 * dim + 8)  # float32 vector + int64 id in IndexIDMap2


def _bytes_hnsw(n: int, dim: int, m: int = HNSW_M) -> int:
    # level 0 keeps 2*M neighbour ids (int32); upper levels add ~1/M of that again.
    return n * (4 * dim + 8 + 2 * m * 4 + 2 * 4 + 16)


def ivf_nlist(n: int) -> int:
    """A power of two near 4*sqrt(n) (FAISS's guidance is 4-16 sqrt(n)), with >= 39 training points each."""
    target = 4 * math.sqrt(max(n, 1))
    nlist = 2 ** max(0, round(math.log2(target)))
    while nlist > 1 and n < MIN_TRAIN_PER_CENTROID * nlist:
        nlist //= 2
    return nlist


def choose_factory(n: int, dim: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> str:
    """The ``auto`` rule: pick a factory string from the corpus size ``n`` and a memory budget in bytes.

    1. ``n <= 50,000`` and the raw vectors fit: ``Flat`` (exact; brute force over 50k vectors is a few ms
       per query, so approximation buys nothing and costs recall).
    2. ``n <= 2,000,000`` and vectors plus HNSW links (~4d + 300 bytes each) fit: ``HNSW32`` (best
       recall/speed trade-off without training; deletions become tombstones).
    3. Otherwise an inverted file with ``nlist`` = power of two near 4*sqrt(n): ``IVF{nlist},Flat`` if the
       raw vectors fit, ``IVF{nlist},SQ8`` (1 byte per dimension) if that fits, else
       ``IVF{nlist},PQ{m}`` with the largest ``m`` dividing ``dim`` whose codes (m bytes) fit.
    """
    if n <= 0:
        raise ConfigError("factory", "auto needs at least one document")
    if n <= FLAT_MAX_DOCS and _bytes_flat(n, dim) <= memory_budget:
        return "Flat"
    if n <= HNSW_MAX_DOCS and _bytes_hnsw(n, dim) <= memory_budget:
        return f"HNSW{HNSW_M}"
    nlist = ivf_nlist(n)
    if _bytes_flat(n, dim) <= memory_budget:
        return f"IVF{nlist},Flat"
    if n * (dim + 8) <= memory_budget:
        return f"IVF{nlist},SQ8"
    fitting = [m for m in range(1, dim + 1) if dim % m == 0 and m <= 64 and n * (m + 8) <= memory_budget]
    if not fitting:
        raise ConfigError("memory_budget", f"{memory_budget:,} bytes cannot hold {n:,} vectors even as PQ1 codes")
    return f"IVF{nlist},PQ{max(fitting)}"


def parse_nlist(factory: str) -> int | None:
    match = re.search(r"IVF(\d+)", factory)
    return int(match.group(1)) if match else None


def min_train_size(factory: str) -> int:
    """The fewest vectors that train ``factory`` without FAISS's "please provide at least" warnings:
    39 per IVF list, and 39 per PQ codebook entry (2**nbits entries, nbits = 8 unless ``PQ{m}x{nbits}``)."""
    need = 0
    nlist = parse_nlist(factory)
    if nlist:
        need = MIN_TRAIN_PER_CENTROID * nlist
    pq = re.search(r"PQ(\d+)(?:x(\d+))?", factory)
    if pq:
        need = max(need, MIN_TRAIN_PER_CENTROID * 2 ** int(pq.group(2) or 8))
    return need


def train_size(factory: str, n: int) -> int:
    """How many of ``n`` vectors to train on: 64 per IVF list (in FAISS's 30-256 range), at least
    ``min_train_size`` (PQ codebooks need ~10k), at most ``n``."""
    nlist = parse_nlist(factory) or 0
    return min(n, max(TRAIN_PER_CENTROID * nlist, min_train_size(factory), DEFAULT_TRAIN))


def make_index(factory: str, dim: int):
    """A fresh, untrained ``IndexIDMap2`` around ``faiss.index_factory(dim, factory, METRIC_INNER_PRODUCT)``."""
    import faiss

    if factory.startswith("IDMap"):
        raise ConfigError("factory", f"{factory!r}: leave out the IDMap prefix; ids are mapped automatically")
    try:
        index = faiss.index_factory(dim, "IDMap2," + factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "invalid"
        raise ConfigError(
            "factory", f"{factory!r} is not a FAISS index_factory string ({first}); "
            "examples: Flat, HNSW32, IVF1024,Flat, IVF1024,PQ32, SQ8, OPQ32,IVF1024,PQ32, auto"
        ) from None
    _no_polysemous(index)
    return index


def _no_polysemous(index) -> None:
    """index_factory turns on polysemous training for PQ, which costs minutes and only serves Hamming-
    filtered search (never used here); switch it off."""
    import faiss

    while index is not None:
        index = faiss.downcast_index(index)
        if hasattr(index, "do_polysemous_training"):
            index.do_polysemous_training = False
        index = getattr(index, "index", None)


def check_trainable(factory: str, n: int) -> None:
    """Raise ConfigError when ``n`` vectors are too few to train ``factory``."""
    need = min_train_size(factory)
    nlist = parse_nlist(factory)
    if nlist and n < MIN_TRAIN_PER_CENTROID * nlist:
        suggest = ivf_nlist(n)
        raise ConfigError(
            "factory", f"{factory!r} needs at least {need:,} vectors to train ({MIN_TRAIN_PER_CENTROID} per IVF "
            f"list, FAISS's guidance); the corpus has {n:,}: use IVF{suggest} or Flat"
        )
    if need and n < 256:
        raise ConfigError("factory", f"{factory!r} needs at least 256 vectors to train its codebooks; got {n}")


def train(index, sample: np.ndarray, factory: str) -> None:
    """Train ``index`` on ``sample`` (m, d) float32 unit vectors when it needs training."""
    if index.is_trained:
        return
    check_trainable(factory, len(sample))
    index.train(np.ascontiguousarray(sample, dtype=np.float32))


def search_params(index, nprobe: int | None = None, ef_search: int | None = None, sel=None):
    """FAISS ``SearchParameters`` for ``index`` (possibly wrapped in IDMap2/PreTransform), or None."""
    import faiss

    base = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    ivf = None
    try:
        ivf = faiss.extract_index_ivf(index)
    except (RuntimeError, TypeError):
        pass
    if ivf is not None:
        params = faiss.SearchParametersIVF()
        if nprobe is not None:
            params.nprobe = int(nprobe)
        else:
            params.nprobe = ivf.nprobe
    elif isinstance(base, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW()
        params.efSearch = int(ef_search) if ef_search is not None else base.hnsw.efSearch
    elif sel is not None:
        params = faiss.SearchParameters()
    else:
        return None
    if sel is not None:
        params.sel = sel
    return params
