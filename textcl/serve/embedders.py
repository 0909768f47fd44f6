"""The models the embeddings API serves: one :class:`Embedder` per ``--model``, each with its own
micro-batcher, gathered in :class:`Embedders`.

An embedder's batcher thread runs its model: the inputs of the requests that arrive together (up to
``--max-batch`` texts, waiting up to ``--max-wait-ms`` for company under load, as searches do; see
:mod:`textcl.serve.batcher`) are encoded in one :meth:`Encoder.encode <textcl.models.Encoder.encode>` call
per prompt, at the model's full width, and each request with ``dimensions`` then keeps its first
``dimensions``, renormalised (unit vectors whether the model normalises or not). So a request gets what
``encoder.encode(texts, dim=dimensions, prompt_name=input_type)`` gives (renormalised), whoever shared its
batch. An embedder serving the index's own model shares the index's encoder and its lock (a tokenizer must not
run on two threads at once); the encoder's lock is taken for one batch of ``--max-batch`` texts at a time, in
the order ``encode`` runs them (so the vectors are the same bit for bit), and released between them: a search
waits for at most one batch, however many inputs a request holds.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from textcl.errors import ConfigError
from textcl.serve.batcher import MicroBatcher
from textcl.serve.config import ServeConfig, parse_model_spec
from textcl.serve.tokens import TokenCounter


class UnknownModelError(LookupError):
    """The request names a model this server does not serve (HTTP 404, ``model_not_found``)."""


@dataclass(frozen=True)
class EmbedItem:
    """One request: its texts (without the prompt), the prompt's name and how many dimensions it keeps
    (None: all, as the model makes them; a number: that many, renormalised)."""

    texts: tuple[str, ...]
    prompt_name: str | None
    dim: int | None


def public_name(name: str | None) -> str | None:
    """A model's name as ``/health`` and ``/info`` show it, to anyone: a local path shows its folder's name."""
    if not name:
        return name
    local = os.path.isabs(name) or name.startswith((".", "~")) or os.path.isdir(os.path.expanduser(name))
    return os.path.basename(os.path.normpath(os.path.expanduser(name))) if local else name


class Embedder:
    """The model ``encoder`` served as ``name``; ``lock`` guards the encoder (default: its own)."""

    def __init__(self, name: str, encoder, config: ServeConfig, lock: threading.Lock | None = None):
        self.name = name
        self.encoder = encoder
        self.lock = lock or threading.Lock()
        self.counter = TokenCounter(encoder)
        from textcl.models.prompts import prompts_of

        prompts_of(encoder)  # read now, not by two request threads at once
        self.created = int(time.time())
        self.batch_size = config.max_batch
        self.batcher: MicroBatcher[EmbedItem, np.ndarray] = MicroBatcher(
            self._embed_batch, max_batch=config.max_batch, max_wait_s=config.max_wait_ms / 1000,
            enabled=config.batching, max_pending=config.max_pending, name=f"textcl-embed-{name}")

    @property
    def dim(self) -> int:
        """The model's full width (a Matryoshka cut asks for fewer with ``dimensions``)."""
        return int(self.encoder.dim)

    @property
    def precision(self) -> str | None:
        """``fp32`` or ``bf16``: what this model encodes in (``--precision``, resolved at start)."""
        from textcl.serve.precision import precision_of

        return precision_of(self.encoder)

    @property
    def public_name(self) -> str:
        """The name ``/health`` shows without a key (:func:`public_name`)."""
        return public_name(self.name)

    @property
    def max_tokens(self) -> int:
        return self.counter.limit

    def prompted(self, texts: Sequence[str], prompt_name: str | None) -> list[str]:
        """``texts`` as the model reads them: with the prompt. Raises ValueError for an unknown prompt."""
        from textcl.models.prompts import apply_prompt

        return apply_prompt(self.encoder, texts, prompt_name)

    @property
    def prompts(self) -> dict[str, str]:
        """The model's prompts by name (its folder's ``config_sentence_transformers.json``)."""
        from textcl.models.prompts import prompts_of

        return prompts_of(self.encoder)[0]

    def check_prompt(self, input_type: str | None) -> None:
        """ConfigError naming ``input_type`` when the model has no prompt of that name."""
        if input_type is not None and input_type not in self.prompts:
            have = ", ".join(repr(p) for p in sorted(self.prompts)) or "none"
            raise ConfigError("input_type", f"{input_type!r} is not a prompt of model {self.name!r}; its prompts "
                              f"(from its config_sentence_transformers.json): {have}")

    def count(self, texts: Sequence[str], prompt_name: str | None) -> np.ndarray:
        """Tokens in each input with its prompt, before truncation (any thread)."""
        return self.counter.count(self.prompted(texts, prompt_name))

    async def embed(self, texts: Sequence[str], prompt_name: str | None, dim: int | None) -> np.ndarray:
        """float32 ``(len(texts), dim or width)``, through the batcher; raises BusyError past ``--max-pending``."""
        item = EmbedItem(tuple(texts), prompt_name, None if dim is None else int(dim))
        return await asyncio.wrap_future(self.batcher.submit(item, size=len(item.texts)))

    def _embed_batch(self, items: list[EmbedItem]) -> list[np.ndarray]:
        """On the batcher's thread: each prompt's texts encoded in batches, then each item's cut."""
        full: list[np.ndarray | None] = [None] * len(items)
        by_prompt: dict[str | None, list[int]] = {}
        for i, item in enumerate(items):
            by_prompt.setdefault(item.prompt_name, []).append(i)
        for prompt_name, members in by_prompt.items():
            vecs = self._encode_in_batches([t for i in members for t in items[i].texts], prompt_name)
            start = 0
            for i in members:
                full[i] = vecs[start : start + len(items[i].texts)]
                start += len(items[i].texts)
        return [self._cut(vecs, item.dim) for vecs, item in zip(full, items)]

    def _encode_in_batches(self, texts: list[str], prompt_name: str | None) -> np.ndarray:
        """float32 ``(n, width)``: ``encode(texts, prompt_name=)``'s very batches (longest first, by the prompted
        texts' token counts, truncated to the model's limit), each under the lock, released between them."""
        counts = np.minimum(self.count(texts, prompt_name), self.counter.limit)
        order = np.argsort(-counts, kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            rows = order[start : start + self.batch_size]
            with self.lock:
                out[rows] = self.encoder.encode([texts[i] for i in rows], batch_size=self.batch_size, dim=self.dim,
                                                prompt_name=prompt_name)
        return out

    def _cut(self, vecs: np.ndarray, dim: int | None) -> np.ndarray:
        """``vecs`` (n, width) as the model makes them (``dim`` None), else their first ``dim`` dimensions,
        renormalised to unit length whether the model normalises or not: (n, dim)."""
        if dim is None:
            return np.ascontiguousarray(vecs)
        out = np.array(vecs[:, :dim], dtype=np.float32, order="C")
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out


def _index_model(config: ServeConfig) -> str | None:
    """The model the index's manifest names (where it is now), or None when it names none to be found."""
    from textcl.errors import TextclError
    from textcl.index import index_model

    try:
        return index_model(config.index_dir)
    except TextclError:
        return None


def _same_model(a: str, b: str | None) -> bool:
    """``a`` and ``b`` name the same model: the same string, or the same local folder."""
    if b is None:
        return False
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve()


def check_limits(config: ServeConfig) -> None:
    """ConfigError when a request the schema accepts could never be queued: a request's inputs wait on the
    model's batcher together, so ``--max-inputs`` above ``--max-pending`` would answer every larger one 503."""
    if config.models and config.max_inputs > config.max_pending:
        raise ConfigError("--max-inputs", f"{config.max_inputs} is above --max-pending {config.max_pending}: a "
                          "request of more inputs than may wait could never be queued; expected --max-inputs at "
                          "most --max-pending")


class Embedders:
    """The served models by name, started and closed together."""

    def __init__(self, embedders: Sequence[Embedder], config: ServeConfig | None = None):
        self.by_name = {e.name: e for e in embedders}
        self.config = config or ServeConfig(models=list(self.by_name))  #: its ``precision`` is resolved at start

    @classmethod
    def load(cls, config: ServeConfig, encoders: dict | None = None, shared=None) -> "Embedders":
        """One embedder per ``config.models`` spec. ``encoders``: already loaded encoders by served name;
        ``shared``: ``(model, encoder, lock)`` of the index (model None: the one its manifest names),
        reused for a spec naming the same model (the same folder). Raises ConfigError for limits that cannot
        work."""
        from textcl.models import Encoder

        check_limits(config)
        if shared is not None and shared[0] is None:
            shared = (_index_model(config), *shared[1:])
        encoders = dict(encoders or {})
        out = []
        from textcl.recommend.tower import is_tower

        for spec in config.models:
            name, path = parse_model_spec(spec)
            if is_tower(path):
                raise ConfigError("--models", f"{spec}: a sequence recommender's folder is no text encoder for "
                                  "/v1/embeddings; index its catalogue with it and serve that index for /recommend")
            if name in encoders:
                out.append(Embedder(name, encoders[name], config))
            elif shared is not None and _same_model(path, shared[0]):
                out.append(Embedder(name, shared[1], config, lock=shared[2]))
            else:
                out.append(Embedder(name, Encoder.load(path, backend=config.backend or "torch"), config))
        return cls(out, config)

    def __iter__(self):
        return iter(self.by_name.values())

    def __len__(self) -> int:
        return len(self.by_name)

    def get(self, name: str | None) -> Embedder:
        """The model named ``name`` (None: the only one). Raises UnknownModelError naming those served, or
        ConfigError when ``name`` is None and there are several."""
        if name is None and len(self.by_name) == 1:
            return next(iter(self.by_name.values()))
        if name in self.by_name:
            return self.by_name[name]
        served = ", ".join(repr(n) for n in self.by_name)
        if name is None:
            raise ConfigError("model", f"required: this server serves several models ({served})")
        raise UnknownModelError(f"model: {name!r} is not served here; this server serves {served} (GET /v1/models)")

    def start(self, threads: int | None = None) -> "Embedders":
        """Resolve each model's precision (measured with the serving threads) and start the batchers;
        ``threads``: set torch's threads to it until :meth:`close` (a server without an index; the index service
        sets them otherwise)."""
        from textcl.serve.precision import served

        if threads is not None:
            import torch

            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(threads)
        try:
            specs = {parse_model_spec(spec)[0]: spec for spec in self.config.models}
            for embedder in self:  # the index's own model (shared) is already wrapped: kept as it is
                embedder.encoder = served(embedder.encoder, self.config, specs.get(embedder.name, embedder.name),
                                          f"model {embedder.public_name!r}")
        except BaseException:
            self._restore()
            raise
        for embedder in self:
            embedder.batcher.start()
        return self

    def _restore(self) -> None:
        """Give torch its threads back."""
        if getattr(self, "_threads_before", None):
            import torch

            torch.set_num_threads(self._threads_before)
            self._threads_before = None

    def close(self, timeout: float = 60.0) -> None:
        """Answer what is queued, stop the batchers, give torch its threads back."""
        for embedder in self:
            embedder.batcher.close(timeout)
        self._restore()

    @property
    def healthy(self) -> bool:
        return all(e.batcher.alive for e in self)
