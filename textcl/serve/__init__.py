"""``textcl serve``: a search index and embedding models as an HTTP service (FastAPI + uvicorn; ``pip install
'textcl[serve]'``): the search API, and the OpenAI embeddings API under ``/v1``.

    from textcl.serve import ServeConfig, create_app, run
    run(ServeConfig("runs/quickstart/wiki-index", port=8000))
    run(ServeConfig(models=["minilm=runs/qs/model"]))         # embeddings only

Modules: ``config`` (settings and their checks), ``schemas`` (pydantic request/response models),
``batcher`` (the micro-batcher, which is also the index's only thread), ``service`` (search, writes,
saving), ``wal`` (the write-ahead log and recovery), ``hits`` (a hit's fields, the answer rendered off the
event loop), ``security`` (auth, body limit), ``origins`` (Host and Origin checks against cross-site
requests), ``errors`` (JSON errors), ``routes`` and ``app`` (the FastAPI app), ``server`` (uvicorn);
``static/`` holds the search page. The embeddings API: ``embedders`` (a model and its micro-batcher per
``--model``), ``tokens`` (token counts), ``openai_schemas``, ``openai_routes``, ``openai_render`` (the
answer's JSON) and ``openai_errors`` (OpenAI's error shape).
"""
from __future__ import annotations

from textcl.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app", "run"]


def __getattr__(name: str):
    if name == "create_app":
        from textcl.serve.app import create_app

        return create_app
    if name == "run":
        from textcl.serve.server import run

        return run
    raise AttributeError(f"module 'textcl.serve' has no attribute {name!r}")
