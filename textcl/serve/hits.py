"""Search answers as JSON: the fields each hit holds (``fields``, ``text_chars``) and the rendering.

The index thread hands back ``(Document, score)`` pairs; turning them into dicts and JSON bytes is the
costly part of a large answer, so :func:`search_response` runs on a thread-pool thread, never on the
event loop (which would stall every other request meanwhile).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from starlette.responses import JSONResponse

from textcl.index import Document

HIT_FIELDS = ("id", "score", "text", "title", "metadata")

Found = Sequence[Sequence[tuple[Document, float]]]  # per query: (document, score), best first


def split_title(doc: Document) -> tuple[str | None, dict[str, Any]]:
    """The title (the ``title`` metadata field, when it is a string) and the other metadata."""
    meta = dict(doc.metadata)
    title = meta.get("title")
    if isinstance(title, str):
        del meta["title"]
        return title, meta
    return None, meta


@dataclass(frozen=True)
class HitView:
    """What each hit holds: ``fields`` (a subset of :data:`HIT_FIELDS`; the id is always there) and, when
    ``text_chars`` is set, at most that many characters of the text."""

    fields: frozenset[str] = frozenset(HIT_FIELDS)
    text_chars: int | None = None

    def hit(self, doc: Document, score: float) -> dict[str, Any]:
        out: dict[str, Any] = {"id": doc.id}
        if "score" in self.fields:
            out["score"] = float(score)
        if "text" in self.fields:
            out["text"] = doc.text if self.text_chars is None else doc.text[: self.text_chars]
        if "title" in self.fields or "metadata" in self.fields:
            title, meta = split_title(doc)
            if "title" in self.fields:
                out["title"] = title
            if "metadata" in self.fields:
                out["metadata"] = meta
        return out

    def chars(self, found: Found) -> int:
        """Characters of text, titles and metadata (as JSON) the answer would hold: what can make it large."""
        import json

        total = 0
        for per_query in found:
            for doc, _ in per_query:
                if "text" in self.fields:
                    total += len(doc.text) if self.text_chars is None else min(len(doc.text), self.text_chars)
                if "title" in self.fields or "metadata" in self.fields:
                    title, meta = split_title(doc)
                    if "title" in self.fields and title is not None:
                        total += len(title)
                    if "metadata" in self.fields and meta:
                        total += len(json.dumps(meta, ensure_ascii=False))
        return total

    def hits(self, found: Found) -> list[list[dict[str, Any]]]:
        return [[self.hit(doc, score) for doc, score in per_query] for per_query in found]


def search_response(queries: Sequence[str], found: Found, k: int, view: HitView, started: float) -> JSONResponse:
    """The ``/search`` answer, rendered to bytes here (call it off the event loop)."""
    import time

    results = [{"query": q, "hits": hits} for q, hits in zip(queries, view.hits(found))]
    return JSONResponse({"results": results, "k": k, "took_ms": round((time.perf_counter() - started) * 1000, 3)})
