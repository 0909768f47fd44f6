"""``SearchIndex``: a FAISS index over unit-normalised embeddings plus a SQLite doc store.

An index folder holds three files (four with ``+rescore``), written under temporary names and then renamed as
a whole::

    index.faiss    faiss.write_index of an IndexIDMap2 (int64 ids -> vectors); for ``binary``,
                   faiss.write_index_binary of an IndexBinaryIDMap
    docs.sqlite    the DocStore: int64 id -> document id, text, metadata JSON
    vectors.f32    ``+rescore`` factories only: the float32 vectors, row i = int64 id i (see index/compressed.py)
    manifest.json  model, dim, normalize, factory, rescore, counts, sha256 of index.faiss and docs.sqlite,
                   the vector file's rows and partial checksum, bytes per vector in memory and on disk

The model: a hub name as given; a local model folder by its absolute path (``model``) and by its path
relative to the index folder (``model_relative``), so that the folder can be searched from any working folder
and moved together with its model. :func:`index_model` finds it again.

An on-disk IVF index (``build_streaming(..., on_disk=True)``, see index/ondisk.py) adds ``index.ivfdata``, its
inverted lists, memory-mapped read-only; index.faiss is then the bare IVF header (ids live in the lists).

Scores are inner products of L2-normalised vectors (cosine similarity), higher is better.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from textcl._io import atomic_dir, atomic_write_json, read_json, recover_dir
from textcl.errors import ConfigError, DataFormatError, ModelNotFoundError
import textcl.index.factory as fx
import textcl.index.ondisk as ondisk
from textcl.index.compressed import (BinaryIndex, VectorFile, check_vector_file, memory_bytes_per_vector,
                                     rescore as rescore_candidates)
from textcl.index.docstore import DocStore, Document
from textcl.index.encoding import (check_dim, encode_documents, encode_texts, encoder_dim, encoder_name,
                                   normalize_rows)
from textcl.index.errors import EmptyCorpusError, EmptyQueryError, IndexCorruptedError, IndexStateError

MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
DOCS_FILE = "docs.sqlite"
FORMAT = "textcl-index"
FORMAT_VERSION = 1


def check_queries(queries: Sequence[str]) -> None:
    """Raise :class:`EmptyQueryError` naming (by its position) the first query that is empty or whitespace."""
    for i, q in enumerate(queries):
        if isinstance(q, str) and not q.strip():
            raise EmptyQueryError(f"queries[{i}] is empty (or only whitespace)")


@dataclass(frozen=True)
class Hit:
    """One search result: the document id, its cosine score, its text and its metadata."""

    id: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "text": self.text, "metadata": self.metadata}


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def local_model(name: str | None) -> str | None:
    """``name`` as an absolute path when it names an existing local folder (a model loaded from disk, maybe
    by a path relative to the working folder), else unchanged (a hub name, or None)."""
    if not name:
        return name
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def _model_relative(model: str | None, folder: Path) -> str | None:
    """The model folder's path relative to the index folder ``folder``, when ``model`` is a local folder."""
    if not model or not Path(model).is_absolute() or not Path(model).is_dir():
        return None
    try:
        return Path(os.path.relpath(Path(model).resolve(), folder.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return None


_WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.onnx")


def model_fingerprint(folder: str | os.PathLike | None) -> str | None:
    """A cheap identity of a local model folder: its config and, for each weight file, the size and 16
    evenly spaced 64 KiB samples (two fine-tunes of one architecture differ there), hashed. None for a hub
    name or a folder without weight files."""
    if not folder or not Path(folder).expanduser().is_dir():
        return None
    folder = Path(folder).expanduser()
    files = sorted(f for pattern in _WEIGHTS for f in folder.glob(pattern) if f.is_file())
    if not files:
        return None
    digest = hashlib.blake2b(digest_size=16)
    for meta in ("config.json", "recommender.json"):  # a sequence recommender's catalogue and text encoder
        if (folder / meta).is_file():
            digest.update((folder / meta).read_bytes())
    for f in files:
        size = f.stat().st_size
        digest.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            for i in range(16):
                fh.seek(size * i // 16)
                digest.update(fh.read(1 << 16))
    return digest.hexdigest()


def _model_candidates(path: Path, manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, where it comes from) for each place a local model may be, in the order they are tried."""
    name, relative = manifest.get("model"), manifest.get("model_relative")
    if relative is not None:
        # where it was first: an index copied beside another model folder must not pick that one up while its
        # own is still there; relative when the two moved together (the recorded place is gone)
        found = [(str((path.resolve() / relative).resolve()), f"relative to the index folder: {relative}")]
        return ([(name, "where it was when the index was saved")] if name else []) + found
    return [(name, f"as recorded, from the current folder {Path.cwd()}")]


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~", os.sep)) or name.count("/") > 1 or os.path.isabs(name)


def _is_the_model(candidate: str, manifest: dict[str, Any]) -> bool:
    """``candidate`` is a folder and, when the manifest recorded the model's fingerprint, the same model."""
    if not Path(candidate).expanduser().is_dir():
        return False
    recorded = manifest.get("model_fingerprint")
    return recorded is None or model_fingerprint(candidate) == recorded


def _find_model(path: Path, manifest: dict[str, Any]) -> str | None:
    """The first of :func:`_model_candidates` that is the index's model (a folder, with the recorded
    fingerprint when there is one); a hub name as recorded; else None."""
    name = manifest.get("model")
    if not name:
        return None
    for candidate, _ in _model_candidates(path, manifest):
        if _is_the_model(candidate, manifest):
            return candidate
    if manifest.get("model_relative") is None and not _looks_like_path(name):
        return name  # a hub name
    return None


def index_model(path: str | os.PathLike, manifest: dict[str, Any] | None = None, flag: str = "--model") -> str:
    """The model to search the index folder ``path`` with: a hub name as recorded; a local folder where it was
    when the index was saved, else at its path relative to the index folder (the two moved together);
    manifests saved before the relative path was recorded: the recorded string, from the working folder.

    Raises :class:`~textcl.errors.ConfigError` (``flag``: the option that gives the model instead, ``--model``
    of ``textcl index search``, ``--index-model`` of ``textcl serve``) when the manifest records no model (saying
    how to search an index built through a server, ``--server``), and
    :class:`~textcl.errors.ModelNotFoundError` listing every path tried when the folder is in none of them.
    """
    path = Path(path)
    manifest = SearchIndex.read_manifest(path) if manifest is None else manifest
    server = manifest.get("server")
    if not manifest.get("model") and isinstance(server, dict):
        serve = ("pass the folder of the model that server serves as --index-model" if flag == "--index-model"
                 else "build it with --model naming the folder that server serves (a model folder is recorded, a "
                 "served name is not)")
        raise ConfigError(flag, f"{path} holds vectors from the server {server.get('server')} (its model "
                          f"{server.get('model')!r}), not from a local model: search it with `textcl index search` "
                          f"(through that server); to serve it, {serve}")
    if not manifest.get("model"):
        raise ConfigError(flag, f"{path} records no model; pass {flag} (a model folder or hub name)")
    found = _find_model(path, manifest)
    if found is None:
        tried = "; ".join(f"{c} ({why}" + ("; another model there: its weights differ from the index's)" if
                                            Path(c).expanduser().is_dir() else ")")
                          for c, why in _model_candidates(path, manifest))
        raise ModelNotFoundError(f"{path / MANIFEST}: the index's model folder is missing; tried {tried}. Pass the "
                                 f"model it was built with as {flag} (a model folder or hub name)")
    return found


def _as_documents(texts: Sequence[str], ids: Sequence[str] | None, metadata: Sequence[dict] | None) -> list[Document]:
    texts = [texts] if isinstance(texts, str) else list(texts)
    if ids is None:
        raise ConfigError("ids", "give one id per text (use SearchIndex.build to number documents 0..n-1)")
    ids = [str(i) for i in ids]
    if len(ids) != len(texts):
        raise ConfigError("ids", f"{len(ids)} ids for {len(texts)} texts")
    if metadata is not None and len(metadata) != len(texts):
        raise ConfigError("metadata", f"{len(metadata)} metadata entries for {len(texts)} texts")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ConfigError("texts", f"text {i} (id {ids[i]!r}) is {type(t).__name__}, not str")
    return [Document(i, t, dict(metadata[n] or {}) if metadata is not None else {}) for n, (i, t) in
            enumerate(zip(ids, texts))]


class SearchIndex:
    """Semantic search over documents: FAISS for vectors, SQLite for ids, texts and metadata.

    Build with :meth:`build` (in memory) or :func:`textcl.index.build_streaming` (larger than memory),
    or :meth:`load` a saved folder. ``encoder`` is any object with ``encode(list[str]) -> (n, d) array``;
    it is needed for text queries and for :meth:`add`/:meth:`upsert` without precomputed embeddings.

    Deletion: flat indexes (Flat, SQ*, PQ*, binary) drop the vector; HNSW and refined indexes cannot, and an
    inverted file (IVF*) under IndexIDMap2 would lose its id mapping (see ``factory.removes_exactly``), so there
    the id becomes a tombstone that is filtered out of every search by an ``IDSelector`` (and never reused).
    An on-disk IVF index (``build_streaming(..., on_disk=True)``) is read-only after the build: deletions become
    tombstones, and ``add``/``upsert`` raise IndexStateError.

    Compressed vectors: ``factory="binary"`` keeps 1 bit per dimension and ranks by Hamming distance;
    ``"binary+rescore"``, ``"SQ8+rescore4"``, ``"IVF1024,SQ8+rescore"`` ... fetch ``k * r`` candidates from the
    compressed first pass and re-rank them by exact inner product with the float32 vectors, which stay on disk
    (``vectors.f32``, memory-mapped): RAM holds only the codes. See :mod:`textcl.index.compressed`.
    """

    def __init__(self, dim: int, factory: str = "Flat", encoder=None, model_name: str | None = None,
                 memory_budget: int = fx.DEFAULT_MEMORY_BUDGET, server: dict | None = None):
        self.dim = int(dim)
        spec = fx.check_factory(factory, self.dim) if factory != "auto" else fx.FactorySpec("auto")
        self.factory = factory
        self.rescore = spec.rescore  # candidates per result re-ranked with the float vectors; None: no rescoring
        self.encoder = encoder
        # a local folder by its absolute path: the working folder may change before the save
        #: ``{"server": URL, "model": name}``: the vectors came from a server (``--server``), not a local model
        if not server and not model_name and isinstance(getattr(encoder, "server", None), dict):
            server = encoder.server  # a RemoteEncoder's vectors: the served name is no model to load
        if server is not None and not (isinstance(server, dict) and isinstance(server.get("server"), str)
                                       and isinstance(server.get("model"), (str, type(None)))):
            raise ConfigError("server", f'expected {{"server": URL, "model": name or None}}, got {server!r:.100}')
        self.server = dict(server) if server else None
        fallback = encoder_name(encoder) if encoder is not None and not server else None
        self.model_name = local_model(model_name or fallback)
        self._fingerprint: tuple[str | None, str | None] | None = None  # (model_name, its fingerprint)
        #: an index built through a server: probe texts and their vectors, to check a substitute model against
        self.probe: dict | None = None
        self.memory_budget = memory_budget
        self._index = None  # created (and trained) on the first add
        self._workdir = Path(tempfile.mkdtemp(prefix="textcl-index-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self._workdir), True)
        self._store = DocStore(self._workdir / DOCS_FILE)
        self._source: Path | None = None  # folder loaded from, while the store is still read-only there
        self._vecfile = VectorFile(self._workdir, self.dim) if self.rescore else None
        self._disk_bytes: int | None = None  # index.faiss + vectors.f32 of the last save or load
        self._lists: Path | None = None  # on-disk IVF (index/ondisk.py): the lists file self._index maps (absolute)

    # ---------------------------------------------------------------- building
    @classmethod
    def build(cls, texts: Sequence[str], ids: Sequence[str] | None = None, metadata: Sequence[dict] | None = None,
              encoder=None, factory: str = "Flat", embeddings: np.ndarray | None = None, batch_size: int = 64,
              memory_budget: int = fx.DEFAULT_MEMORY_BUDGET, model_name: str | None = None,
              show_progress: bool = False) -> "SearchIndex":
        """Index ``texts`` (n) with ``ids`` (n strings; default "0".."n-1") and optional ``metadata`` (n dicts).

        ``embeddings`` (n, d) skips encoding. ``factory`` is a FAISS factory string or ``"auto"``
        (see :func:`textcl.index.factory.choose_factory`). Raises EmptyCorpusError for zero texts and
        DuplicateIdError for repeated ids.
        """
        texts = list(texts)
        if not texts:
            raise EmptyCorpusError("cannot build an index from an empty corpus (0 documents)")
        ids = [str(i) for i in range(len(texts))] if ids is None else ids
        if embeddings is None:
            if encoder is None:
                raise ConfigError("encoder", "give an encoder or precomputed embeddings")
            dim = encoder_dim(encoder)
        else:
            dim = int(np.asarray(embeddings).shape[1])
        index = cls(dim, factory, encoder=encoder, model_name=model_name, memory_budget=memory_budget)
        index.add(texts, ids, metadata, embeddings=embeddings, batch_size=batch_size, show_progress=show_progress)
        return index

    def _vectors(self, docs: Sequence[Document], embeddings, batch_size: int, show_progress: bool) -> np.ndarray:
        if embeddings is not None:
            vecs = np.array(embeddings, dtype=np.float32, copy=True, order="C")
            if vecs.shape != (len(docs), self.dim):
                raise ConfigError("embeddings", f"shape {vecs.shape}, expected ({len(docs)}, {self.dim})")
            return normalize_rows(vecs)
        if self.encoder is None:
            raise ConfigError("encoder", "this index has no encoder: load it with one, or pass embeddings")
        vecs = encode_documents(self.encoder, docs, batch_size, show_progress)
        if vecs.shape[1] != self.dim:
            check_dim(self.encoder, self.dim, "add")
        return vecs

    def _ensure_index(self, sample: np.ndarray) -> None:
        """Create the FAISS index on first use, resolving ``auto`` and training on (a sample of) ``sample``."""
        if self._index is not None:
            return
        self._resolve_auto(len(sample))
        index = fx.make_index(self.factory, self.dim)
        if not index.is_trained:
            m = fx.train_size(self.factory, len(sample))
            rows = np.random.default_rng(0).choice(len(sample), size=m, replace=False) if m < len(sample) else None
            fx.train(index, sample if rows is None else sample[np.sort(rows)], self.factory)
        self._index = index

    def _resolve_auto(self, n: int) -> None:
        """Replace ``auto`` by the factory it picks for ``n`` vectors, with what that factory needs: for a
        ``+rescore`` pick, the factor and the float vector file."""
        if self.factory != "auto":
            return
        self.factory = fx.choose_factory(n, self.dim, self.memory_budget)
        self.rescore = fx.check_factory(self.factory, self.dim).rescore
        if self.rescore and self._vecfile is None:
            self._vecfile = VectorFile(self._workdir, self.dim)

    def _writable_store(self) -> DocStore:
        """Copy-on-write: a loaded store is read-only in its folder until the first change."""
        if self._store.readonly:
            target = self._workdir / DOCS_FILE
            self._store.backup_to(target)
            self._store.close()
            self._store = DocStore(target)
        return self._store

    def add(self, texts: Sequence[str], ids: Sequence[str], metadata: Sequence[dict] | None = None,
            embeddings: np.ndarray | None = None, batch_size: int = 64, show_progress: bool = False) -> None:
        """Add new documents. Raises DuplicateIdError (and adds nothing) if an id exists or repeats."""
        if self._lists is not None:
            raise ondisk.read_only_error("add documents")
        docs = _as_documents(texts, ids, metadata)
        if not docs:
            return
        store = self._writable_store()
        # Check ids before the (slow) encoding; the insert below re-checks inside the transaction.
        store.insert(docs)
        store.rollback()
        self._insert(docs, self._vectors(docs, embeddings, batch_size, show_progress))

    def _insert(self, docs: list[Document], vecs: np.ndarray, replace: bool = False) -> None:
        """Store ``docs`` and add their (normalised) vectors, all or nothing. ``replace``: documents with
        the same ids are removed in the same transaction, and their vectors only once the new ones are in,
        so that a failure leaves them as they were."""
        store = self._writable_store()
        self._ensure_index(vecs)
        try:
            replaced = store.remove([d.id for d in docs], missing_ok=True) if replace else []
            int_ids = store.insert(docs)  # consecutive: next_int_id, next_int_id + 1, ...
            if self._vecfile is not None:  # first, so a failure leaves only rows past the valid ones
                self._vecfile.write(int_ids[0], vecs)
            self._index.add_with_ids(vecs, np.asarray(int_ids, dtype=np.int64))
        except BaseException:
            store.rollback()
            if self._vecfile is not None:  # the rows written for the failed add are not part of the index
                self._vecfile.rows = min(self._vecfile.rows, store.next_int_id())
            raise
        self._drop_vectors(replaced)
        store.commit()

    def delete(self, ids: Iterable[str], missing_ok: bool = False) -> int:
        """Remove documents by id; return how many were removed. Unknown ids raise UnknownIdError
        unless ``missing_ok``. A deleted id never appears in a search result again."""
        store = self._writable_store()
        int_ids = store.remove([str(i) for i in ids], missing_ok=missing_ok)
        self._drop_vectors(int_ids)
        store.commit()
        return len(int_ids)

    def _drop_vectors(self, int_ids: list[int]) -> None:
        """Remove the vectors of removed documents, or keep their ids as tombstones (uncommitted)."""
        if not int_ids or self._index is None:
            return
        store = self._writable_store()
        if self._lists is not None or not fx.removes_exactly(self._index):
            # on-disk lists are mapped read-only; an IVF under IndexIDMap2 would lose its id mapping
            store.add_tombstones(int_ids)
            return
        try:
            self._index.remove_ids(np.asarray(int_ids, dtype=np.int64))
        except RuntimeError:  # HNSW and friends cannot remove: keep a tombstone
            store.add_tombstones(int_ids)

    def upsert(self, texts: Sequence[str], ids: Sequence[str], metadata: Sequence[dict] | None = None,
               embeddings: np.ndarray | None = None, batch_size: int = 64) -> None:
        """Add documents, replacing (text, metadata and vector) any that already exist under the same id.

        All or nothing: the texts are encoded first, and the old documents are removed in the transaction
        that inserts the new ones; if anything fails, the index is unchanged."""
        if self._lists is not None:
            raise ondisk.read_only_error("upsert documents")
        docs = _as_documents(texts, ids, metadata)
        if len({d.id for d in docs}) != len(docs):
            self._writable_store().insert(docs)  # raises DuplicateIdError naming the repeated id
        if not docs:
            return
        vecs = self._vectors(docs, embeddings, batch_size, False)
        self._insert(docs, vecs, replace=True)

    # ---------------------------------------------------------------- searching
    def __len__(self) -> int:
        return len(self._store)

    def encode_documents(self, docs: Sequence[Document], batch_size: int = 64) -> np.ndarray:
        """(len(docs), dim) unit rows: ``docs`` as :meth:`add` embeds them (by id and text for an encoder with
        ``encode_documents``, else by text; see :func:`~textcl.index.encoding.encode_documents`)."""
        return self._vectors(list(docs), None, batch_size, False)

    def encode_queries(self, queries: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if self.encoder is None:
            raise ConfigError("encoder", "text queries need an encoder: SearchIndex.load(path, encoder=...)")
        vecs = encode_texts(self.encoder, list(queries), batch_size)
        if vecs.shape[1] != self.dim:
            check_dim(self.encoder, self.dim, "search")
        return vecs

    def _rescore_factor(self, rescore: int | None) -> int | None:
        if rescore is None:
            return self.rescore
        if self._vecfile is None:
            raise ConfigError("rescore", f"index {self.factory!r} keeps no float vectors to rescore with; build it "
                              "with a compressed first pass and +rescore, e.g. sq8+rescore, binary+rescore or IVF1024,SQ8+rescore")
        if isinstance(rescore, bool) or not isinstance(rescore, (int, np.integer)) or rescore < 0:
            raise ConfigError("rescore", f"expected an integer >= 0 (0: the first pass's scores), got {rescore!r}")
        return int(rescore) or None

    def search_vectors(self, queries: np.ndarray, k: int = 10, nprobe: int | None = None,
                       ef_search: int | None = None, *, among: Sequence[int] | None = None,
                       rescore: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw search: ``queries`` (nq, d) -> (scores (nq, k) float32, int64 ids (nq, k)); -1 pads missing.

        ``among``: search only these integer ids, e.g. those of a doc store query that filters on metadata,
        ``index.store.query("SELECT int_id FROM docs WHERE json_extract(metadata, '$.lang') = 'en'")``.
        ``rescore`` (``+rescore`` indexes): candidates per result for this call; 0 returns the first pass's own
        (approximate) scores. Default: the factory's factor.
        """
        if self._index is None or len(self._store) == 0:
            raise IndexStateError("the index is empty: build it or add documents before searching")
        if k < 1:
            raise ConfigError("k", f"must be >= 1, got {k}")
        r = self._rescore_factor(rescore)
        q = normalize_rows(np.array(queries, dtype=np.float32, copy=True, order="C").reshape(-1, self.dim))
        k_eff = min(int(k), int(self._index.ntotal))
        k_first = min(k_eff * r, int(self._index.ntotal)) if r else k_eff
        tombstones = self._store.tombstones()
        sel = None
        if among is not None:
            import faiss

            allowed = np.setdiff1d(np.asarray(list(among), dtype=np.int64), np.asarray(tombstones, dtype=np.int64))
            sel = faiss.IDSelectorBatch(allowed)
        elif tombstones:
            import faiss

            sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.asarray(tombstones, dtype=np.int64)))
        if isinstance(self._index, BinaryIndex):
            params = BinaryIndex.params(sel)
        else:
            params = fx.search_params(self._index, nprobe, ef_search, sel)
        scores, labels = self._index.search(q, k_first, params=params) if params is not None else \
            self._index.search(q, k_first)
        if r:
            scores, labels = rescore_candidates(q, labels, self._vecfile, k_eff)
        if k_eff < k:
            pad = k - k_eff
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            labels = np.pad(labels, ((0, 0), (0, pad)), constant_values=-1)
        return scores, labels

    def search(self, queries: str | Sequence[str] | np.ndarray, k: int = 10, nprobe: int | None = None,
               ef_search: int | None = None, batch_size: int = 64, rescore: int | None = None) -> list[list[Hit]]:
        """Top-``k`` documents for each query, best first: a list (one per query) of lists of :class:`Hit`.

        ``queries``: texts (encoded with the index's encoder) or an (nq, d) array. A query gets fewer than
        ``k`` hits when the index holds fewer documents (k > ndocs returns what exists). ``nprobe`` (IVF) and
        ``ef_search`` (HNSW) trade speed for recall for this call only, and so does ``rescore`` (``+rescore``
        indexes: candidates per result re-ranked exactly; 0: none). An empty or whitespace-only text query
        raises :class:`EmptyQueryError` (``queries[2] is empty (or only whitespace)``).
        """
        if isinstance(queries, str):
            if not queries.strip():
                raise EmptyQueryError("the query is empty (or only whitespace)")
            queries = [queries]
        if isinstance(queries, np.ndarray):
            vecs = queries
        else:
            queries = list(queries)
            check_queries(queries)
            if self._index is None or len(self._store) == 0:
                raise IndexStateError("the index is empty: build it or add documents before searching")
            vecs = self.encode_queries(queries, batch_size)
        scores, labels = self.search_vectors(vecs, k, nprobe, ef_search, rescore=rescore)
        docs = self._store.fetch(labels.ravel().tolist())
        return [
            [Hit(docs[i].id, float(s), docs[i].text, docs[i].metadata) for s, i in zip(srow, lrow) if i in docs]
            for srow, lrow in zip(scores, labels)
        ]

    def get(self, doc_id: str) -> Document | None:
        return self._store.get(str(doc_id))

    @property
    def store(self) -> DocStore:
        """The SQLite doc store, e.g. ``index.store.query("SELECT COUNT(*) FROM docs")``."""
        return self._store

    # ---------------------------------------------------------------- persistence
    def _probe(self) -> dict | None:
        """The probe of an index built through a server, made with that server's encoder at the first save (a
        loaded index keeps its manifest's; another encoder makes none)."""
        if self.probe is None and self.server and getattr(self.encoder, "server", None) == self.server:
            from textcl.index.probe import make_probe

            self.probe = make_probe(self.encoder)
        return self.probe

    def _model_fingerprint(self) -> str | None:
        """The model's fingerprint, computed once per model name (a loaded index keeps its manifest's)."""
        if self._fingerprint is None or self._fingerprint[0] != self.model_name:
            self._fingerprint = (self.model_name, model_fingerprint(self.model_name))
        return self._fingerprint[1]

    def info(self) -> dict[str, Any]:
        """The manifest's description of the index. ``memory_bytes_per_vector``: codes + id map (+ IVF list ids or
        HNSW links) in RAM; ``disk_bytes_per_vector``: index.faiss + vectors.f32 over the vectors, as of the
        last save or load (the doc store is not counted)."""
        n = int(self._index.ntotal) if self._index is not None else 0
        out = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": self.model_name,
            "dim": self.dim,
            "normalize": True,
            "metric": "inner_product",
            "factory": self.factory,
            "n_docs": len(self._store),
            "n_vectors": int(self._index.ntotal) if self._index is not None else 0,
            "n_tombstones": self._store.n_tombstones(),
            "rescore": self.rescore,
        }
        if self.server:
            out["server"] = self.server
        if n:
            out["memory_bytes_per_vector"] = round(memory_bytes_per_vector(self._index), 2)
            out["float32_bytes_per_vector"] = 4 * self.dim
            if self._disk_bytes is not None:
                out["disk_bytes_per_vector"] = round(self._disk_bytes / n, 2)
            if self._lists is not None:  # codes and ids are mapped from disk, not held
                out["memory_bytes_per_vector"] = 0.0
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write the folder atomically: all files go to a temporary folder that then replaces ``path``."""
        import faiss

        if self._index is None:
            raise IndexStateError("nothing to save: the index has no documents yet")
        path = Path(path)
        if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / MANIFEST).exists())):
            raise ConfigError("out", f"{path} exists and is not a textcl index folder; refusing to replace it")
        self._store.commit()
        with atomic_dir(path) as tmp:
            if isinstance(self._index, BinaryIndex):
                self._index.write(tmp / INDEX_FILE)
            elif self._lists is not None:
                ondisk.write_header(self._index, tmp / INDEX_FILE)
                ondisk.link_or_copy(self._lists, tmp / ondisk.LISTS_FILE)
            else:
                faiss.write_index(self._index, str(tmp / INDEX_FILE))
            self._store.backup_to(tmp / DOCS_FILE)
            vectors = self._vecfile.save(tmp, path) if self._vecfile is not None else None
            index_bytes = (tmp / INDEX_FILE).stat().st_size
            self._disk_bytes = index_bytes + (vectors["bytes"] if vectors else 0)
            lists = ondisk.lists_entry(tmp) if self._lists is not None else None
            self._disk_bytes += lists["bytes"] if lists else 0
            manifest = self.info()
            manifest.update({
                "index_file": INDEX_FILE,
                "index_bytes": index_bytes,
                "index_sha256": sha256_file(tmp / INDEX_FILE),
                "docstore_file": DOCS_FILE,
                "docstore_sha256": sha256_file(tmp / DOCS_FILE),
            })
            if vectors is not None:
                manifest["vectors"] = vectors
            if lists is not None:
                manifest["lists"] = lists
            relative = _model_relative(self.model_name, path)
            if relative is not None:
                manifest["model_relative"] = relative
            fingerprint = self._model_fingerprint()
            if fingerprint is not None:
                manifest["model_fingerprint"] = fingerprint
            if self._probe() is not None:
                manifest["probe"] = self.probe
            atomic_write_json(tmp / MANIFEST, manifest)
        if self._vecfile is not None:
            self._vecfile.saved(path)
        if self._lists is not None:  # the same file (a hard link) or a copy of it
            self._lists = (path / ondisk.LISTS_FILE).absolute()
        if self._store.readonly:  # the folder it pointed into was replaced
            self._store.close()
            self._store = DocStore(path / DOCS_FILE, readonly=True)
        return path

    @staticmethod
    def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
        """The manifest of the index folder ``path``, as saved. A save killed half-way is recovered first
        (:func:`textcl._io.recover_dir`): the folder is then the previous or the new version, complete."""
        path = recover_dir(Path(path))
        mpath = path / MANIFEST
        if not path.is_dir():
            raise IndexCorruptedError(f"{path}: no such index folder (build one with `textcl index build`)")
        if not mpath.exists():
            raise IndexCorruptedError(f"{mpath}: missing; {path} is not a (complete) textcl index folder")
        try:
            manifest = read_json(mpath)
        except DataFormatError as exc:
            raise IndexCorruptedError(f"{mpath}: {exc.reason}") from None
        missing = [k for k in ("format", "dim", "factory", "index_sha256", "n_docs") if k not in manifest]
        if manifest.get("format") != FORMAT or missing:
            raise IndexCorruptedError(f"{mpath}: not a textcl index manifest (missing {missing or ['format']})")
        server = manifest.get("server")
        if server is not None and not (isinstance(server, dict) and isinstance(server.get("server"), str)
                                       and isinstance(server.get("model"), (str, type(None)))):
            raise IndexCorruptedError(f"{mpath}: server: expected {{\"server\": URL, \"model\": name}}, got "
                                      f"{server!r:.100}")
        return manifest

    @classmethod
    def load(cls, path: str | os.PathLike, encoder=None, verify: bool = True) -> "SearchIndex":
        """Open a saved folder. Checks the manifest, both checksums and, when ``encoder`` is given, that it
        produces vectors of the index's dimension; raises IndexCorruptedError / DimensionMismatchError."""
        import faiss

        path = Path(path)
        manifest = cls.read_manifest(path)
        for name, key in ((INDEX_FILE, "index_sha256"), (DOCS_FILE, "docstore_sha256")):
            fpath = path / name
            if not fpath.exists():
                raise IndexCorruptedError(f"{fpath}: missing from the index folder")
            if verify and key in manifest and sha256_file(fpath) != manifest[key]:
                raise IndexCorruptedError(
                    f"{fpath}: checksum mismatch (sha256 differs from {MANIFEST}); the file is truncated or "
                    "corrupted: rebuild the index with `textcl index build`"
                )
        try:
            spec = fx.parse_factory(manifest["factory"])
        except ConfigError as exc:
            raise IndexCorruptedError(f"{path / MANIFEST}: {exc}") from None
        if "lists" in manifest:  # on-disk IVF: map the lists of this folder, wherever it was built
            ondisk.check_lists(path, manifest["lists"], verify)
        try:
            if "lists" in manifest:
                index = ondisk.read_ondisk(path)
            else:
                index = BinaryIndex.read(path / INDEX_FILE) if spec.binary else faiss.read_index(str(path / INDEX_FILE))
        except RuntimeError as exc:
            raise IndexCorruptedError(f"{path / INDEX_FILE}: FAISS cannot read it ({str(exc).strip()[:200]})") from None
        dim = int(manifest["dim"])
        if index.d != dim:
            raise IndexCorruptedError(f"{path / INDEX_FILE}: holds {index.d}-d vectors, manifest says {dim}")
        if encoder is not None:
            check_dim(encoder, dim, str(path))
        # where the model is now (it may have moved with the folder), else as recorded
        self = cls(dim, manifest["factory"], encoder=encoder,
                   model_name=_find_model(path, manifest) or manifest.get("model"), server=manifest.get("server"))
        self._fingerprint = (self.model_name, manifest.get("model_fingerprint"))  # kept by later saves
        self.probe = manifest.get("probe")
        self._store.close()
        self._store = DocStore(path / DOCS_FILE, readonly=True)
        self._index = index
        self._source = path.absolute()
        if len(self._store) != int(manifest["n_docs"]):
            raise IndexCorruptedError(f"{path / DOCS_FILE}: {len(self._store)} documents, manifest says "
                                      f"{manifest['n_docs']}")
        self._disk_bytes = (path / INDEX_FILE).stat().st_size
        if "lists" in manifest:
            self._lists = (path / ondisk.LISTS_FILE).absolute()  # linked by a later save, maybe from elsewhere
            self._disk_bytes += self._lists.stat().st_size
        if self._vecfile is not None:
            entry = manifest.get("vectors")
            if not isinstance(entry, dict) or "rows" not in entry:
                raise IndexCorruptedError(f"{path / MANIFEST}: factory {manifest['factory']!r} rescores with float "
                                          "vectors, but the manifest records no vector file")
            vpath = check_vector_file(path, entry, dim, verify)
            rows = int(entry["rows"])
            if rows < self._store.next_int_id():
                raise IndexCorruptedError(f"{vpath}: {rows} rows, but the doc store has ids up to "
                                          f"{self._store.next_int_id() - 1}")
            self.rescore = int(manifest.get("rescore") or self.rescore)
            self._vecfile.open(vpath, rows)
            self._disk_bytes += rows * 4 * dim
        return self

    def _adopt_vectors(self, path: Path, rows: int) -> None:
        """Use ``path`` (a streaming build's vector file, rows = integer ids 0..rows-1) as this index's vector
        file; a later save may hard-link it, so nothing else may write to it."""
        if self._vecfile is not None:
            self._vecfile.open(path, rows, linkable=True)

    def close(self) -> None:
        self._store.close()
        if self._vecfile is not None:
            self._vecfile.close()
        self._finalizer()

    def __repr__(self) -> str:
        return f"SearchIndex(factory={self.factory!r}, dim={self.dim}, n_docs={len(self)}, model={self.model_name!r})"
