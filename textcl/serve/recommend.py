"""``POST /recommend``: recommendations for a user given by their history, from an index of catalogue items.

A model trained with ``data.kind: interactions`` embeds items (their catalogue text) and users (the texts of
their last ``history`` items, most recent first, joined by ``separator``) with one encoder. Training saves those
two settings in the model's folder (:mod:`textcl.models.recommend_settings`); the server reads them once, at
start (:func:`load_settings`), from the folder of the model it embeds with, and a model without them is served
with the defaults, said so in each answer (``settings.source: "default"``).

A request's history is in time order (oldest first). Each entry is a document id of the index (its text is
the document's) or ``{"text": ...}``. The answer: the user's text searched like a query (the same
micro-batcher as ``/search``), the history's ids left out, and for each recommendation the history entry it is
most like (``because``: cosine of the two texts' embeddings, among the entries the user's text holds).

A sequence recommender's index (:mod:`textcl.recommend.tower`; ``settings.user_tower`` ``"sequence"``): the
user is the model's GRU over the item vectors of the history's last ``history`` entries, the index is searched
with that vector, ``user_text`` is None, and ``because`` compares item vectors (an entry's id counts as well as
its text) instead of texts.

Limits: the user's text is cut at ``--max-query-chars`` characters, as a query would be refused past them (ids
may name long documents; the encoder reads at most ``max_seq_len`` tokens of it anyway), and the answer says
``user_text_cut``. ``because`` compares the entries whose text the embedded user text holds (after the cut)
with the first :data:`BECAUSE_MAX` recommendations (fewer when ``--max-pending`` is smaller than the texts to
compare), each text cut at the same length; it encodes them counted against ``--max-pending`` like queries, and
when the server is too busy for that (or the request says ``"because": false``) answers ``because: null`` rather
than failing a search that was already done.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from textcl.index import Document
from textcl.serve.batcher import BusyError, ShuttingDownError
from textcl.serve.errors import _message, error_response
from textcl.serve.hits import HitView

DEFAULT_HISTORY = 10  # what training uses by default (data.interactions.history, separator)
DEFAULT_SEPARATOR = " | "
#: ``because`` is worked out for the first this many recommendations (each costs the encoding of its text);
#: later ones answer ``because: null``, so a read request with a large ``k`` cannot make the server encode
#: a thousand documents
BECAUSE_MAX = 50


@dataclass(frozen=True)
class RecommendSettings:
    """How a history becomes the user; ``source``: ``"model"`` (read from the model's folder) or ``"default"``
    (the folder has no settings). ``user_tower``: ``"text"`` (the user is the text of their last ``history``
    items joined by ``separator``) or ``"sequence"`` (a sequence recommender's GRU over their last ``history``
    items' vectors; no separator)."""

    history: int = DEFAULT_HISTORY
    separator: str | None = DEFAULT_SEPARATOR
    source: Literal["model", "default"] = "default"
    user_tower: Literal["text", "sequence"] = "text"

    def recent(self, n: int) -> list[int]:
        """Positions (into a history of ``n`` items in time order) of the items the user's text holds, most
        recent first."""
        return list(range(n - 1, max(n - self.history, 0) - 1, -1))

    def user_text(self, texts: Sequence[str]) -> str:
        """The user's text from their items' ``texts`` in time order (oldest first): the last ``history`` of
        them, most recent first, joined by ``separator`` (as ``InteractionTask.history_text`` in training)."""
        from textcl.models.recommend_settings import user_text

        return user_text(texts, self.history, self.separator)

    def as_dict(self) -> dict[str, Any]:
        return {"history": self.history, "separator": self.separator, "source": self.source,
                "user_tower": self.user_tower}


def model_folder(encoder) -> Path | None:
    """The folder the served encoder was loaded from (``Encoder.load`` records it: the index's model, or
    ``--index-model``); None for an encoder that records none (one built in a program and passed in)."""
    folder = getattr(encoder, "_folder", None)
    return Path(folder) if folder is not None else None


def load_settings(folder: Path | None, encoder=None) -> RecommendSettings:
    """The settings of ``encoder``, a sequence recommender (:class:`~textcl.recommend.tower.SequenceTower`: its
    ``history``), else those in ``folder`` (``textcl_recommend.json``), else the defaults. Raises
    :class:`~textcl.errors.ConfigError` naming the file and field for a bad file: the server refuses to start."""
    from textcl.models.recommend_settings import read_recommend_settings
    from textcl.recommend.tower import SequenceTower

    if isinstance(encoder, SequenceTower):
        return RecommendSettings(encoder.history, None, "model", "sequence")
    found = read_recommend_settings(folder) if folder is not None else None
    if found is None:
        return RecommendSettings()
    return RecommendSettings(found["history"], found["separator"], "model")


@dataclass(frozen=True)
class Entry:
    """One history entry: its position in the request, its document id (None: given by its text) and text."""

    index: int
    id: str | None
    text: str


def history_entries(history: Sequence[Any], docs: dict[str, Document]) -> tuple[list[Entry], list[dict[str, str]]]:
    """The request's ``history`` (ids, or objects with a ``text``) as entries, with ``docs`` the index's
    documents by id; and one field error per id not among them."""
    entries, unknown = [], []
    for i, item in enumerate(history):
        if isinstance(item, str):
            doc = docs.get(item)
            if doc is None:
                unknown.append({"field": f"history[{i}]", "message": f"no document with id {item!r} in the index"})
                continue
            entries.append(Entry(i, item, doc.text))
        else:
            entries.append(Entry(i, None, item.text))
    return entries, unknown


def most_similar(candidates: np.ndarray, hits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each hit, the candidate it is most like: ``candidates`` (m, d) and ``hits`` (n, d) unit vectors ->
    (the best candidate's row (n,) int, its cosine (n,) float). A tie goes to the earlier row."""
    cos = hits @ candidates.T  # (n, m)
    best = np.argmax(cos, axis=1)
    return best, cos[np.arange(len(hits)), best]


async def recommend(service, history: Sequence[Any], k: int, exclude_history: bool, view: HitView,
                    max_response_chars: int, max_user_chars: int, explain: bool = True) -> Response:
    """The ``/recommend`` answer of ``service`` (an :class:`~textcl.serve.service.IndexService`) for ``history``
    (a request's entries, oldest first): ``{recommendations: [{id, score, text, title, metadata, because: {id,
    index, score}}], user_text, user_text_cut, settings, excluded, took_ms}``, or a 422 naming an unknown id or
    too large an answer. The user's text is cut at ``max_user_chars``; ``explain`` False answers ``because:
    null`` without encoding anything for it."""
    started = time.perf_counter()
    settings: RecommendSettings = service.recommend_settings
    ids = list(dict.fromkeys(item for item in history if isinstance(item, str)))
    docs = await service.get_many(ids) if ids else {}
    entries, unknown = history_entries(history, docs)
    if unknown:
        return error_response(422, _message(unknown), unknown)
    excluded = set(ids) if exclude_history else set()
    # k more than the excluded ids: k remain after leaving them out whenever the index holds that many others
    if settings.user_tower == "sequence":
        user_text = None
        held = [entries[i] for i in settings.recent(len(entries))]  # the entries the GRU reads, most recent first
        cut, found = False, await _sequence_found(service, entries[-settings.history:], k + len(excluded))
    else:
        user_text = settings.user_text([e.text for e in entries])
        cut = len(user_text) > max_user_chars
        user_text = user_text[:max_user_chars]
        held = _held(entries, settings, max_user_chars)  # the entries the embedded user text holds
        [found] = await service.search_found([user_text], k + len(excluded))
    hits = [(doc, score) for doc, score in found if doc.id not in excluded][:k]
    chars = view.chars([hits]) + len(user_text or "")
    if chars > max_response_chars:
        return error_response(422, f"the answer would hold {chars:,} characters of document text, titles, metadata "
                              f"and the user's text, over the limit of {max_response_chars:,} per answer "
                              "(--max-response-chars): ask for fewer recommendations, a text_chars cut, or fields "
                              "without text (e.g. [\"id\", \"score\"])",
                              [{"field": "k", "message": "too large an answer"}])
    because = []
    if explain:
        try:
            because = await _because(service, held, [(doc.id, doc.text) for doc, _ in hits[:BECAUSE_MAX]],
                                     max_user_chars, service.batcher.max_pending, settings.user_tower)
        except ShuttingDownError:
            raise
        except BusyError:  # too many queries waiting: the recommendations, without their reasons
            pass
    because += [None] * (len(hits) - len(because))
    return await run_in_threadpool(_response, hits, because, user_text, cut, settings, len(excluded), view, started)


def _held(entries: list[Entry], settings: RecommendSettings, max_chars: int) -> list[Entry]:
    """The entries whose text the user's text, cut at ``max_chars``, holds (at least its first), most recent
    first."""
    held, start = [], 0
    for i in settings.recent(len(entries)):
        if held and start >= max_chars:
            break
        held.append(entries[i])
        start += len(entries[i].text) + len(settings.separator)
    return held


async def _sequence_found(service, entries: list[Entry], k: int) -> list:
    """A sequence recommender's answer: the index's ``k`` best ``(document, score)`` pairs for the user vector of
    ``entries`` (oldest first). Each entry's text is encoded as a document written to the index is (uncut: the
    encoder reads its first ``max_seq_len`` tokens), unless its vector is stored."""
    vector = await service.user_vector([e.id for e in entries], [e.text for e in entries])
    return await service.search_vector(vector, k)


async def _because(service, candidates: list[Entry], hits: list[tuple[str, str]], max_chars: int,
                   max_texts: int, user_tower: str = "text") -> list[dict[str, Any] | None]:
    """For each of the recommendations ``hits`` (``(id, text)``; the first ones, as many as fit ``max_texts``
    encodings with the candidates'), the candidate entry (most recent first) it is most like: ``{id, index,
    score}``. The text tower compares texts: every distinct text, cut at ``max_chars``, is encoded once; a
    sequence recommender compares item vectors (an item's id counts as well as its text), and only the items
    whose text vectors are neither stored nor recent are encoded, and counted. Either way off the event loop,
    counted against ``--max-pending`` (:class:`BusyError` past it)."""
    if user_tower == "sequence":  # an item whose text vector is stored or recent costs no encoding
        keys = [(e.id, e.text) for e in candidates]
        need = set(service.encoder.missing([i for i, _ in keys], [t for _, t in keys]))
        kept = []
        for doc_id, text in hits:
            new = set(service.encoder.missing([doc_id], [text])) - need
            if new and len(need) + len(new) > max_texts:
                break
            need |= new
            kept.append((doc_id, text))
        hits = kept
    else:
        keys = [(None, e.text[:max_chars]) for e in candidates]
        hits = [(None, t[:max_chars]) for _, t in hits[:max(0, max_texts - len(set(keys)))]]
    if not hits:
        return []
    distinct = list(dict.fromkeys(keys + hits))
    row = {key: i for i, key in enumerate(distinct)}
    if user_tower == "sequence":
        vecs = await service.item_vectors([i for i, _ in distinct], [t for _, t in distinct])
    else:
        vecs = await service.encode([t for _, t in distinct], bounded=True)  # (len(distinct), d) unit rows
    best, cos = most_similar(vecs[[row[key] for key in keys]], vecs[[row[key] for key in hits]])
    return [{"id": candidates[b].id, "index": candidates[b].index, "score": float(c)} for b, c in zip(best, cos)]


def _response(hits: list[tuple[Document, float]], because: list[dict[str, Any]], user_text: str | None, cut: bool,
              settings: RecommendSettings, excluded: int, view: HitView, started: float) -> JSONResponse:
    """The answer, rendered to bytes here (off the event loop, as a search answer is)."""
    out = [{**view.hit(doc, score), "because": why} for (doc, score), why in zip(hits, because)]
    return JSONResponse({"recommendations": out, "user_text": user_text, "user_text_cut": cut,
                         "settings": settings.as_dict(),
                         "excluded": excluded, "took_ms": round((time.perf_counter() - started) * 1000, 3)})
