"""``RemoteEncoder``: vectors from a server that speaks the OpenAI embeddings API, for batch jobs.

    from textcl.encode.remote import RemoteEncoder
    encoder = RemoteEncoder("http://gpu-box:8000", model="minilm")   # textcl serve --model minilm=...
    vectors = encoder.encode(texts)                                   # float32 (n, d), in order

Any OpenAI-compatible server answers (``textcl serve --model``, text-embeddings-inference, infinity, vLLM,
Ollama), so one GPU box can embed for many indexing clients: ``textcl encode --server URL`` and ``textcl
index build --server URL``. Texts go in requests of ``batch_size``, ``concurrency`` of them in flight (the
server batches what arrives together), never more than the server's ``max_inputs`` (textcl's model card);
a request the server finds too large (413, or the connection reset over it) is split in halves, and
later ones, of every ``encode`` call, are no larger than the size that passed (HTTP:
:mod:`textcl.encode.remote_http`). Vectors come back as base64 float32, checked (:mod:`textcl.encode.remote_answer`).
A busy server (503, 429) is retried after its ``Retry-After``; any other error, or no answer within
``timeout``, stops the job with the server's address and message. The API key is ``api_key`` or
``$TEXTCL_API_KEY``, sent as ``Authorization: Bearer``, and never to another origin: a redirect elsewhere is
refused. ``encode(prompt_name=)`` is sent as ``input_type`` (textcl's extension).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from textcl.encode.remote_answer import AnswerError, decode_embedding, embeddings_of  # noqa: F401 (re-exported)
from textcl.encode.remote_http import (API_KEY_ENV, RemoteEncoderError, RequestTooLarge,  # noqa: F401 (re-exported)
                                       ServerDisconnected, check_api_key, check_retries, request_json)

GROW_AFTER = 16  # requests that pass at a learned size before it doubles (up to batch_size)
MODELS_BYTES = 1 << 20  # the most a model list may take
VECTOR_BYTES = 1 << 18  # the most one embedding may take in an answer: 8,192 numbers of 32 characters


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
        check_api_key(self.api_key)
        self.batch_size = max(1, int(batch_size))
        self.concurrency = max(1, int(concurrency))
        self.input_type = input_type
        self.timeout = timeout
        self.retries = check_retries(retries)
        self._answered = False  # once the server has answered, a refused connection is a restart, waited for
        self.truncate_dim: int | None = None  #: set to ask the server for the first d dimensions
        self._learned: int | None = None  # the largest request size known to pass after a 413 (under _lock)
        self._passes = 0  # requests that passed at the learned size since it last changed (under _lock)
        self._lock = threading.Lock()
        self.model = model or self._only_model()
        self.name = self.model
        self._dim: int | None = None
        self._max_inputs: int | None | bool = False  # the server's limit, asked once (None: it names none)

    @property
    def server(self) -> dict[str, str]:
        """What an index built with this encoder records as its source (``manifest["server"]``)."""
        return {"server": self.url, "model": self.model}

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
                cards = self._models()
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
        size = min(size, self._learned or size)  # what a 413 taught, whatever batch_size the caller passes
        parts = [(i, texts[i : i + size]) for i in range(0, len(texts), size)]
        bar = None
        if show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="encode (server)", unit="text")

        def run(start_part: tuple[int, list[str]]) -> np.ndarray:
            start, part = start_part
            vecs = self._embed_split(part, dim, input_type, start)
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
    def _embed_split(self, texts: list[str], dim: int | None, input_type: str | None, offset: int = 0) -> np.ndarray:
        """:meth:`_embed`, in requests no larger than a 413 taught, and in halves (recursively) while the server
        finds a request too large; the size that passed is kept for later requests (under a lock: 4 threads) and
        doubles after :data:`GROW_AFTER` passes. A request the server drops without an answer is halved too, to
        name the input (``offset``: the first text's place in the ``encode`` call) that it drops alone."""
        learned = self._learned
        if learned is not None and len(texts) > learned:
            return np.concatenate([self._embed_split(texts[i : i + learned], dim, input_type, offset + i)
                                   for i in range(0, len(texts), learned)])
        half = len(texts) // 2
        try:
            vecs = self._embed(texts, dim, input_type)
            self._passed(len(texts))
            return vecs
        except ServerDisconnected as exc:
            if len(texts) == 1:
                raise RemoteEncoderError(f"{exc.where}: the server closed the connection without an answer to input "
                                         f"{offset} alone ({exc.tries} tries; {len(texts[0]):,} characters): the text "
                                         "may crash it; remove or shorten it") from None
        except RequestTooLarge as exc:
            if len(texts) == 1 and exc.code == "response_too_large":  # the server's own advice fits
                raise RemoteEncoderError(f"{exc.where}: HTTP 413: {exc.detail}") from None
            if len(texts) == 1:
                raise RemoteEncoderError(f"{exc.where}: HTTP 413: one text of {len(texts[0]):,} characters is larger "
                                         f"than the server accepts in a request; shorten it ({exc.detail})") from None
            with self._lock:
                if self._learned is None or half < self._learned:
                    self._learned, self._passes = half, 0
        return np.concatenate([self._embed_split(texts[:half], dim, input_type, offset),
                               self._embed_split(texts[half:], dim, input_type, offset + half)])

    def _passed(self, size: int) -> None:
        """Count a request of ``size`` that passed; the learned size doubles (up to batch_size) after
        :data:`GROW_AFTER` of them at that size."""
        with self._lock:
            if self._learned is None or size != self._learned:
                return
            self._passes += 1
            if self._passes >= GROW_AFTER and self._learned < self.batch_size:
                self._learned, self._passes = min(2 * self._learned, self.batch_size), 0

    def _embed(self, texts: list[str], dim: int | None, input_type: str | None) -> np.ndarray:
        body: dict[str, Any] = {"input": texts, "model": self.model, "encoding_format": "base64"}
        if dim is not None:
            body["dimensions"] = int(dim)
        if input_type is not None:
            body["input_type"] = input_type
        answer = self._request("POST", "/embeddings", body, MODELS_BYTES + len(texts) * VECTOR_BYTES,
                               f"{len(texts)} embedding(s) need")
        try:
            return embeddings_of(answer, len(texts), dim)
        except AnswerError as exc:
            raise RemoteEncoderError(f"{self.url}/embeddings answered {exc}") from None

    def _only_model(self) -> str:
        ids = [m.get("id") if isinstance(m, dict) else None for m in self._models()]
        if len(ids) != 1 or not isinstance(ids[0], str):
            raise RemoteEncoderError(f"{self.url} serves {len(ids)} models ({', '.join(map(str, ids))}): name one "
                                     "with --model")
        return ids[0]

    def _models(self) -> list:
        """``GET /models``'s ``data``; RemoteEncoderError when it is no list."""
        answer = self._request("GET", "/models", None, MODELS_BYTES, "a list of models needs")
        data = answer.get("data") if isinstance(answer, dict) else answer
        if not isinstance(data, list):
            raise RemoteEncoderError(f"GET {self.url}/models: data: expected a list of models, got {data!r:.60}")
        return data

    def _request(self, method: str, path: str, body: dict | None, limit: int, needs: str) -> Any:
        answer = request_json(method, self.url + path, body, api_key=self.api_key, timeout=self.timeout,
                              retries=self.retries, limit=limit, needs=needs, answered=self._answered)
        self._answered = True
        return answer
