"""Streaming build for corpora larger than memory, resumable after a kill.

Work happens in ``<out>.partial/`` beside the output folder:

1. the documents stream into ``docs.sqlite`` (integer ids 0..n-1 in input order);
2. chunk ``c`` (documents ``c*chunk_size .. (c+1)*chunk_size``) is embedded into the memmap
   ``vectors.f32`` (n, d) float32, flushed, and only then recorded in ``state.json`` as done;
3. the FAISS index is trained on a sample of the memmap and filled chunk by chunk (``on_disk``: shards of
   chunks whose inverted lists are merged into the folder's ``index.ivfdata``, see :mod:`textcl.index.ondisk`);
4. the folder is saved atomically to ``<out>`` and ``<out>.partial/`` is removed.

A killed build, run again with the same arguments, keeps the documents and every finished chunk and
embeds only the rest; the result is identical to an uninterrupted build. The resume key is the factory,
chunk size, model (a local folder by its absolute path) and, when ``source`` is given, the input's resolved
path, size and mtime: a rerun on another (or a changed) input, or with another model, starts afresh.

Under torchrun (``launch``), step 2 is shared: each rank embeds a contiguous run of whole chunks into its own
shard (:mod:`textcl.encode.shards`, resumable per shard), rank 0 copies the shards into ``vectors.f32`` and
goes on alone. A chunk is embedded the same way whichever rank embeds it, so the vectors, and the index, are
bit for bit those of one process. The world size joins the resume key.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from textcl._io import atomic_write_json, read_json
import textcl.encode.dist as _dist
from textcl.encode.dist import Launch
from textcl.encode.shards import ShardError, encode_shard, remove_shards, shard_bounds, shard_pieces
import textcl.index.factory as fx
import textcl.index.ondisk as ondisk
from textcl.index.docstore import DocStore, Document
from textcl.index.encoding import encode_documents, encoder_dim, encoder_name
from textcl.index.errors import EmptyCorpusError
from textcl.index.faiss_index import DOCS_FILE, SearchIndex, local_model

STATE = "state.json"
VECTORS = "vectors.f32"


def _batched(docs: Iterable[Document], size: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    # tqdm's rate and ETA are computed from the documents embedded in this run, not the resumed ones.
    return tqdm(total=total, initial=initial, desc=desc, unit="doc", disable=not enabled, dynamic_ncols=True)


def input_fingerprint(source: str | os.PathLike) -> dict:
    """Resolved path, size and mtime (ns) of an input file; for a BEIR folder, of its ``corpus.jsonl``."""
    path = Path(source).expanduser().resolve()
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        path = path / "corpus.jsonl"
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def build_streaming(documents: Iterable[Document], encoder, out: str | Path, factory: str = "Flat",
                    chunk_size: int = 10_000, batch_size: int = 64, resume: bool = True,
                    memory_budget: int = fx.DEFAULT_MEMORY_BUDGET, show_progress: bool = True,
                    model_name: str | None = None, seed: int = 0,
                    source: str | os.PathLike | None = None, launch: Launch | None = None,
                    on_disk: bool = False, server: dict | None = None) -> SearchIndex | None:
    """Build and save an index at ``out`` from an iterable of :class:`Document` without holding the corpus
    or its embeddings in memory (peak: one chunk of texts and vectors, plus the training sample).

    Returns the saved index, loaded with ``encoder``. With ``resume=False`` a leftover ``.partial`` folder
    is discarded. ``source``: the file or folder ``documents`` are read from; a leftover ``.partial`` is
    resumed only if it was built from the same, unchanged input (see :func:`input_fingerprint`). Without
    it, resuming trusts that ``documents`` are the same as before. Raises EmptyCorpusError for zero
    documents, DuplicateIdError for repeated ids.

    ``launch``: this process's place among those torchrun started (:func:`textcl.encode.launch_from_env`);
    every rank calls with the same arguments, rank 0 returns the index and the others None once their shard
    is embedded. Only rank 0 reads ``documents``.

    ``on_disk``: an IVF ``factory`` (``auto``: ``IVF{~4 sqrt(n)},SQ8``) whose inverted lists stay in the
    folder's ``index.ivfdata``, memory-mapped (:mod:`textcl.index.ondisk`); read-only once built.

    ``server``: ``{"server": URL, "model": name}`` when the vectors come from a server (``--server``): the
    manifest records it instead of a local model.
    """
    launch = launch or Launch()
    if on_disk and factory != "auto":  # a factory without inverted lists fails before the corpus is embedded
        ondisk.make_ivf(fx.parse_factory(factory).first, encoder_dim(encoder))
    out = Path(out)
    work = out.with_name(out.name + ".partial")
    # a local folder: absolute, in the resume key; with a server, only one given (the served name is no model)
    if not server and not model_name and isinstance(getattr(encoder, "server", None), dict):
        server = encoder.server  # a RemoteEncoder's vectors: the served name is no model to load
    model_name = local_model(model_name or (None if server else encoder_name(encoder)))
    config = {"factory": factory, "chunk_size": int(chunk_size), "model": model_name, **({"server": server} if server
                                                                                         else {})}
    if source is not None:
        config["input"] = input_fingerprint(source)
    if launch.distributed:
        config["world"] = launch.world
        if not launch.is_main:
            return _embed_worker_shard(work, launch, config, encoder, chunk_size, batch_size)
    state = _read_state(work)
    if state is None or not resume or state.get("config") != config or not state.get("ingested"):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        state = {"config": config, "ingested": False, "done_chunks": 0}
        atomic_write_json(work / STATE, state)

    store = DocStore(work / DOCS_FILE)
    if not state["ingested"]:
        for batch in _batched(documents, chunk_size):
            store.insert(batch)
            store.commit()
        n = len(store)
        if n == 0:
            store.close()
            shutil.rmtree(work, ignore_errors=True)
            raise EmptyCorpusError("cannot build an index from an empty corpus (0 documents)")
        state.update(ingested=True, n_docs=n, dim=encoder_dim(encoder))
        atomic_write_json(work / STATE, state)
    n, dim = int(state["n_docs"]), int(state["dim"])

    n_chunks = -(-n // chunk_size)
    vpath = work / VECTORS
    vectors = np.memmap(vpath, dtype=np.float32, mode="r+" if vpath.exists() else "w+", shape=(n, dim))
    if launch.distributed:
        _dist.barrier(launch)  # the documents are in the store: the other ranks start on their shards
        if int(state["done_chunks"]) < n_chunks:
            _embed_shard(work, launch, config, store, encoder, n, dim, chunk_size, batch_size, show_progress)
        _dist.barrier(launch)  # every shard is embedded
        if int(state["done_chunks"]) < n_chunks:
            for lo, hi, part in shard_pieces(work, launch.world, dim, n):
                for a in range(0, hi - lo, chunk_size):  # a chunk at a time: memory stays bounded
                    b = min(a + chunk_size, hi - lo)
                    vectors[lo + a : lo + b] = part[a:b]
            vectors.flush()
            state["done_chunks"] = n_chunks
            atomic_write_json(work / STATE, state)
            remove_shards(work, launch.world)
    done = int(state["done_chunks"])
    with _progress(n, min(done * chunk_size, n), "embedding", show_progress) as bar:
        for c in range(done, n_chunks):
            rows = store.iter_range(c * chunk_size, (c + 1) * chunk_size)
            vectors[c * chunk_size : c * chunk_size + len(rows)] = encode_documents(
                encoder, [d for _, d in rows], batch_size
            )
            vectors.flush()
            state["done_chunks"] = c + 1
            atomic_write_json(work / STATE, state)
            bar.update(len(rows))

    index = SearchIndex(dim, factory, encoder=encoder, model_name=model_name, memory_budget=memory_budget,
                        server=server)
    if on_disk:
        del vectors
        _index_on_disk(index, vpath, work, n, dim, chunk_size, seed, show_progress)
    else:
        _index_in_memory(index, vectors, n, dim, chunk_size, seed, memory_budget, show_progress)
        del vectors
    index._adopt_vectors(vpath, n)  # +rescore: the embeddings file becomes the index's (linked, not copied)
    index._store.close()
    index._store = store
    index.save(out)
    index.close()
    shutil.rmtree(work, ignore_errors=True)
    return SearchIndex.load(out, encoder=encoder)


def _index_in_memory(index: SearchIndex, vectors: np.ndarray, n: int, dim: int, chunk_size: int, seed: int,
                     memory_budget: int, show_progress: bool) -> None:
    """Step 3: train ``index``'s FAISS index on a sample of ``vectors`` (n, d) and fill it chunk by chunk."""
    index._resolve_auto(n)
    faiss_index = fx.make_index(index.factory, dim)
    if not faiss_index.is_trained:
        m = fx.train_size(index.factory, n)
        rows = np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))
        fx.train(faiss_index, np.ascontiguousarray(vectors[rows]), index.factory)
    with _progress(n, 0, "indexing", show_progress) as bar:
        for lo in range(0, n, chunk_size):
            hi = min(lo + chunk_size, n)
            faiss_index.add_with_ids(np.ascontiguousarray(vectors[lo:hi]), np.arange(lo, hi, dtype=np.int64))
            bar.update(hi - lo)
    index._index = faiss_index


def _index_on_disk(index: SearchIndex, vpath: Path, work: Path, n: int, dim: int, chunk_size: int, seed: int,
                   show_progress: bool) -> None:
    """Step 3 with ``on_disk``: train on the same sample as :func:`_index_in_memory`, fill shards of whole
    chunks and merge their lists into ``work/ondisk/index.ivfdata`` (:func:`textcl.index.ondisk.build_ondisk`),
    which ``index`` then maps. Chunks are read with plain reads, not the memmap, so the pages read do not stay
    in the resident set."""
    if index.factory == "auto":
        index.factory = ondisk.auto_factory(n)
    first = fx.parse_factory(index.factory).first
    rows = np.sort(np.random.default_rng(seed).choice(n, size=fx.train_size(first, n), replace=False))
    vectors = np.memmap(vpath, dtype=np.float32, mode="r", shape=(n, dim))
    sample = np.ascontiguousarray(vectors[rows])
    del vectors

    def chunks():
        with _progress(n, 0, "indexing", show_progress) as bar:
            for lo in range(0, n, chunk_size):
                hi = min(lo + chunk_size, n)
                block = np.fromfile(vpath, dtype=np.float32, count=(hi - lo) * dim, offset=lo * dim * 4)
                yield np.arange(lo, hi, dtype=np.int64), block.reshape(hi - lo, dim)
                bar.update(hi - lo)

    folder = work / "ondisk"
    shutil.rmtree(folder, ignore_errors=True)
    ondisk.build_ondisk(folder, first, sample, chunks())
    index._index = ondisk.read_ondisk(folder)
    index._lists = (folder / ondisk.LISTS_FILE).absolute()


def _embed_shard(work: Path, launch: Launch, config: dict, store: DocStore, encoder, n: int, dim: int,
                 chunk_size: int, batch_size: int, show_progress: bool) -> None:
    """This rank's contiguous run of whole chunks (:func:`shard_bounds` over the chunks), each embedded
    exactly as the single-process loop embeds it, into its shard."""
    c0, c1 = shard_bounds(-(-n // chunk_size), launch.world)[launch.rank]
    chunks = [(c * chunk_size, min((c + 1) * chunk_size, n)) for c in range(c0, c1)]

    def encode_rows(a: int, b: int) -> np.ndarray:
        return encode_documents(encoder, [d for _, d in store.iter_range(a, b)], batch_size)

    encode_shard(work, launch, chunks, dim, config, encode_rows, show_progress=show_progress and launch.is_main,
                 desc=f"embedding (rank 0 of {launch.world})")


def _embed_worker_shard(work: Path, launch: Launch, config: dict, encoder, chunk_size: int,
                        batch_size: int) -> None:
    """A rank other than 0: wait for rank 0 to ingest the documents, embed this rank's shard, wait for the
    others. The texts come from rank 0's doc store, opened read-only, rather than from the input: the store
    is the one record of which document is row i, and ``documents`` may be a one-shot iterator that only
    rank 0 consumes."""
    _dist.barrier(launch)
    state = _read_state(work)
    if state is None or state.get("config") != config:
        raise ShardError(f"{work / STATE}: rank 0 did not prepare this build (another input or settings "
                         "there); is the output on a file system every rank sees?")
    n, dim = int(state["n_docs"]), int(state["dim"])
    if int(state["done_chunks"]) < -(-n // chunk_size):  # else a previous run assembled the vectors already
        store = DocStore(work / DOCS_FILE, readonly=True)
        try:
            _embed_shard(work, launch, config, store, encoder, n, dim, chunk_size, batch_size, False)
        finally:
            store.close()
    _dist.barrier(launch)
    return None


def _read_state(work: Path) -> dict | None:
    try:
        return read_json(work / STATE)
    except (OSError, ValueError):
        return None
