"""``RemoteEncoder``: vectors from a server that speaks the OpenAI embeddings API, for batch jobs.

    from textcl.encode.remote import RemoteEncoder
    encoder = RemoteEncoder("http://gpu-box:8000", model="minilm")   # textcl serve --model minilm=...
    vectors = encoder.encode(texts)                                   # float32 (n, d), in order

Any OpenAI-compatible server answers (``textcl serve --model``, text-embeddings-inference, infinity, vLLM,
Ollama), so one GPU box can embed for many indexing clients: ``textcl encode --server URL`` and ``textcl
index build --server URL``. Texts go in requests of ``batch_size``, ``concurrency`` of them in flight (the
server batches what arrives together); vectors come back as base64 float32. A busy server (503, 429) is
retried after its ``Retry-After``; any other error stops the job with the server's message. The API key is
``api_key`` or ``$TEXTCL_API_KEY``, sent as ``Authorization: Bearer``.
"""
from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from textcl.errors import TextclError

API_KEY_ENV = "TEXTCL_API_KEY"
RETRY_STATUSES = {429, 503}


class RemoteEncoderError(TextclError):
    """The server could not be reached, refused a request, or answered something that is not embeddings."""


def base_url(url: str) -> str:
    """``http://host:8000``, ``http://host:8000/`` and ``http://host:8000/v1`` -> ``http://host:8000/v1``."""
    if not url.startswith(("http://", "https://")):
        raise RemoteEncoderError(f"--server {url!r}: expected an http:// or https:// URL")
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def decode_embedding(value: Any) -> np.ndarray:
    """One ``embedding`` of an answer: base64 little-endian float32 bytes, or a list of numbers."""
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4").astype(np.float32)
    return np.asarray(value, dtype=np.float32)


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

    @property
    def dim(self) -> int:
        """The served model's full width (asked once, by embedding one text)."""
        if self._dim is None:
            self._dim = int(self._embed(["dimension probe"], None).shape[1])
        return self._dim

    def encode(self, texts: str | Sequence[str], batch_size: int | None = None, normalize: bool | None = None,
               show_progress: bool = False, dim: int | None = None, **_: Any) -> np.ndarray:
        """float32 ``(n, d)`` in the input order (``(d,)`` for one string). ``normalize=True`` L2-normalises
        here; otherwise the vectors are as the server's model makes them. ``dim``: the first ``dim``
        dimensions (default: ``truncate_dim``, else all), cut by the server (``dimensions``)."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        dim = dim if dim is not None else self.truncate_dim
        size = max(1, int(batch_size or self.batch_size))
        parts = [texts[i : i + size] for i in range(0, len(texts), size)]
        bar = None
        if show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="encode (server)", unit="text")

        def run(part: list[str]) -> np.ndarray:
            vecs = self._embed(part, dim)
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
    def _embed(self, texts: list[str], dim: int | None) -> np.ndarray:
        body: dict[str, Any] = {"input": texts, "model": self.model, "encoding_format": "base64"}
        if dim is not None:
            body["dimensions"] = int(dim)
        if self.input_type is not None:
            body["input_type"] = self.input_type
        answer = self._request("POST", "/embeddings", body)
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or len(data) != len(texts):
            raise RemoteEncoderError(f"{self.url}/embeddings answered {len(data) if isinstance(data, list) else 'no'} "
                                     f"embeddings for {len(texts)} texts")
        rows = sorted(data, key=lambda item: item.get("index", 0))
        vecs = [decode_embedding(item.get("embedding")) for item in rows]
        if len({v.shape for v in vecs}) != 1 or vecs[0].ndim != 1 or (dim is not None and len(vecs[0]) != dim):
            raise RemoteEncoderError(f"{self.url}/embeddings answered vectors of widths "
                                     f"{sorted({len(v) for v in vecs})}, expected {dim or 'one width'}")
        return np.stack(vecs)

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
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
                return json.loads(raw)
            except urllib.error.HTTPError as exc:
                if exc.code in RETRY_STATUSES and attempt < self.retries:
                    time.sleep(min(10.0, _retry_after(exc.headers.get("Retry-After"))))
                    continue
                raise RemoteEncoderError(f"{method} {self.url}{path}: HTTP {exc.code}: {_message(exc)}") from None
            except urllib.error.URLError as exc:
                raise RemoteEncoderError(f"{self.url}: cannot reach the server ({exc.reason})") from None
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
