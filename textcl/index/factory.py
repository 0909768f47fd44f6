"""FAISS index factory strings: the ``auto`` rule, construction with ``IndexIDMap2`` and IVF/PQ training.

Every index uses inner product on L2-normalised vectors, i.e. cosine similarity.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from textcl.errors import ConfigError

DEFAULT_MEMORY_BUDGET = 4 * 2**30  # bytes of vectors + index structure (not the doc store)
FLAT_MAX_DOCS = 50_000
#: search breadth unless a search passes its own (set_search_defaults); measured in benchmarks/RESULTS.md
DEFAULT_NPROBE = 64
DEFAULT_EF_SEARCH = 128
DEFAULT_K_FACTOR = 4
# FAISS prints a warning below 39 training points per centroid and its k-means subsamples above 256.
MIN_TRAIN_PER_CENTROID = 39
TRAIN_PER_CENTROID = 64
DEFAULT_TRAIN = 65_536  # scalar quantisers (SQ8) estimate per-dimension ranges from this many


def _bytes_flat(n: int, dim: int) -> int:
    return n * (4 * dim + 8)  # float32 vector + int64 id in IndexIDMap2


def _bytes_fastscan(n: int, dim: int, refine: bool) -> int:
    # 4-bit PQ codes (dim/4 bytes) + the int64 id in the inverted list + IndexIDMap2's id and reverse map
    # (~51 bytes measured), + the float32 vectors that an RFlat refinement keeps in memory.
    return n * (dim // 4 + 8 + 51 + (4 * dim if refine else 0))


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
       per query, so approximation buys little and costs recall).
    2. Otherwise, for an even ``dim``, an inverted file of 4-bit fast-scan PQ codes (``dim/2`` sub-quantisers,
       SIMD look-up tables) whose ``k x 4`` best candidates are re-ranked exactly, with ``nlist`` a power of two
       near 4*sqrt(n): ``IVF{nlist},PQ{dim/2}x4fs,RFlat`` when the float vectors fit in the budget beside the
       codes, else ``IVF{nlist},PQ{dim/2}x4fs+rescore4`` (the floats stay on disk, memory-mapped; RAM holds
       ~dim/4 + 59 bytes per vector). Searched with nprobe 64 (see :data:`DEFAULT_NPROBE`), this was the
       fastest configuration with recall@10 >= 0.95 at both sizes measured (benchmarks/RESULTS.md, "Search
       index"): 100k real MiniLM vectors, 0.957 at 6.8x exact Flat's batched QPS (HNSW32 at efSearch 64:
       0.957 at 4.2x); 1M, 0.967 at 31x (nprobe 32: 0.963 at 42x; HNSW32 at efSearch 128: 0.907 at 21x).
    3. An odd ``dim``: ``IVF{nlist},Flat`` if the raw vectors fit, ``IVF{nlist},SQ8`` (1 byte per dimension)
       if that fits, else ``IVF{nlist},PQ{m}`` with the largest ``m`` dividing ``dim`` whose codes fit.
    """
    if n <= 0:
        raise ConfigError("factory", "auto needs at least one document")
    if n <= FLAT_MAX_DOCS and _bytes_flat(n, dim) <= memory_budget:
        return "Flat"
    nlist = ivf_nlist(n)
    if dim % 2 == 0:
        if _bytes_fastscan(n, dim, refine=True) <= memory_budget:
            return f"IVF{nlist},PQ{dim // 2}x4fs,RFlat"
        if _bytes_fastscan(n, dim, refine=False) <= memory_budget:
            return f"IVF{nlist},PQ{dim // 2}x4fs+rescore{DEFAULT_K_FACTOR}"
    if _bytes_flat(n, dim) <= memory_budget:
        return f"IVF{nlist},Flat"
    if n * (dim + 8) <= memory_budget:
        return f"IVF{nlist},SQ8"
    fitting = [m for m in range(1, dim + 1) if dim % m == 0 and m <= 64 and n * (m + 8) <= memory_budget]
    if not fitting:
        raise ConfigError("memory_budget", f"{memory_budget:,} bytes cannot hold {n:,} vectors even as PQ1 codes")
    return f"IVF{nlist},PQ{max(fitting)}"


def removes_exactly(index) -> bool:
    """Whether ``index.remove_ids`` keeps every other id right. False for inverted files: IndexIDMap2
    compacts its id table on removal, as if the index below renumbered its vectors the way a flat index
    does, but an IVF keeps its internal ids, so every id after a removed one would point at the wrong
    vector (measured: after deleting 3 of 3,000 vectors, a query for vector 103 returned 106). Those
    indexes keep deleted ids as tombstones instead."""
    import faiss

    try:
        return faiss.extract_index_ivf(index) is None
    except (RuntimeError, TypeError):
        return True


def set_search_defaults(index) -> None:
    """Give a new index the search breadth that searches use unless they pass their own: IVF ``nprobe``
    :data:`DEFAULT_NPROBE` (at most nlist), HNSW ``efSearch`` :data:`DEFAULT_EF_SEARCH`, refinement
    ``k_factor`` :data:`DEFAULT_K_FACTOR`. FAISS's own defaults (nprobe 1, efSearch 16) kept 0.74 and 0.67 of
    the exact top 10 at 1M vectors. The values are saved in the index file."""
    import faiss

    try:
        ivf = faiss.extract_index_ivf(index)
    except (RuntimeError, TypeError):
        ivf = None
    if ivf is not None:
        ivf.nprobe = min(int(ivf.nlist), DEFAULT_NPROBE)
    node = index
    while node is not None:
        node = faiss.downcast_index(node)
        if isinstance(node, faiss.IndexRefine):
            node.k_factor = float(DEFAULT_K_FACTOR)
            node = node.base_index
            continue
        if isinstance(node, faiss.IndexHNSW):
            node.hnsw.efSearch = DEFAULT_EF_SEARCH
        node = getattr(node, "index", None)


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


DEFAULT_RESCORE = 10  # candidates per result for a bare "+rescore"; see benchmarks/bench_compressed.py
FACTORY_FORMS = ("Flat, HNSW32, IVF1024,Flat, IVF1024,PQ32, SQ8 (or sq8), OPQ32,IVF1024,PQ32, binary, auto; and a "
                 "compressed first pass rescored with the float vectors: binary+rescore, sq8+rescore4, "
                 "IVF1024,SQ8+rescore, HNSW32,SQ8+rescore10")


@dataclass(frozen=True)
class FactorySpec:
    """A factory string taken apart: ``first`` (the first pass: a FAISS ``index_factory`` string, or
    ``"binary"``) and ``rescore`` (candidates fetched per result and re-ranked with the float32 vectors kept
    on disk; None when there is no ``+rescore`` suffix and the first pass's scores are final)."""

    first: str
    rescore: int | None = None

    @property
    def binary(self) -> bool:
        return self.first == "binary"


def parse_factory(factory: str) -> FactorySpec:
    """Split ``"<first pass>[+rescore[<r>]]"``. ``binary`` (1 bit per dimension, Hamming distance) and ``sq8``
    (FAISS ``SQ8``) are accepted in any case; a bare ``+rescore`` means ``DEFAULT_RESCORE`` candidates per result.
    Raises ConfigError listing the valid forms."""
    if not isinstance(factory, str) or not factory.strip():
        raise ConfigError("factory", f"expected a factory string, got {factory!r}; valid forms: {FACTORY_FORMS}")
    first, rescore = factory, None
    if "+rescore" in factory:  # other '+' are FAISS's own (IVF4096,PQ8+16: PQ with a re-ranking PQ)
        match = re.fullmatch(r"(.+?)\+rescore(\d*)", factory)
        if match is None:
            raise ConfigError("factory", f"{factory!r}: +rescore must end the string, as +rescore or +rescore<r> (r "
                              f"candidates per result, e.g. binary+rescore4); valid forms: {FACTORY_FORMS}")
        first, rescore = match.group(1), int(match.group(2) or DEFAULT_RESCORE)
        if rescore < 1:
            raise ConfigError("factory", f"{factory!r}: the rescoring factor must be >= 1, got {rescore}")
        if first == "auto":
            raise ConfigError("factory", f"{factory!r}: auto picks its own index; name the first pass, e.g. "
                              "binary+rescore or IVF1024,SQ8+rescore")
    if first.lower() in ("binary", "sq8"):
        first = first.lower() if first.lower() == "binary" else "SQ8"
    return FactorySpec(first, rescore)


def check_factory(factory: str, dim: int) -> FactorySpec:
    """The cheap checks of :func:`make_index`, to run before any encoding: the syntax and, for ``binary``, that
    ``dim`` is a multiple of 8."""
    spec = parse_factory(factory)
    if spec.binary and dim % 8:
        raise ConfigError("factory", f"{factory!r} packs 8 dimensions per byte: the dimension must be a multiple "
                          f"of 8, got {dim}")
    return spec


def make_index(factory: str, dim: int):
    """A fresh, untrained ``IndexIDMap2`` around ``faiss.index_factory(dim, factory, METRIC_INNER_PRODUCT)``;
    for ``binary``, a :class:`~textcl.index.compressed.BinaryIndex`. A ``+rescore`` suffix (see
    :func:`parse_factory`) builds its first pass; rescoring is :class:`~textcl.index.SearchIndex`'s job."""
    import faiss

    spec = check_factory(factory, dim)
    if spec.binary:
        from textcl.index.compressed import BinaryIndex

        return BinaryIndex.new(dim)
    if spec.first.startswith("IDMap"):
        raise ConfigError("factory", f"{factory!r}: leave out the IDMap prefix; ids are mapped automatically")
    try:
        index = faiss.index_factory(dim, "IDMap2," + spec.first, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "invalid"
        raise ConfigError(
            "factory", f"{spec.first!r} is not a FAISS index_factory string ({first}); valid forms: {FACTORY_FORMS}"
        ) from None
    if spec.rescore is not None:
        from textcl.index.compressed import is_lossless

        if is_lossless(index):
            raise ConfigError("factory", f"{factory!r}: +rescore is pointless on {spec.first!r}, which already "
                              "scores with the exact float32 vectors; use a compressed first pass such as "
                              "binary+rescore, SQ8+rescore or IVF1024,SQ8+rescore")
    _no_polysemous(index)
    set_search_defaults(index)
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


def search_params(index, nprobe: int | None = None, ef_search: int | None = None, sel=None,
                  k_factor: int | None = None):
    """FAISS ``SearchParameters`` for ``index`` (possibly wrapped in IDMap2/PreTransform), or None.

    For a refined index (``...,RFlat`` / ``...,Refine(...)``), the IVF/HNSW parameters go to its base index
    and ``k_factor`` (candidates re-ranked per result, default the index's) to the refinement."""
    import faiss

    base = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    if isinstance(base, faiss.IndexRefine):
        # IndexIDMap2 translates only the outer selector; the base index sees internal positions. They equal
        # textcl's integer ids because ids are assigned in sequence and a refined index never removes a vector
        # (deletions are tombstones: IndexRefine has no remove_ids), so the same selector serves both.
        refine = faiss.IndexRefineSearchParameters()
        refine.k_factor = float(k_factor) if k_factor is not None else base.k_factor
        inner = search_params(faiss.downcast_index(base.base_index), nprobe, ef_search, sel)
        if inner is not None:
            refine.base_index_params = inner
            refine._inner = inner  # keep the Python object alive as long as the outer one
        if sel is not None:
            refine.sel = sel
        return refine
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
