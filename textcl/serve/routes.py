"""The HTTP endpoints: search (POST and GET), recommend, documents (add/upsert, get, delete), info, health.

No ``from __future__ import annotations`` here: FastAPI reads the annotations of the route functions,
which name request models built inside :func:`build_router`.
"""

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from textcl.index import Document
from textcl.serve.config import ServeConfig
from textcl.serve.errors import error_response
from textcl.serve.hits import HIT_FIELDS, HitView, search_response, split_title
from textcl.serve.recommend import recommend as recommend_answer
from textcl.serve.schemas import (MAX_ID_CHARS, MAX_TEXT_CHARS, DeleteResponse, DocumentOut, ErrorResponse,
                                  HealthResponse, InfoResponse, RecommendResponse, RequestModels, SearchResponse,
                                  WriteResponse, _not_blank, hits_over_limit)
from textcl.serve.security import writer_guard
from textcl.serve.service import IndexService

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in ((413, "request body too large"), (422, "invalid request: the message names the field"),
                         (503, "busy; retry shortly"))
}
WRITE_ERRORS = {**ERRORS, **{status: {"model": ErrorResponse, "description": text} for status, text in (
    (401, "missing or wrong API key"), (403, "writes are off (--allow-writes)"), (409, "conflict"))}}


def service_of(request: Request) -> IndexService:
    return request.app.state.service


def build_router(config: ServeConfig) -> APIRouter:
    """The routes, with request models bounded by ``config``'s limits."""
    models = RequestModels(config.max_k, config.max_queries, config.max_documents, config.max_query_chars,
                           config.max_hits)
    SearchRequest, DocumentsRequest, RecommendRequest = (models.SearchRequest, models.DocumentsRequest,
                                                         models.RecommendRequest)
    router = APIRouter()
    guard = Depends(writer_guard(config))
    Service = Annotated[IndexService, Depends(service_of)]
    DocIdPath = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, description="document id")]

    async def _search(service: IndexService, queries: list[str], k: int, filter: dict | None,
                      view: HitView) -> Response:
        started = time.perf_counter()
        found = await service.search_found(queries, k, filter)
        chars = view.chars(found)
        if chars > config.max_response_chars:
            return error_response(422, f"the answer would hold {chars:,} characters of document text, titles and "
                                  "metadata, "
                                  f"over the limit of {config.max_response_chars:,} per answer "
                                  "(--max-response-chars): ask for fewer hits, a text_chars cut, or fields without "
                                  "text (e.g. [\"id\", \"score\"])", [{"field": "k", "message": "too large an answer"}])
        return await run_in_threadpool(search_response, queries, found, k, view, started)

    @router.post("/search", response_model=SearchResponse, responses=ERRORS, tags=["search"],
                 summary="top-k documents for each query, optionally filtered on metadata equality")
    async def search(body: SearchRequest, service: Service) -> Response:  # type: ignore[valid-type]
        view = HitView(frozenset(body.fields or HIT_FIELDS), body.text_chars)
        return await _search(service, body.queries, body.k, body.filter, view)

    @router.get("/search", response_model=SearchResponse, responses=ERRORS, tags=["search"],
                summary="top-k documents for one query (for people and links)")
    async def search_get(
        service: Service,
        q: Annotated[str, Query(min_length=1, max_length=config.max_query_chars, description="the query"),
                     AfterValidator(_not_blank)],
        k: Annotated[int, Query(ge=1, le=config.max_k, description="results"),
                     AfterValidator(lambda k: hits_over_limit(1, k, config.max_hits))] = min(10, config.max_k,
                                                                                            config.max_hits),
        text_chars: Annotated[int | None, Query(ge=1, le=MAX_TEXT_CHARS,
                                                description="return at most this many characters of each text")] = None,
    ) -> Response:
        return await _search(service, [q], k, None, HitView(text_chars=text_chars))

    @router.post("/recommend", response_model=RecommendResponse, responses=ERRORS, tags=["recommend"],
                 summary="the top-k documents for a user given by their history (ids or texts, oldest first), "
                         "each with the history entry it is most like")
    async def recommend(body: RecommendRequest, service: Service) -> Response:  # type: ignore[valid-type]
        view = HitView(frozenset(body.fields or HIT_FIELDS), body.text_chars)
        return await recommend_answer(service, body.history, body.k, body.exclude_history, view,
                                      config.max_response_chars, config.max_query_chars, body.because)

    @router.post("/documents", response_model=WriteResponse, responses=WRITE_ERRORS, dependencies=[guard],
                 tags=["documents"], summary="add or upsert documents; durable when answered")
    async def write_documents(body: DocumentsRequest, service: Service) -> dict[str, Any]:  # type: ignore[valid-type]
        docs = []
        for d in body.documents:
            meta = dict(d.metadata or {})
            if d.title is not None:
                meta["title"] = d.title
            docs.append(Document(d.id, d.text, meta))
        n_docs = await service.write(docs, body.mode)
        return {"written": len(docs), "n_docs": n_docs}

    @router.get("/documents/{doc_id:path}", response_model=DocumentOut, tags=["documents"],
                responses={**ERRORS, 404: {"model": ErrorResponse, "description": "no such document"}})
    async def get_document(doc_id: DocIdPath, service: Service) -> Any:
        doc = await service.get(doc_id)
        if doc is None:
            return error_response(404, f"document id {doc_id!r} is not in the index")
        title, meta = split_title(doc)
        return {"id": doc.id, "text": doc.text, "title": title, "metadata": meta}

    @router.delete("/documents/{doc_id:path}", response_model=DeleteResponse, dependencies=[guard],
                   responses={**WRITE_ERRORS, 404: {"model": ErrorResponse, "description": "no such document"}},
                   tags=["documents"], summary="delete a document; durable when answered")
    async def delete_document(doc_id: DocIdPath, service: Service) -> dict[str, Any]:
        n_docs = await service.delete(doc_id)
        return {"deleted": doc_id, "n_docs": n_docs}

    @router.get("/info", response_model=InfoResponse, tags=["service"])
    async def info(service: Service) -> dict[str, Any]:
        return await service.info()

    @router.get("/health", response_model=HealthResponse, tags=["service"],
                responses={503: {"model": ErrorResponse, "description": "not serving"}})
    async def health(service: Service) -> Any:
        if not service.healthy:
            return error_response(503, "the index is not being served (starting or stopping)")
        return {"status": "ok", "n_docs": service.n_docs}

    return router

