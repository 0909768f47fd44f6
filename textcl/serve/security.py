"""Safe defaults: write endpoints off unless allowed, a bearer token for them when configured, bounded bodies.

* :func:`writer_guard` is the dependency of ``POST /documents`` and ``DELETE /documents/{id}``: 403 while
  writes are off (``--allow-writes``), 401 without ``Authorization: Bearer <key>`` when a key is set
  (``--api-key`` or ``$TEXTCL_API_KEY``; compared in constant time). Searches need no key.
* :func:`key_guard` is the embeddings API's: the same key check when a key is set, open otherwise.
* :class:`BodyLimitMiddleware` answers 413 to a request body over ``max_bytes``, whether it announces its
  length or streams it, before any of it is parsed.
* :data:`PAGE_HEADERS`: the search page may run only its own script and style (no inline script), so text
  from the index can never execute even if it were inserted as HTML.
"""
from __future__ import annotations

import hmac
import json
from typing import Awaitable, Callable

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from textcl.serve.config import ServeConfig
from textcl.serve.errors import error_for

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}

bearer = HTTPBearer(auto_error=False, description="the API key given to `textcl serve --api-key` (write endpoints)")


def _check_key(config: ServeConfig, credentials: HTTPAuthorizationCredentials | None) -> None:
    """401 unless the request carries the server's API key (nothing to check when none is set)."""
    if config.api_key is None:
        return
    token = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(token.encode("utf-8", "surrogatepass"), config.api_key.encode("utf-8")):
        raise HTTPException(401, "this endpoint needs the header `Authorization: Bearer <API key>` with the "
                            "key the server was started with" + (" (the key sent does not match)" if token else ""),
                            headers={"WWW-Authenticate": "Bearer"})


def writer_guard(config: ServeConfig) -> Callable[..., Awaitable[None]]:
    async def guard(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not config.allow_writes:
            raise HTTPException(403, "write endpoints are off: start the server with --allow-writes")
        _check_key(config, credentials)
    return guard


def key_guard(config: ServeConfig) -> Callable[..., Awaitable[None]]:
    """The dependency of the embeddings API: the API key when the server has one (OpenAI clients always send
    one), else open, as searches are."""
    async def guard(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        _check_key(config, credentials)
    return guard


class BodyLimitMiddleware:
    """ASGI middleware: read at most ``max_bytes`` of a request body, else answer 413 (JSON)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._reject(scope, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope, send) -> None:
        _, body = error_for(scope.get("path", ""), 413, f"the request body is larger than the limit of "
                            f"{self.max_bytes} bytes (--max-body-mb); send fewer documents or inputs per request")
        payload = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})
