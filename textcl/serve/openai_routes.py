"""The OpenAI-compatible embeddings API: ``POST /v1/embeddings``, ``GET /v1/models`` and ``/v1/models/{id}``.

A request's inputs are counted in tokens on a thread-pool thread (for ``usage``, and to find the inputs
over the model's limit: cut by default and counted in the ``X-Textcl-Truncated-Inputs`` header, refused
with ``truncate: false``), then queued on the model's micro-batcher (:mod:`textcl.serve.embedders`); the
answer is rendered off the event loop. With an API key set, every ``/v1`` route needs it (OpenAI clients
always send one); errors take OpenAI's shape (:mod:`textcl.serve.openai_errors`).

No ``from __future__ import annotations`` here: FastAPI reads the annotations of the route functions,
which name a request model built inside :func:`build_openai_router`.
"""

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from textcl.errors import ConfigError
from textcl.serve.config import ServeConfig
from textcl.serve.embedders import Embedder, Embedders, UnknownModelError
from textcl.serve.errors import error_response
from textcl.serve.openai_render import render_embeddings
from textcl.serve.openai_schemas import EmbeddingsResponse, ModelCard, ModelList, OpenAIError, embeddings_request
from textcl.serve.security import key_guard

TRUNCATED_HEADER = "X-Textcl-Truncated-Inputs"
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIError, "description": text}
    for status, text in ((400, "invalid request: the message names the field (param)"),
                         (401, "missing or wrong API key (when the server has one)"),
                         (404, "no such model"), (413, "request body too large"), (503, "busy; retry shortly"))
}


def _card(embedder: Embedder, config: ServeConfig) -> dict[str, Any]:
    """The model card; ``max_inputs``: what ``--max-inputs`` and ``--max-response-chars`` both allow, as floats
    (the larger format), so that a request of that many inputs is answered."""
    fit = config.max_response_chars // vector_chars(embedder.dim, "float")
    max_inputs = max(1, min(config.max_inputs, fit))
    return {"id": embedder.name, "object": "model", "created": embedder.created, "owned_by": "textcl",
            "dimensions": embedder.dim, "max_input_tokens": embedder.max_tokens, "max_inputs": max_inputs,
            "prompts": sorted(embedder.prompts), "precision": embedder.precision}


def _over_limit(over: np.ndarray, counts: np.ndarray, limit: int) -> str:
    shown = ", ".join(f"item {i} ({counts[i]} tokens)" for i in over[:5]) + (" ..." if len(over) > 5 else "")
    return (f"{len(over)} input(s) over the model's limit of {limit} tokens with truncate false: {shown}; send "
            "shorter texts, or leave truncate at its default (true) to cut them")


def _texts(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def vector_chars(dim: int, encoding_format: str) -> int:
    """The most characters one vector of ``dim`` takes in an answer: base64 of ``4 * dim`` bytes exactly; as
    floats, 16 a number (a float32 in its shortest form, e.g. ``-1.17549435e-38``, and a comma)."""
    return 4 * -(-4 * dim // 3) if encoding_format == "base64" else 16 * dim


def _over_response_limit(n: int, dim: int, encoding_format: str, limit: int) -> str | None:
    """Why ``n`` vectors of ``dim`` are over ``--max-response-chars``, or None."""
    each = vector_chars(dim, encoding_format)
    if n * each <= limit:
        return None
    return (f"the answer would hold {n * each:,} characters of vectors ({n} vectors of {each:,}), over the limit "
            f"of {limit:,} per answer (--max-response-chars): send fewer inputs or ask for fewer dimensions"
            + (", or use encoding_format base64 (a third the size)" if encoding_format == "float" else ""))


def build_openai_router(config: ServeConfig, embedders: Embedders) -> APIRouter:
    """The ``/v1`` routes over ``embedders``, with requests bounded by ``config``'s limits."""
    EmbeddingsRequest = embeddings_request(config.max_inputs)
    router = APIRouter(prefix="/v1", dependencies=[Depends(key_guard(config))], tags=["embeddings (OpenAI API)"])

    def model_not_found(request: Request, exc: UnknownModelError) -> Response:
        return error_response(404, str(exc), [{"field": "model", "message": "not served"}], path=request.url.path,
                              code="model_not_found")

    @router.post("/embeddings", response_model=EmbeddingsResponse, responses=ERRORS,
                 summary="embed texts (OpenAI's schema); the X-Textcl-Truncated-Inputs header counts the cut ones")
    async def embeddings(body: EmbeddingsRequest, request: Request) -> Response:  # type: ignore[valid-type]
        try:
            embedder = embedders.get(body.model)
        except UnknownModelError as exc:
            return model_not_found(request, exc)
        dim = body.dimensions
        if dim is not None and dim > embedder.dim:
            raise ConfigError("dimensions", f"{dim} is above the width of model {embedder.name!r}; expected 1 to "
                              f"{embedder.dim}")
        texts = _texts(body.input)
        too_large = _over_response_limit(len(texts), dim or embedder.dim, body.encoding_format,
                                         config.max_response_chars)
        if too_large:
            return error_response(413, too_large, [{"field": "input", "message": "too large an answer"}],
                                  path=request.url.path, code="response_too_large")
        embedder.check_prompt(body.input_type)
        counts = await run_in_threadpool(embedder.count, texts, body.input_type)
        over = np.flatnonzero(counts > embedder.max_tokens)
        if len(over) and not body.truncate:
            raise ConfigError("input", _over_limit(over, counts, embedder.max_tokens))
        vectors = await embedder.embed(texts, body.input_type, dim)
        tokens = int(np.minimum(counts, embedder.max_tokens).sum())
        payload = await run_in_threadpool(render_embeddings, vectors, body.encoding_format, embedder.name, tokens)
        return Response(payload, media_type="application/json", headers={TRUNCATED_HEADER: str(len(over))})

    @router.get("/models", response_model=ModelList, responses=ERRORS, summary="the models served")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_card(e, config) for e in embedders]}

    @router.get("/models/{model_id:path}", response_model=ModelCard, responses=ERRORS, summary="one served model")
    async def model(request: Request, model_id: str = Path(description="a model's id")) -> Any:
        try:
            return _card(embedders.get(model_id), config)
        except UnknownModelError as exc:
            return model_not_found(request, exc)

    return router
