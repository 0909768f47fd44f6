"""``RemoteEncoder``: vectors from a server that speaks the OpenAI embeddings API, for batch jobs.

    from textcl.encode.remote import RemoteEncoder
    encoder = RemoteEncoder("http://gpu-box:8000", model="minilm")   # textcl serve --model minilm=...
    vectors = encoder.encode(texts)                                   # float32 (n, d), in order

Any OpenAI-compatible server answers (``textcl serve --model``, text-embeddings-inference, infinity, vLLM,
Ollama), so one GPU box can embed for many indexing clients: ``textcl encode --server URL`` and ``textcl
index build --server URL``. Texts go in requests of ``batch_size``, ``concurrency`` of them in flight (the
server batches what arrives together), never more than the server's ``max_inputs`` (textcl's model card);
a request the server finds too large (413, or the connection reset while sending it) is split in halves, and
later ones start at that size. Vectors come back as base64 float32, checked (:mod:`textcl.encode.remote_answer`).
A busy server (503, 429) is retried after its ``Retry-After``; any other error, or no answer within
``timeout``, stops the job with the server's address and message. The API key is ``api_key`` or
``$TEXTCL_API_KEY``, sent as ``Authorization: Bearer``, and never to another origin: a redirect elsewhere is
refused. ``encode(prompt_name=)`` is sent as ``input_type`` (textcl's extension).
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from textcl.encode.remote_answer import AnswerError, decode_embedding, embeddings_of  # noqa: F401 (re-exported)
from textcl.errors import TextclError

API_KEY_ENV = "TEXTCL_API_KEY"
RETRY_STATUSES = {429, 503}


class RemoteEncoderError(TextclError):
    """The server could not be reached, refused a request, or answered something that is not embeddings."""


class RequestTooLarge(RemoteEncoderError):
    """HTTP 413, or the connection reset while a request was sent: split the request."""

    def __init__(self, where: str, detail: str):
        super().__init__(f"{where}: {detail}")
        self.where, self.detail = where, detail


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(parts.scheme)


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect on the server's own origin; refuses one elsewhere (the API key would go along)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if _origin(newurl) != _origin(req.full_url):
            raise RemoteEncoderError(f"{req.get_method()} {req.full_url}: redirected to {newurl}, another origin: not "
                                     "followed, so the API key is not sent there; give that server as --server if "
                                     "it is the one to use")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SameOriginRedirects)


def base_url(url: str) -> str:
    """``http://host:8000``, ``http://host:8000/`` and ``http://host:8000/v1`` -> ``http://host:8000/v1``."""
    if not url.startswith(("http://", "https://")):
        raise RemoteEncoderError(f"--server {url!r}: expected an http:// or https:// URL")
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


class RemoteEncoder:
    """Args:
        url: the server (``http://host:port``, with or without ``/v1``).
        model: the served model's name (default: the server's only model, from ``GET /v1/models``).
        api_key: default ``$TEXTCL_API_KEY``.
        batch_size: texts per request (``encode``'s ``batch_size`` overrides it).
        concurrency: requests in flight at once.
        input_type: a prompt name (textcl's extension; other servers refuse unknown fields, so leave None).
        timeout: seconds to wait for one answer; retries: how often a busy server is asked again.
    """

    def __init__(self, url: str, model: str | None = None, *, api_key: str | None = None, batch_size: int = 64,
                 concurrency: int = 4, input_type: str | None = None, timeout: float = 300.0, retries: int = 20):
        self.url = base_url(url)
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self.batch_size = max(1, int(batch_size))
        self.concurrency = max(1, int(concurrency))
        self.input_type = input_type
        self.timeout = timeout
        self.retries = retries
        self.truncate_dim: int | None = None  #: set to ask the server for the first d dimensions
        self.model = model or self._only_model()
        self.name = self.model
        self._dim: int | None = None
        self._max_inputs: int | None | bool = False  # the server's limit, asked once (None: it names none)

    @property
    def dim(self) -> int:
        """The served model's full width (asked once, by embedding one text)."""
        if self._dim is None:
            self._dim = int(self._embed(["dimension probe"], None, self.input_type).shape[1])
        return self._dim

    @property
    def max_inputs(self) -> int | None:
        """The most texts the server takes in a request, from its model card (textcl's ``max_inputs``), or None."""
        if self._max_inputs is False:
            self._max_inputs = None
            try:
                cards = self._request("GET", "/models").get("data", [])
                card = next(c for c in cards if isinstance(c, dict) and c.get("id") == self.model)
                if isinstance(card.get("max_inputs"), int) and card["max_inputs"] > 0:
                    self._max_inputs = card["max_inputs"]
            except (RemoteEncoderError, AttributeError, StopIteration):
                pass  # a server without textcl's card: requests of batch_size, split when too large
        return self._max_inputs

    def encode(self, texts: str | Sequence[str], batch_size: int | None = None, normalize: bool | None = None,
               show_progress: bool = False, dim: int | None = None, prompt_name: str | None = None,
               **_: Any) -> np.ndarray:
        """float32 ``(n, d)`` in the input order (``(d,)`` for one string). ``normalize=True`` L2-normalises
        here; otherwise the vectors are as the server's model makes them. ``dim``: the first ``dim``
        dimensions (default: ``truncate_dim``, else all), cut by the server (``dimensions``). ``prompt_name``:
        sent as ``input_type`` (default: the ``input_type`` given to the constructor)."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        dim = dim if dim is not None else self.truncate_dim
        input_type = prompt_name if prompt_name is not None else self.input_type
        size = max(1, int(batch_size or self.batch_size))
        if texts and self.max_inputs:
            size = min(size, self.max_inputs)
        parts = [texts[i : i + size] for i in range(0, len(texts), size)]
        bar = None
        if show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="encode (server)", unit="text")

        def run(part: list[str]) -> np.ndarray:
            vecs = self._embed_split(part, dim, input_type)
            if bar is not None:
                bar.update(len(part))
            return vecs

        try:
            with ThreadPoolExecutor(self.concurrency) as pool:
                done = list(pool.map(run, parts))
        finally:
            if bar is not None:
                bar.close()
        width = dim or (done[0].shape[1] if done else self.dim)
        out = np.concatenate(done) if done else np.zeros((0, width), np.float32)
        if normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            np.divide(out, norms, out=out, where=norms > 0)
        return out[0] if single else out

    # ---------------------------------------------------------------- HTTP
    def _embed_split(self, texts: list[str], dim: int | None, input_type: str | None) -> np.ndarray:
        """:meth:`_embed`, in halves (recursively) while the server finds the request too large."""
        try:
            return self._embed(texts, dim, input_type)
        except RequestTooLarge as exc:
            if len(texts) == 1:
                raise RemoteEncoderError(f"{exc.where}: HTTP 413: one text of {len(texts[0]):,} characters is larger "
                                         f"than the server accepts in a request; shorten it ({exc.detail})") from None
        half = len(texts) // 2
        self.batch_size = min(self.batch_size, half)  # the parts not yet sent are split too, on their own
        return np.concatenate([self._embed_split(texts[:half], dim, input_type),
                               self._embed_split(texts[half:], dim, input_type)])

    def _embed(self, texts: list[str], dim: int | None, input_type: str | None) -> np.ndarray:
        body: dict[str, Any] = {"input": texts, "model": self.model, "encoding_format": "base64"}
        if dim is not None:
            body["dimensions"] = int(dim)
        if input_type is not None:
            body["input_type"] = input_type
        answer = self._request("POST", "/embeddings", body)
        try:
            return embeddings_of(answer, len(texts), dim)
        except AnswerError as exc:
            raise RemoteEncoderError(f"{self.url}/embeddings answered {exc}") from None

    def _only_model(self) -> str:
        answer = self._request("GET", "/models")
        ids = [m.get("id") for m in answer.get("data", [])] if isinstance(answer, dict) else []
        if len(ids) != 1 or not isinstance(ids[0], str):
            raise RemoteEncoderError(f"{self.url} serves {len(ids)} models ({', '.join(map(str, ids))}): name one "
                                     "with --model")
        return ids[0]

    def _request(self, method: str, path: str, body: dict | None = None) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
            where = f"{method} {self.url}{path}"
            try:
                with _OPENER.open(request, timeout=self.timeout) as response:
                    raw = response.read()
                return json.loads(raw)
            except urllib.error.HTTPError as exc:
                if exc.code in RETRY_STATUSES and attempt < self.retries:
                    time.sleep(min(10.0, _retry_after(exc.headers.get("Retry-After"))))
                    continue
                if exc.code == 413:
                    raise RequestTooLarge(where, _message(exc)) from None
                raise RemoteEncoderError(f"{where}: HTTP {exc.code}: {_message(exc)}") from None
            except (urllib.error.URLError, OSError) as exc:
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                if isinstance(reason, TimeoutError):
                    raise RemoteEncoderError(f"{where}: no answer within {self.timeout:g} s (--server)") from None
                if data is not None and isinstance(reason, (ConnectionResetError, BrokenPipeError)):
                    raise RequestTooLarge(where, f"the connection was reset while sending {len(data):,} bytes, "
                                          "as a server does to a request over its limit") from None
                raise RemoteEncoderError(f"{self.url}: cannot reach the server ({reason})") from None
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise RemoteEncoderError(f"{method} {self.url}{path}: the answer is not JSON") from None
        raise AssertionError("unreachable")


def _retry_after(value: str | None) -> float:
    try:
        return max(0.1, float(value))
    except (TypeError, ValueError):
        return 1.0


def _message(exc: urllib.error.HTTPError) -> str:
    """The server's error message: OpenAI's ``error.message``, textcl's ``message``, else the raw text."""
    raw = exc.read()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw[:300].decode("utf-8", "replace") or exc.reason
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
        if isinstance(body.get("message"), str):
            return body["message"]
        if isinstance(body.get("detail"), str):
            return body["detail"]
    return raw[:300].decode("utf-8", "replace")
