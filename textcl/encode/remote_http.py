"""One JSON request to an embeddings server, as :class:`~textcl.encode.remote.RemoteEncoder` sends it.

The API key goes as ``Authorization: Bearer`` and never to another origin (a redirect elsewhere, or to a URL
without a valid port, is refused). A busy server (503, 429) is asked again after its ``Retry-After``, and one
that closes the connection without an answer (a crash, a restart, an idle timeout) after a short pause; a
connection reset otherwise (the request was sent, or was being sent, and the server would not read it) is
:class:`RequestTooLarge`, like a 413. Answers are read up to a limit the caller gives; malformed HTTP, JSON
or sizes end in a :class:`RemoteEncoderError` naming the method and URL.
"""
from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from textcl.errors import TextclError

API_KEY_ENV = "TEXTCL_API_KEY"
RETRY_STATUSES = {429, 503}
RESTART_STATUSES = {502, 504}  # a proxy before a server that is restarting: asked again once it has answered
DISCONNECT_RETRIES = 2  # a connection closed without an answer: maybe a text that crashes the server
ERROR_BYTES = 1 << 16  # of an error answer: its message is all that is read
MESSAGE_CHARS = 300  # of the server's error message, shown


class RemoteEncoderError(TextclError):
    """The server could not be reached, refused a request, or answered something that is not embeddings."""


class RequestTooLarge(RemoteEncoderError):
    """HTTP 413, or the connection reset over a request: split the request. ``code``: the server's error code."""

    def __init__(self, where: str, detail: str, code: str | None = None):
        super().__init__(f"{where}: {detail}")
        self.where, self.detail, self.code = where, detail, code


class ServerDisconnected(RemoteEncoderError):
    """The server closed the connection without an answer, ``tries`` times: halve the request to find the input."""

    def __init__(self, where: str, tries: int):
        super().__init__(f"{where}: the server closed the connection without an answer ({tries} tries)")
        self.where, self.tries = where, tries


def check_retries(retries: int) -> int:
    """``retries`` when it is 0 or more, else ConfigError naming it."""
    from textcl.errors import ConfigError

    if not isinstance(retries, int) or retries < 0:
        raise ConfigError("retries", f"expected 0 or more, got {retries!r}")
    return retries


def _backoff(attempt: int) -> float:
    return min(10.0, 0.5 * 2**attempt)


def check_api_key(key: str | None) -> None:
    """Refuse a key that cannot be an HTTP header (a newline, say) without showing it: http.client's own
    error would print it."""
    if key is None:
        return
    try:
        key.encode("latin-1")
        ok = all(32 <= ord(c) != 127 for c in key)
    except UnicodeEncodeError:
        ok = False
    if not ok:
        raise RemoteEncoderError(f"api_key (${API_KEY_ENV}): holds a control character or one outside Latin-1; "
                                 "expected a token on one line")


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of ``url``; a port that is no port makes an origin of its own."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return ("invalid", url, None)
    return parts.scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(parts.scheme)


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect on the server's own origin; refuses one elsewhere (the API key would go along)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if _origin(newurl) != _origin(req.full_url):
            raise RemoteEncoderError(f"{req.get_method()} {req.full_url}: redirected to {newurl}, another origin: not "
                                     "followed, so the API key is not sent there; give that server as --server if "
                                     "it is the one to use")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SameOriginRedirects)


def request_json(method: str, url: str, body: dict | None, *, api_key: str | None, timeout: float, retries: int,
                 limit: int, needs: str, answered: bool = False, disconnects: int = DISCONNECT_RETRIES) -> Any:
    """The JSON answer to ``method url`` with ``body``. ``limit``: the most bytes an answer may have, which is
    more than ``needs`` (for the message: ``"3 embedding(s) need"``). ``retries``: how often a busy server (503,
    429) is asked again and, once it has ``answered`` this client, one that restarts (connection refused, 502,
    504); of those, at most ``disconnects`` for a connection closed without an answer (then
    :class:`ServerDisconnected`)."""
    check_retries(retries)
    dropped = 0
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(body).encode() if body is not None else None
    where = f"{method} {url}"
    for attempt in range(retries + 1):
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                raw = response.read(limit + 1)
                if len(raw) > limit:
                    raise RemoteEncoderError(f"{where}: the answer is over {limit:,} bytes, more than {needs}; "
                                             "refused")
                if response.length:  # read(amt) stops at the end of the stream without complaint
                    raise http.client.IncompleteRead(raw, response.length)
            return _parse(raw, where)
        except urllib.error.HTTPError as exc:
            if exc.code in RETRY_STATUSES and attempt < retries:
                time.sleep(min(10.0, _retry_after(exc.headers.get("Retry-After"))))
                continue
            if answered and exc.code in RESTART_STATUSES and attempt < retries:
                time.sleep(_backoff(attempt))
                continue
            message, code = _message(exc)
            if exc.code == 413:
                raise RequestTooLarge(where, message, code) from None
            raise RemoteEncoderError(f"{where}: HTTP {exc.code}: {message}") from None
        except http.client.RemoteDisconnected:  # closed without a word: not a verdict on the request's size
            if dropped < min(disconnects, retries) and attempt < retries:
                time.sleep(_backoff(dropped))
                dropped += 1
                continue
            raise ServerDisconnected(where, dropped + 1) from None
        except http.client.HTTPException as exc:
            raise RemoteEncoderError(f"{where}: not an HTTP answer ({type(exc).__name__})") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(reason, TimeoutError):
                raise RemoteEncoderError(f"{where}: no answer within {timeout:g} s (--server)") from None
            if answered and isinstance(reason, ConnectionRefusedError) and attempt < retries:  # a restart
                time.sleep(_backoff(attempt))
                continue
            if data is not None and isinstance(reason, (ConnectionResetError, BrokenPipeError)):
                raise RequestTooLarge(where, f"the connection was reset over a request of {len(data):,} bytes, "
                                      "as a server does to a request over its limit") from None
            raise RemoteEncoderError(f"{url}: cannot reach the server ({reason})") from None
    raise AssertionError("unreachable")


def _parse(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        raise RemoteEncoderError(f"{where}: the answer is not JSON") from None


def _retry_after(value: str | None) -> float:
    try:
        return max(0.1, float(value))
    except (TypeError, ValueError):
        return 1.0


def _clean(text: str) -> str:
    """The server's message without control characters (a terminal's escapes), at most :data:`MESSAGE_CHARS`."""
    text = "".join(c for c in text if c.isprintable())
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "..."


def _message(exc: urllib.error.HTTPError) -> tuple[str, str | None]:
    """The server's error message (OpenAI's ``error.message``, textcl's ``message``, else the raw text),
    cleaned (:func:`_clean`), and code (OpenAI's ``error.code``), from at most :data:`ERROR_BYTES` of the answer."""
    message, code = _raw_message(exc)
    return _clean(message), code


def _raw_message(exc: urllib.error.HTTPError) -> tuple[str, str | None]:
    try:
        raw = exc.read(ERROR_BYTES)
    except (OSError, http.client.HTTPException):
        raw = b""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return raw[:300].decode("utf-8", "replace") or str(exc.reason), None
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            code = inner.get("code")
            return inner["message"], code if isinstance(code, str) else None
        for key in ("message", "detail"):
            if isinstance(body.get(key), str):
                return body[key], None
    return raw[:300].decode("utf-8", "replace"), None
