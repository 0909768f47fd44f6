"""``create_app``: the FastAPI application that serves an index folder, embedding models, or both.

    from textcl.serve import create_app
    app = create_app("runs/quickstart/wiki-index")              # read-only, micro-batched
    app = create_app("ix", allow_writes=True, save_interval_s=10)
    app = create_app(models=["runs/qs/model"])                  # the OpenAI embeddings API only (/v1)
    app = create_app("ix", models=["minilm=runs/qs/model"])     # both

The index is opened (and the write-ahead log replayed) and the models loaded when the app is created, so
a bad folder, model or log fails here, before any request; leaving the app's lifespan (server shutdown, or
the end of a ``with TestClient(app)`` block) saves the index when it changed and releases it. One app
serves one lifespan.
"""
from __future__ import annotations

import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

from textcl.serve.config import ServeConfig, default_threads
from textcl.serve.embedders import Embedders
from textcl.serve.errors import install_error_handlers
from textcl.serve.openai_routes import build_openai_router
from textcl.serve.origins import HostOriginGuard
from textcl.serve.routes import build_router
from textcl.serve.security import PAGE_HEADERS, BodyLimitMiddleware
from textcl.serve.service import IndexService
from textcl.thread_governor import governor_for, install

STATIC = Path(__file__).resolve().parent / "static"


def create_app(index: str | os.PathLike | ServeConfig | None = None, *, encoder=None, encoders=None,
               **options) -> FastAPI:
    """An app serving the index folder ``index`` (or a full :class:`ServeConfig`, with ``options`` replacing
    fields) and the ``models`` option's embedding models. ``encoder``: the index's encoder, already loaded
    (default: load ``model``, else the manifest's model); ``encoders``: embedding models already loaded, by
    served name. Raises :class:`~textcl.errors.TextclError` subclasses for a bad configuration, folder, model
    or log."""
    from textcl import __version__

    config = index.replace(**options) if isinstance(index, ServeConfig) else ServeConfig(index, **options)
    config.validate()
    # torch's threads follow the cores other processes leave free: the batchers made below take this governor
    # (textcl.thread_governor) onto their own threads; measured now, then before each batch
    governor = governor_for("serve", workers=config.workers, explicit=config.threads)
    if governor is not None:
        governor.settle()
    previous = install(governor)
    try:
        service = IndexService(config, encoder).start() if config.index_dir is not None else None
        try:
            # model None: the manifest's
            shared = (config.model, service.encoder, service.encode_lock) if service else None
            embedders = Embedders.load(config, encoders, shared)
            embedders.start(threads=None if service else config.threads or default_threads(config.workers))
        except BaseException:
            if service is not None:
                service.close()
            raise
    finally:
        install(previous)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            yield
        finally:
            await run_in_threadpool(embedders.close)
            if service is not None:
                await run_in_threadpool(service.close)

    app = FastAPI(title="textcl", version=__version__, lifespan=lifespan, redoc_url=None,
                  description="Semantic search over a textcl index (FAISS vectors + SQLite doc store) and the OpenAI "
                              "embeddings API (/v1). Errors are JSON: `{error, message, fields}`, and OpenAI's "
                              "`{error: {message, type, param, code}}` under /v1.")
    app.state.service = service
    app.state.embedders = embedders
    app.state.config = config
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(HostOriginGuard, config=config)  # added last: the outermost, before any body is read
    if len(embedders):
        app.include_router(build_openai_router(config, embedders))
    if service is None:
        _health_only(app, embedders)
        return app
    app.include_router(build_router(config))

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _health_only(app: FastAPI, embedders: Embedders) -> None:
    """``GET /health`` of a server without an index (the index's router has its own)."""
    from textcl.serve.errors import error_response

    @app.get("/health", tags=["service"])
    async def health() -> Any:
        if not embedders.healthy:
            return error_response(503, "the models are not being served (starting or stopping)")
        return {"status": "ok", "models": [e.public_name for e in embedders]}  # no local paths without a key
