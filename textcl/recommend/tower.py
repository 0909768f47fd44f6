"""A trained sequence recommender (:mod:`textcl.recommend.sequence`) as the model of an index and a server.

``textcl index build --input OUT/items.jsonl --model OUT/model --out INDEX`` and ``textcl serve INDEX`` load the
folder a ``user_tower: sequence`` run writes (``OUT/model``: ``recommender.json`` + ``recommender.safetensors``)
as a :class:`SequenceTower`:

- **Documents are items**: a document's vector is its item vector, ``W x + e`` (the projection of the frozen text
  encoder's vector of its text, plus the learned id vector when its id is an item seen in training), so the index
  holds exactly the vectors the model ranks with. A document whose id training never saw (``POST /documents``
  of a new item) is its text alone, ``W x``: recommendable at once, as a cold item is in evaluation.
- **Users**: :meth:`SequenceTower.user_vector` runs the GRU over the item vectors of the last ``history``
  entries of a history (ids or texts), as training and evaluation do; ``POST /recommend`` searches the index
  with it.
- **Text queries** (``/search``) are embedded as a new item of that text, ``W x``.

The catalogue's text vectors are stored in the folder, so an item whose text is the one it was trained with is not
re-encoded; at load the text encoder the folder names is checked to embed a few catalogue texts as training did.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from textcl.errors import ConfigError

RECOMMENDER_JSON = "recommender.json"
#: text vectors kept for items outside the stored catalogue (documents written, history entries), the least
#: recently used dropped first: about 2.5 KB each for a 384-dimensional encoder (about 21 MB in all)
RECENT = 8192
#: catalogue texts re-encoded at load and compared with the vectors training stored
CHECK_TEXTS = 3
MIN_COSINE = 0.999


def is_tower(name: str | Path | None) -> bool:
    """Whether ``name`` is a local folder holding a sequence recommender (``recommender.json``)."""
    if name is None:
        return False
    path = Path(name).expanduser()
    return (path / RECOMMENDER_JSON).is_file() or (path.parent / f".{path.name}.old" / RECOMMENDER_JSON).is_file()


class SequenceTower:
    """An encoder over a sequence recommender: ``encode(texts)`` (n, d) new-item vectors, ``encode_documents(ids,
    texts)`` (n, d) item vectors, ``user_vector(ids, texts)`` (d,). Not thread-safe: the caller serialises calls
    (the server's encoder lock), as for any encoder with a tokenizer."""

    def __init__(self, model, meta: dict, text_encoder, folder: str | Path):
        self.model = model.eval()
        self.text_encoder = text_encoder
        self.item_ids: list[str] = [str(i) for i in meta["item_ids"]]
        self.item_texts: list[str] = list(meta["item_texts"])
        if len(self.item_ids) != model.n_items or len(self.item_texts) != model.n_items:
            raise ConfigError(f"{Path(folder) / RECOMMENDER_JSON}: item_ids",
                              f"expected {model.n_items} item ids and texts (the model's catalogue), got "
                              f"{len(self.item_ids)} and {len(self.item_texts)}")
        self.row = {item: i for i, item in enumerate(self.item_ids)}
        self.history = int(model.shape.history)
        self.dim = int(model.shape.dim)
        self.name = str(folder)
        self._folder = Path(folder)
        with torch.no_grad():
            self._id_vectors = (model.ids.weight * model.trained[:, None].float()).clone() if model.ids is not None \
                else None
        #: text vectors of items outside the stored catalogue, encoded lately, by a digest of their text (LRU)
        self._recent: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, folder: str | Path, check: bool = True) -> "SequenceTower":
        """The recommender in ``folder`` with the text encoder its ``recommender.json`` names. ``check``: refuse
        (ConfigError) a text encoder that does not embed the catalogue's texts as the stored vectors say."""
        from textcl.models import Encoder
        from textcl.recommend.sequence import load

        model, meta = load(folder)
        folder = Path(folder).expanduser().resolve()
        for field in ("text_encoder", "item_ids", "item_texts"):
            if field not in meta:
                raise ConfigError(f"{folder / RECOMMENDER_JSON}: {field}", "missing; expected the file a "
                                  "`user_tower: sequence` run writes (textcl train)")
        text_encoder = Encoder.load(meta["text_encoder"], pooling=meta.get("pooling", "mean"))
        text_encoder.max_seq_length = min(text_encoder.max_seq_length, int(meta.get("max_seq_len", 512)))
        tower = cls(model, meta, text_encoder, folder)
        if check:
            tower.check_text_encoder()
        return tower

    def check_text_encoder(self) -> None:
        """ConfigError unless the text encoder embeds :data:`CHECK_TEXTS` catalogue texts (first, middle, last)
        within :data:`MIN_COSINE` of the vectors training stored."""
        n = len(self.item_texts)
        rows = sorted({0, n // 2, n - 1})[:CHECK_TEXTS] if n else []
        if not rows:
            return
        got = self._text_vectors([self.item_texts[r] for r in rows])
        if got.shape[1] != self.model.shape.text_dim:
            raise ConfigError(f"{self._folder / RECOMMENDER_JSON}: text_encoder",
                              f"{self.text_encoder_name!r} makes {got.shape[1]}-dimensional vectors, the recommender "
                              f"was trained on {self.model.shape.text_dim}: expected the text encoder it was trained on")
        cos = (got * self.model.text[rows]).sum(dim=1)
        worst = int(torch.argmin(cos))
        if float(cos[worst]) < MIN_COSINE:
            raise ConfigError(f"{self._folder / RECOMMENDER_JSON}: text_encoder",
                              f"{self.text_encoder_name!r} does not embed the catalogue's texts as training did "
                              f"(cosine {float(cos[worst]):.4f} for item {self.item_ids[rows[worst]]!r}; expected "
                              f"{MIN_COSINE} or more): expected the text encoder the recommender was trained on")

    @property
    def text_encoder_name(self) -> str:
        return str(getattr(self.text_encoder, "name", None) or self.text_encoder)

    # ------------------------------------------------------------------ items
    def _text_vectors(self, texts: Sequence[str]) -> torch.Tensor:
        """(n, D) the frozen text encoder's unit vectors of ``texts``."""
        if not texts:
            return torch.zeros(0, self.model.shape.text_dim)
        vecs = self.text_encoder.encode(list(texts), batch_size=64, normalize=True)
        return torch.from_numpy(np.ascontiguousarray(np.asarray(vecs, dtype=np.float32)))

    def _cached(self, ids: Sequence[str | None], texts: Sequence[str]) -> list[int | None]:
        """For each item, its catalogue row when its text is the one it was trained with (its stored vector is
        used), else None (its text is encoded, or found among those encoded lately)."""
        rows = [self.row.get(i) if i is not None else None for i in ids]
        return [r if r is not None and self.item_texts[r] == t else None for r, t in zip(rows, texts)]

    def missing(self, ids: Sequence[str | None], texts: Sequence[str]) -> list[str]:
        """The distinct texts :meth:`item_vectors` would encode for these items: neither a catalogue item's
        trained text nor among the :data:`RECENT` texts most recently encoded or used for items."""
        return list(dict.fromkeys(t for r, t in zip(self._cached(ids, texts), texts)
                                  if r is None and _key(t) not in self._recent))

    def remember(self, texts: Sequence[str]) -> None:
        """Encode ``texts`` now and keep their vectors among the recent ones (a caller encodes a request's
        :meth:`missing` texts a chunk at a time this way, then scores without encoding)."""
        self._fresh(list(dict.fromkeys(texts)), remember=True)

    def _keep(self, text: str, x: torch.Tensor) -> None:
        self._recent[_key(text)] = x.clone()
        self._recent.move_to_end(_key(text))
        while len(self._recent) > RECENT:
            self._recent.popitem(last=False)

    def _fresh(self, texts: Sequence[str], remember: bool) -> torch.Tensor:
        """(n, D) text vectors of items that are not stored in the catalogue: the recent ones reused, the others
        encoded (each distinct text once) and, with ``remember``, kept."""
        found = {}
        for t in texts:
            x = self._recent.get(_key(t))
            if x is not None:
                found[t] = x
                self._recent.move_to_end(_key(t))  # used again: kept longer
        todo = [t for t in dict.fromkeys(texts) if t not in found]
        for t, x in zip(todo, self._text_vectors(todo) if todo else []):
            found[t] = x
            if remember:
                self._keep(t, x)
        return torch.stack([found[t] for t in texts]) if texts else torch.zeros(0, self.model.shape.text_dim)

    @torch.no_grad()
    def item_vectors(self, ids: Sequence[str | None], texts: Sequence[str], remember: bool = True) -> torch.Tensor:
        """(n, d) items as the model scores them, not normalised: ``W x + e`` for an id seen in training, ``W x``
        for any other (an id of None: an item given by its text). ``x`` is the stored catalogue vector when the
        text is the one the item was trained with, else the text encoder's vector of ``texts[i]`` (which reads
        its first ``max_seq_len`` tokens, as for a document written to the index), reused when it was encoded
        lately for an item (a document written, a history entry) and, with ``remember``, kept for reuse."""
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        rows = [self.row.get(i) if i is not None else None for i in ids]
        cached = self._cached(ids, texts)
        x = torch.zeros(len(texts), self.model.shape.text_dim)
        fresh = [j for j, c in enumerate(cached) if c is None]
        if fresh:
            x[fresh] = self._fresh([texts[j] for j in fresh], remember)
        hit = [j for j, c in enumerate(cached) if c is not None]
        if hit:
            x[hit] = self.model.text[[cached[j] for j in hit]]
        v = self.model.project(x)
        known = [j for j, r in enumerate(rows) if r is not None]
        if known and self._id_vectors is not None:
            v[known] = v[known] + self._id_vectors[[rows[j] for j in known]]
        return v

    def encode(self, texts: Sequence[str], batch_size: int = 64, normalize: bool = True,
               show_progress: bool = False) -> np.ndarray:
        """(n, d) float32: each text as a new item's vector, ``W x`` (a text query or a history entry without an
        id); unit rows when ``normalize``."""
        v = self.item_vectors([None] * len(texts), list(texts), remember=False)  # queries are not items
        return (F.normalize(v, dim=-1) if normalize else v).numpy()

    def encode_documents(self, ids: Sequence[str | None], texts: Sequence[str]) -> np.ndarray:
        """(n, d) float32 unit rows: the documents as items (:meth:`item_vectors`), what the index holds."""
        return F.normalize(self.item_vectors(list(ids), list(texts)), dim=-1).numpy()

    def checked(self, docs: Iterable, source: str) -> Iterator:
        """``docs`` (with ``id`` and ``text``) as they come, refusing (DataFormatError naming ``source`` and the id)
        one whose id is an item the model was trained on but whose text is not that item's: it would be indexed
        with that item's learned vector. (``POST /documents`` may change a trained item's text on purpose.)"""
        from textcl.errors import DataFormatError

        for n, doc in enumerate(docs, 1):
            row = self.row.get(str(doc.id))
            if row is not None and self._id_vectors is not None and bool(self.model.trained[row]) \
                    and self.item_texts[row] != doc.text:
                raise DataFormatError(
                    source, None, f"document {n} (id {str(doc.id)!r}) has the id of an item {self._folder} was "
                    f"trained on, with another text ({_quote(doc.text)} where training had {_quote(self.item_texts[row])}); "
                    "it would be indexed with that item's learned vector. Expected the run's items.jsonl (or new "
                    "ids for other items; POST /documents can change a trained item's text later)")
            yield doc

    # ------------------------------------------------------------------ users
    @torch.no_grad()
    def user_vector(self, ids: Sequence[str | None], texts: Sequence[str]) -> np.ndarray:
        """(d,) float32 unit vector: the GRU's output after the last :attr:`history` entries of a history in
        time order (oldest first; ``ids[i]`` None for an entry given by its text), as evaluation ranks with."""
        if not texts:
            raise ValueError("a user's history holds at least one item")
        ids, texts = list(ids)[-self.history:], list(texts)[-self.history:]
        h = torch.zeros(1, self.history, self.dim)
        h[0, self.history - len(texts):] = self.item_vectors(ids, texts)
        return F.normalize(self.model.users(h)[0, -1], dim=-1).numpy()


def _key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _quote(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def load_model(name: str, load_encoder, backend: str | None = None):
    """The model of an index or a server: a :class:`SequenceTower` for a recommender folder, else
    ``load_encoder(name)``. ``backend`` (``--backend``): a recommender's text encoder runs on torch, so another
    is refused rather than ignored."""
    from textcl.models.onnx_backend import resolve_backend

    if not is_tower(name):
        return load_encoder(name)
    backend = resolve_backend(backend)  # --backend, else $TEXTCL_BACKEND (the CLI and the server alike)
    if backend not in ("torch", "auto"):
        raise ConfigError("--backend", f"{name} is a sequence recommender: its text encoder runs on torch, not "
                          f"{backend} (from --backend or $TEXTCL_BACKEND); use torch or auto")
    return SequenceTower.load(name)
