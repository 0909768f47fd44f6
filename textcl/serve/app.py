"""``create_app``: the FastAPI application that serves one index folder.

    from textcl.serve import create_app
    app = create_app("runs/quickstart/wiki-index")              # read-only, micro-batched
    app = create_app("ix", allow_writes=True, save_interval_s=10)

The index is opened (and the write-ahead log replayed) when the app is created, so a bad folder, model or
log fails here, before any request; leaving the app's lifespan (server shutdown, or the end of a
``with TestClient(app)`` block) saves the index when it changed and releases it. One app serves one
lifespan.
"""
from __future__ import annotations

import os
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

from textcl.serve.config import ServeConfig
from textcl.serve.errors import install_error_handlers
from textcl.serve.origins import HostOriginGuard
from textcl.serve.routes import build_router
from textcl.serve.security import PAGE_HEADERS, BodyLimitMiddleware
from textcl.serve.service import IndexService

STATIC = Path(__file__).resolve().parent / "static"


def create_app(index: str | os.PathLike | ServeConfig, *, encoder=None, **options) -> FastAPI:
    """An app serving the index folder ``index`` (or a full :class:`ServeConfig`, with ``options`` replacing
    fields). ``encoder``: an already loaded encoder (default: load ``model``, else the manifest's model).
    Raises :class:`~textcl.errors.TextclError` subclasses for a bad configuration, folder, model or log."""
    from textcl import __version__

    config = index.replace(**options) if isinstance(index, ServeConfig) else ServeConfig(index, **options)
    config.validate()
    service = IndexService(config, encoder).start()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            yield
        finally:
            await run_in_threadpool(service.close)

    app = FastAPI(title="textcl search", version=__version__, lifespan=lifespan, redoc_url=None,
                  description="Semantic search over a textcl index (FAISS vectors + SQLite doc store). "
                              "Errors are JSON: `{error, message, fields}`.")
    app.state.service = service
    app.state.config = config
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(HostOriginGuard, config=config)  # added last: the outermost, before any body is read
    app.include_router(build_router(config))

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
