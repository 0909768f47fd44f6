"""``ServeConfig``: every choice ``textcl serve`` makes, as one typed, validated dataclass.

A server serves an index folder (the search API), embedding models (the OpenAI embeddings API under
``/v1``), or both. The defaults are the safe ones: bound to 127.0.0.1, write endpoints off, CORS off,
answering only to loopback host names, bodies, ``k``, queries, hits and inputs per request bounded.
:meth:`ServeConfig.validate` raises :class:`~textcl.errors.ConfigError` naming the command-line flag at fault.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from textcl.errors import ConfigError

API_KEY_ENV = "TEXTCL_API_KEY"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); False for anything else,
    including ``0.0.0.0`` and host names, which may resolve to a public interface."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    """True for the addresses that bind every interface (``0.0.0.0``, ``::``)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def default_threads(workers: int = 1) -> int:
    """torch threads per serving process to start with: the usable cores split between the workers, at least one.

    Unless ``--threads`` or ``OMP_NUM_THREADS`` fixes them, a
    :class:`~textcl.thread_governor.ThreadGovernor` then keeps them at the cores other processes leave free,
    measured before each batch: on 2 cores (benchmarks/RESULTS.md, "Serving threads"), torch's default of a
    thread per core collapsed beside one busy process (14.5 QPS and a p99 of 280 ms for a lone client, against
    55.6 QPS and 28 ms with one thread)."""
    from textcl.threads import threads_for  # usable cores: affinity capped by a container's CPU quota

    return threads_for("serve", workers=workers)


_HOST_NAME = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:[0-9]{1,5})?")


def parse_model_spec(spec: str) -> tuple[str, str]:
    """``--model`` as ``(served name, model)``: ``NAME=PATH`` names the model ``PATH`` ``NAME`` in the
    embeddings API; a bare ``PATH`` (a folder or hub name) is served under the name as given."""
    name, sep, path = spec.partition("=")
    if sep and name and path and "/" not in name and os.sep not in name:
        return name, path
    return spec, spec


def write_log_path(index_dir: str | os.PathLike) -> Path:
    """Where the write-ahead log of ``index_dir`` lives: beside the folder, since saving replaces the folder
    as a whole (``wiki-index`` -> ``wiki-index.wal.sqlite``)."""
    path = Path(index_dir).expanduser().absolute()
    return path.with_name(path.name + ".wal.sqlite")


@dataclass
class ServeConfig:
    """Settings of one ``textcl serve`` process (see ``textcl serve --help`` for each flag)."""

    index_dir: Path | None = None  #: the index folder to search; None: embedding models only
    #: the index's model (``--index-model``), checked against the manifest's fingerprint when one is recorded;
    #: default: the model the manifest names
    model: str | None = None
    #: models served by the OpenAI embeddings API (``/v1/embeddings``): ``PATH`` or ``NAME=PATH`` each
    models: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    allow_writes: bool = False
    api_key: str | None = None  #: bearer token for the write endpoints; default: $TEXTCL_API_KEY
    cors_origins: list[str] = field(default_factory=list)
    #: host names (optionally :port) the server answers to besides loopback ones and --host; "*": any
    allowed_hosts: list[str] = field(default_factory=list)
    # micro-batching of concurrent queries
    batching: bool = True
    max_batch: int = 64  #: queries encoded in one forward
    max_wait_ms: float = 2.0  #: how long the first query of a batch waits for company, once batches form
    max_pending: int = 4096  #: queued queries beyond this are answered 503 (back-pressure)
    threads: int | None = None  #: torch intra-op threads for encoding (default: :func:`default_threads`)
    backend: str | None = None  #: torch, onnx or auto (default: $TEXTCL_BACKEND, else torch)
    #: fp32, bf16, or auto: a bf16 copy of the weights where it measures faster on this machine and its vectors
    #: agree with fp32's
    precision: str = "auto"
    #: with several workers, each model's ``auto`` resolved once by the parent process (by --model spec, and
    #: "index"): every worker then encodes alike
    decided_precision: dict = field(default_factory=dict)
    # request limits
    max_k: int = 1000
    max_queries: int = 64  #: queries in one POST /search
    max_hits: int = 1000  #: queries x k in one search request
    #: characters of document text and titles in one search answer (the hits' count alone does not bound it:
    #: documents may hold 100k characters each)
    max_response_chars: int = 8_000_000
    max_documents: int = 1000  #: documents in one POST /documents
    max_query_chars: int = 2000
    max_inputs: int = 2048  #: texts in one POST /v1/embeddings (OpenAI's own limit)
    max_body_bytes: int = 4 * 2**20
    # durability
    save_interval_s: float = 30.0  #: the vector index is saved this often when it changed (and on shutdown)
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.index_dir is not None:
            # resolved once: a link repointed while serving (blue/green) must not receive this server's saves
            index_dir = Path(self.index_dir).expanduser()
            try:
                self.index_dir = index_dir.resolve() if index_dir.is_symlink() else index_dir
            except (RuntimeError, OSError):
                self.index_dir = index_dir
        if self.api_key is None:
            self.api_key = os.environ.get(API_KEY_ENV) or None

    @property
    def log_path(self) -> Path:
        return write_log_path(self.index_dir)

    def replace(self, **changes) -> "ServeConfig":
        return dataclasses.replace(self, **changes)

    def validate(self) -> "ServeConfig":
        """Check every field; raise ConfigError naming the flag. Returns self."""
        positive = {
            "--port": self.port, "--workers": self.workers, "--max-batch": self.max_batch, "--max-k": self.max_k,
            "--max-queries": self.max_queries, "--max-hits": self.max_hits, "--max-documents": self.max_documents,
            "--max-query-chars": self.max_query_chars, "--max-body-mb": self.max_body_bytes,
            "--max-pending": self.max_pending, "--max-response-chars": self.max_response_chars,
            "--max-inputs": self.max_inputs,
        }
        for flag, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(flag, f"must be a positive integer, got {value!r}")
        from textcl.models.onnx_backend import resolve_backend

        self.backend = resolve_backend(self.backend)
        from textcl.models.encode_precision import SERVE_PRECISIONS

        if self.precision not in SERVE_PRECISIONS:
            raise ConfigError("--precision", f"expected one of {', '.join(SERVE_PRECISIONS)}, got {self.precision!r}")
        if self.precision == "bf16" and self.backend != "torch":
            raise ConfigError("--precision", f"bf16 runs on the torch backend, not {self.backend}: use --backend "
                              "torch, or --precision fp32")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError("--threads", f"must be a positive integer, got {self.threads!r}")
        if self.port > 65535:
            raise ConfigError("--port", f"must be at most 65535, got {self.port}")
        if not 0 <= self.max_wait_ms <= 1000:
            raise ConfigError("--max-wait-ms", f"must be between 0 and 1000 ms, got {self.max_wait_ms}")
        if self.save_interval_s <= 0:
            raise ConfigError("--save-interval", f"must be > 0 seconds, got {self.save_interval_s}")
        self._check_models()
        if self.allow_writes and self.workers > 1:
            raise ConfigError("--workers", f"{self.workers} workers with --allow-writes: writes need one process "
                              "(a single writer owns the write-ahead log and saves the index); serve writes "
                              "with --workers 1, or read-only with several")
        if self.allow_writes and not is_loopback(self.host) and not self.api_key:
            raise ConfigError("--api-key", f"--allow-writes on {self.host}, which is not a loopback address, "
                              f"needs an API key: pass --api-key or set {API_KEY_ENV}")
        if self.api_key is not None and len(self.api_key) < 16:
            raise ConfigError("--api-key", "use at least 16 characters (e.g. `python -c 'import secrets; "
                              "print(secrets.token_urlsafe(32))'`)")
        for origin in self.cors_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ConfigError("--cors-origin", f"{origin!r}: expected an origin like https://example.com")
        if "*" in self.cors_origins and self.allow_writes and not self.api_key:
            raise ConfigError("--cors-origin", "'*' with --allow-writes lets any web page write to the index: set "
                              f"an API key (--api-key or {API_KEY_ENV}), or list the origins that may write")
        if "*" in self.allowed_hosts and self.allow_writes and not self.api_key:
            # any Host accepted means a DNS-rebound page is "its own origin": only a key keeps its writes out
            raise ConfigError("--allowed-host", "'*' with --allow-writes lets a web page that rebinds its name to "
                              f"this server write to the index: set an API key (--api-key or {API_KEY_ENV}), or "
                              "list the host names clients use")
        for host in self.allowed_hosts:
            if host != "*" and not _HOST_NAME.fullmatch(host):
                raise ConfigError("--allowed-host", f"{host!r}: expected a host name like search.example.com, "
                                  "optionally with :port (an IP address, [IPv6] address, or * for any)")
        return self

    def _check_models(self) -> None:
        if self.index_dir is None and not self.models:
            raise ConfigError("INDEX_DIR", "nothing to serve: give an index folder, one or more --model for the "
                              "embeddings API, or both")
        if self.index_dir is None and self.model is not None:
            raise ConfigError("--index-model", "searches an index: give the index folder (INDEX_DIR)")
        if self.index_dir is None and self.allow_writes:
            raise ConfigError("--allow-writes", "writes go to an index: give the index folder (INDEX_DIR)")
        names: dict[str, str] = {}
        for spec in self.models:
            if not isinstance(spec, str) or not spec.strip():
                raise ConfigError("--model", f"expected a model folder or hub name, optionally NAME=PATH; got {spec!r}")
            name, path = parse_model_spec(spec)
            if name in names:
                raise ConfigError("--model", f"two models are served as {name!r} ({names[name]!r} and {path!r}): "
                                  "name them apart with NAME=PATH")
            names[name] = path
