"""Refuse cross-site requests: a foreign ``Host`` (DNS rebinding) and changes from a foreign ``Origin``.

Why. A server on 127.0.0.1 is reachable from the user's own browser, so any web page the user opens can
send it requests: a form or ``fetch`` POST (the browser adds ``Origin: http://that.page``), or, through DNS
rebinding, requests to ``http://evil.example:8000`` that land on 127.0.0.1 (the browser sends
``Host: evil.example:8000`` and lets that page read the answers). Loopback needs no API key for writes, so
:class:`HostOriginGuard`, the outermost middleware, checks two headers:

* ``Host`` must be a loopback name or address (``localhost``, ``127.0.0.1``, ``[::1]``; any port), the
  address the server is bound to, any IP address when it is bound to all interfaces (``0.0.0.0``, ``::``:
  an address is not a DNS name, so it cannot be rebound), or one of ``--allowed-host`` (``*``: any).
  Else 400, before the request reaches a route.
* A request that can change something (not GET, HEAD or OPTIONS) that carries an ``Origin`` must come from
  the server's own origin (the Origin's host and port are the Host's; the scheme is not compared, since a
  proxy may end TLS) or from one of ``--cors-origin`` (``*``: any; allowed with writes only together with
  an API key). Else 403. Clients that send no Origin (curl, scripts) are not browsers, and pass.
"""
from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit

from textcl.serve.config import ServeConfig, is_loopback, is_wildcard
from textcl.serve.errors import error_for

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host(value: str) -> tuple[str, int | None]:
    """``'Example.com:8000'`` -> ``('example.com', 8000)``; ``'[::1]'`` -> ``('::1', None)``."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = value.partition(":")
    return host, int(port) if port.isdigit() else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class HostOriginGuard:
    """ASGI middleware: 400 for a Host the server does not answer to, 403 for a change from a foreign page."""

    def __init__(self, app, config: ServeConfig):
        self.app = app
        self.any_host = "*" in config.allowed_hosts
        self.bound = split_host(config.host)[0]
        self.wildcard = is_wildcard(config.host)
        self.allowed = {split_host(h) for h in config.allowed_hosts if h != "*"}
        self.any_origin = "*" in config.cors_origins
        self.origins = {o.rstrip("/").lower() for o in config.cors_origins}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if host and not self.host_allowed(host):
            await _refuse(send, scope, 400, "Host (header)",
                          f"Host {host!r} is not served here: this server answers to localhost, 127.0.0.1, [::1] "
                          "and the address it is bound to; to serve it under another name (behind a proxy, or "
                          f"bound to 0.0.0.0), start it with --allowed-host {split_host(host)[0]}")
            return
        origin = headers.get(b"origin")
        if origin is not None and scope["method"] not in SAFE_METHODS:
            origin_text = origin.decode("latin-1")
            if not self.origin_allowed(origin_text, host):
                await _refuse(send, scope, 403, "Origin (header)",
                              f"a change from the web page at {origin_text!r} is refused: this server takes writes "
                              "from its own page, from clients that send no Origin (scripts, curl), and from the "
                              "origins given with --cors-origin")
                return
        await self.app(scope, receive, send)

    def host_allowed(self, value: str) -> bool:
        host, port = split_host(value)
        return (self.any_host or is_loopback(host) or host == self.bound or (self.wildcard and _is_ip(host))
                or (host, None) in self.allowed or (host, port) in self.allowed)

    def origin_allowed(self, origin: str, host_header: str) -> bool:
        if self.any_origin or origin.rstrip("/").lower() in self.origins:
            return True
        try:
            parts = urlsplit(origin)
            origin_port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        except ValueError:  # a malformed port
            return False
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname or not host_header:
            return False  # "null" (sandboxed frames, files) and anything that is not a web origin
        host, port = split_host(host_header)
        # a Host without a port means the client used its scheme's default port
        return parts.hostname == host and origin_port == (port or DEFAULT_PORTS[parts.scheme])


async def _refuse(send, scope, status: int, field: str, message: str) -> None:
    status, body = error_for(scope.get("path", ""), status, message, [{"field": field, "message": message}])
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
