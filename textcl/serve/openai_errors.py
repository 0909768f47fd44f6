"""Errors of the OpenAI-compatible API (every path under ``/v1/``) in OpenAI's shape.

``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}``: ``message`` names the field and what
was expected, as everywhere in textcl; ``param`` is the request field at fault (``input``, ``dimensions``,
...) or null; ``type`` is ``invalid_request_error`` for every 4xx and ``server_error`` for a 5xx. OpenAI
answers invalid requests with 400, so the ``/v1`` paths do too where the search API answers 422. The
official clients read ``error.message`` into the exception they raise (``openai.BadRequestError``, ...).
"""
from __future__ import annotations

from typing import Any

PREFIX = "/v1/"
CODES = {400: "invalid_request", 401: "invalid_api_key", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed", 413: "request_too_large", 415: "unsupported_media_type",
         429: "rate_limited", 500: "internal_error", 503: "unavailable"}


def is_openai_path(path: str) -> bool:
    """True for the paths of the OpenAI-compatible API (``/v1/...``)."""
    return path == PREFIX.rstrip("/") or path.startswith(PREFIX)


def openai_status(status: int) -> int:
    """The status OpenAI answers where the search API answers ``status``: 400 for invalid input."""
    return 400 if status == 422 else status


def openai_error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code or CODES.get(status)}}


def param_of(field: str | None) -> str | None:
    """The top-level request field of a field name: ``input[3]`` -> ``input``; ``body`` and headers -> None."""
    if not field or field == "body" or field.endswith("(header)"):
        return None
    return field.split("[", 1)[0].split(".", 1)[0].split(" ", 1)[0]
