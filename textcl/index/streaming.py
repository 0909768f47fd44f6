"""Streaming build for corpora larger than memory, resumable after a kill.

Work happens in ``<out>.partial/`` beside the output folder:

1. the documents stream into ``docs.sqlite`` (integer ids 0..n-1 in input order);
2. chunk ``c`` (documents ``c*chunk_size .. (c+1)*chunk_size``) is embedded into the memmap
   ``vectors.f32`` (n, d) float32, flushed, and only then recorded in ``state.json`` as done;
3. the FAISS index is trained on a sample of the memmap and filled chunk by chunk;
4. the folder is saved atomically to ``<out>`` and ``<out>.partial/`` is removed.

A killed build, run again with the same arguments, keeps the documents and every finished chunk and
embeds only the rest; the result is identical to an uninterrupted build. The resume key is the factory,
chunk size, model and, when ``source`` is given, the input's resolved path, size and mtime: a rerun on
another (or a changed) input starts afresh.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from textcl._io import atomic_write_json, read_json
import textcl.index.factory as fx
from textcl.index.docstore import DocStore, Document
from textcl.index.encoding import encode_texts, encoder_dim, encoder_name
from textcl.index.errors import EmptyCorpusError
from textcl.index.faiss_index import DOCS_FILE, SearchIndex

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
                    source: str | os.PathLike | None = None) -> SearchIndex:
    """Build and save an index at ``out`` from an iterable of :class:`Document` without holding the corpus
    or its embeddings in memory (peak: one chunk of texts and vectors, plus the training sample).

    Returns the saved index, loaded with ``encoder``. With ``resume=False`` a leftover ``.partial`` folder
    is discarded. ``source``: the file or folder ``documents`` are read from; a leftover ``.partial`` is
    resumed only if it was built from the same, unchanged input (see :func:`input_fingerprint`). Without
    it, resuming trusts that ``documents`` are the same as before. Raises EmptyCorpusError for zero
    documents, DuplicateIdError for repeated ids.
    """
    out = Path(out)
    work = out.with_name(out.name + ".partial")
    model_name = model_name or encoder_name(encoder)
    config = {"factory": factory, "chunk_size": int(chunk_size), "model": model_name}
    if source is not None:
        config["input"] = input_fingerprint(source)
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
    done = int(state["done_chunks"])
    with _progress(n, min(done * chunk_size, n), "embedding", show_progress) as bar:
        for c in range(done, n_chunks):
            rows = store.iter_range(c * chunk_size, (c + 1) * chunk_size)
            vectors[c * chunk_size : c * chunk_size + len(rows)] = encode_texts(
                encoder, [d.text for _, d in rows], batch_size
            )
            vectors.flush()
            state["done_chunks"] = c + 1
            atomic_write_json(work / STATE, state)
            bar.update(len(rows))

    index = SearchIndex(dim, factory, encoder=encoder, model_name=model_name, memory_budget=memory_budget)
    if factory == "auto":
        index.factory = fx.choose_factory(n, dim, memory_budget)
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
    del vectors
    index._index = faiss_index
    index._store.close()
    index._store = store
    index.save(out)
    index.close()
    shutil.rmtree(work, ignore_errors=True)
    return SearchIndex.load(out, encoder=encoder)


def _read_state(work: Path) -> dict | None:
    try:
        return read_json(work / STATE)
    except (OSError, ValueError):
        return None
