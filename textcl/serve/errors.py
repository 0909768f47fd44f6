"""Every error the service answers is JSON: ``{"error": code, "message": ..., "fields": [{field, message}]}``,
or, on the OpenAI-compatible paths (``/v1/...``), OpenAI's ``{"error": {message, type, param, code}}``
(:mod:`textcl.serve.openai_errors`).

Bad input is a 4xx whose message names the field and says what was expected (``k: Input should be less than
or equal to 1000 (got 5000)``). An unexpected exception is logged with its traceback on the server and
answered as a 500 that holds no traceback.
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from textcl.errors import ConfigError, TextclError
from textcl.index import (DimensionMismatchError, DuplicateIdError, EmptyQueryError, IndexStateError,
                          UnknownIdError)
from textcl.serve.batcher import BusyError, ShuttingDownError
from textcl.serve.openai_errors import is_openai_path, openai_error_body, openai_status, param_of

log = logging.getLogger("textcl.serve")

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid_request",
         429: "too_many_requests", 500: "internal", 503: "unavailable"}
_UNION_TAGS = {"bool", "int", "float", "str", "list", "dict", "none", "json-or-python[json=int,python=int]"}
_MAX_SHOWN = 5


def error_body(status: int, message: str, fields: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"error": CODES.get(status, "error"), "message": message, "fields": fields or []}


def error_for(path: str, status: int, message: str, fields: list[dict[str, str]] | None = None,
              code: str | None = None) -> tuple[int, dict[str, Any]]:
    """``(status, body)`` of an error answered to a request for ``path``: OpenAI's shape and status under
    ``/v1/`` (``code`` overrides the one the status implies), textcl's elsewhere."""
    if is_openai_path(path):
        status = openai_status(status)
        return status, openai_error_body(status, message, param_of(fields[0]["field"]) if fields else None, code)
    return status, error_body(status, message, fields)


def error_response(status: int, message: str, fields: list[dict[str, str]] | None = None,
                   headers: dict[str, str] | None = None, path: str = "", code: str | None = None) -> JSONResponse:
    """The error as a response; ``path``: the request's, which chooses the shape (see :func:`error_for`)."""
    status, body = error_for(path, status, message, fields, code)
    return JSONResponse(body, status_code=status, headers=headers)


def field_name(loc: tuple) -> str:
    """``('body', 'documents', 0, 'text')`` -> ``documents[0].text``; ``('query', 'k')`` -> ``k (query
    parameter)``. Union branch tags that pydantic appends (``bool``, ``function-after[...]``) are dropped."""
    where, *rest = loc if loc else ("body",)
    parts: list[str] = []
    for item in rest:
        if isinstance(item, str) and (item in _UNION_TAGS or "[" in item):
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    name = "".join(parts) or where
    return f"{name} ({where} parameter)" if where in ("query", "path", "header") else name


def _shown_input(value: Any) -> str:
    if isinstance(value, (dict, list)) or value is None:
        return ""
    text = repr(value)
    return f" (got {text[:60]}{'...' if len(text) > 60 else ''})"


def validation_fields(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One entry per field; the alternatives of a union are joined with "or"."""
    grouped: dict[str, list[str]] = {}
    for err in errors:
        name = field_name(tuple(err.get("loc") or ()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if err.get("type") == "json_invalid":
            msg = f"not valid JSON ({err.get('ctx', {}).get('error', 'syntax error')})"
            name = "body"
        elif err.get("type") == "missing" and name == "body":
            msg = "a JSON object is required"
        elif err.get("type") not in ("missing", "extra_forbidden"):
            msg += _shown_input(err.get("input"))
        if msg not in grouped.setdefault(name, []):
            grouped[name].append(msg)
    return [{"field": name, "message": " or ".join(msgs)} for name, msgs in grouped.items()]


def _message(fields: list[dict[str, str]]) -> str:
    shown = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:_MAX_SHOWN])
    more = len(fields) - _MAX_SHOWN
    return shown + (f"; and {more} more" if more > 0 else "")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn validation errors, index errors and HTTP errors into JSON."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = validation_fields(list(exc.errors()))
        return error_response(422, _message(fields), fields, path=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path} (see /docs)"
        return error_response(exc.status_code, detail, headers=getattr(exc, "headers", None), path=request.url.path)

    def _mapped(status: int):
        async def handler(request: Request, exc: Exception) -> JSONResponse:
            fields = [{"field": exc.field, "message": exc.reason}] if isinstance(exc, ConfigError) else []
            return error_response(status, str(exc), fields, path=request.url.path)
        return handler

    for exc_type, status in ((EmptyQueryError, 422), (ConfigError, 422), (DuplicateIdError, 409),
                             (UnknownIdError, 404), (IndexStateError, 409), (DimensionMismatchError, 500),
                             (TextclError, 400)):
        app.add_exception_handler(exc_type, _mapped(status))

    @app.exception_handler(BusyError)
    async def _busy(request: Request, exc: BusyError) -> JSONResponse:
        return error_response(503, f"the server is busy: {exc}", headers={"Retry-After": "1"}, path=request.url.path)

    @app.exception_handler(ShuttingDownError)
    async def _stopping(request: Request, exc: ShuttingDownError) -> JSONResponse:
        return error_response(503, "the server is shutting down; retry once it is back", headers={"Retry-After": "5"},
                              path=request.url.path)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error; the server log has the details", path=request.url.path)
