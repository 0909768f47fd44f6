"""``run``: serve an index, embedding models or both with uvicorn (what ``textcl serve`` calls).

With ``workers > 1`` (read-only only), uvicorn starts that many processes; each builds its own app from the
configuration passed in the environment (:func:`app_from_env`) and loads its own copy of the index and
models.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os

from textcl.index import SearchIndex
from textcl.serve.config import ServeConfig

CONFIG_ENV = "TEXTCL_SERVE_CONFIG"


def run(config: ServeConfig) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM save the index when it changed, then exit)."""
    import uvicorn

    from textcl.serve.app import create_app

    from textcl.serve.embedders import check_limits

    config.validate()
    check_limits(config)  # here too: with several workers each would fail alone
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    common = dict(host=config.host, port=config.port, log_level=config.log_level, server_header=False,
                  timeout_graceful_shutdown=30)
    if config.workers == 1:
        uvicorn.run(create_app(config), **common)
        return
    if config.index_dir is not None:  # fail here, not in each worker (uvicorn would restart them forever)
        _check_model_settings(config, SearchIndex.read_manifest(config.index_dir))
    if config.precision == "auto":  # resolved here once: workers measuring side by side could each choose apart
        config = config.replace(decided_precision=_decide_precision(config))
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    fields["index_dir"] = str(config.index_dir) if config.index_dir is not None else None
    os.environ[CONFIG_ENV] = json.dumps(fields)
    uvicorn.run("textcl.serve.server:app_from_env", factory=True, workers=config.workers, **common)


def _check_model_settings(config: ServeConfig, manifest: dict) -> None:
    """Read the served model's ``textcl_recommend.json`` (``--index-model``, else the index's own model): a bad
    file raises the error each worker's start would, once, before any worker starts."""
    from pathlib import Path

    from textcl.index.faiss_index import index_model
    from textcl.models.recommend_settings import read_recommend_settings

    name = config.model if config.model is not None else index_model(config.index_dir, manifest, "--index-model")
    if Path(name).expanduser().is_dir():
        read_recommend_settings(Path(name).expanduser())


def _decide_precision(config: ServeConfig) -> dict[str, str]:
    """Each model's ``--precision auto`` resolved in this (parent) process, before any worker starts."""
    import torch

    from textcl.models import Encoder
    from textcl.serve.config import default_threads
    from textcl.serve.precision import decide_for_workers
    from textcl.serve.service import IndexService

    before = torch.get_num_threads()
    torch.set_num_threads(config.threads or default_threads(config.workers))  # measured as a worker will run
    try:
        index_encoder = IndexService(config)._load_encoder() if config.index_dir is not None else None
        return decide_for_workers(config, lambda path: Encoder.load(path, backend=config.backend or "torch"),
                                  index_encoder)
    finally:
        torch.set_num_threads(before)


def app_from_env():
    """The app factory each uvicorn worker process calls."""
    from textcl.serve.app import create_app

    return create_app(ServeConfig(**json.loads(os.environ[CONFIG_ENV])))
