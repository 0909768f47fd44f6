"""The models the embeddings API serves: one :class:`Embedder` per ``--model``, each with its own
micro-batcher, gathered in :class:`Embedders`.

An embedder's batcher thread runs its model: the inputs of the requests that arrive together (up to
``--max-batch`` texts, waiting up to ``--max-wait-ms`` for company under load, as searches do; see
:mod:`textcl.serve.batcher`) are encoded in one :meth:`Encoder.encode <textcl.models.Encoder.encode>` call
per prompt, at the model's full width, and each request then keeps its first ``dimensions`` (renormalised
when the model normalises). So a request gets what ``encoder.encode(texts, dim=dimensions,
prompt_name=input_type)`` gives, whoever shared its batch. An embedder serving the index's own model shares
the index's encoder and its lock (a tokenizer must not run on two threads at once).
"""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
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
    """One request: its texts (without the prompt), the prompt's name and how many dimensions it keeps."""

    texts: tuple[str, ...]
    prompt_name: str | None
    dim: int


class Embedder:
    """The model ``encoder`` served as ``name``; ``lock`` guards the encoder (default: its own)."""

    def __init__(self, name: str, encoder, config: ServeConfig, lock: threading.Lock | None = None):
        self.name = name
        self.encoder = encoder
        self.lock = lock or threading.Lock()
        self.counter = TokenCounter(encoder)
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

    async def embed(self, texts: Sequence[str], prompt_name: str | None, dim: int) -> np.ndarray:
        """float32 ``(len(texts), dim)``, through the batcher; raises BusyError past ``--max-pending``."""
        item = EmbedItem(tuple(texts), prompt_name, int(dim))
        return await asyncio.wrap_future(self.batcher.submit(item, size=len(item.texts)))

    def _embed_batch(self, items: list[EmbedItem]) -> list[np.ndarray]:
        """On the batcher's thread: one encode per prompt in the batch, then each item's cut."""
        full: list[np.ndarray | None] = [None] * len(items)
        by_prompt: dict[str | None, list[int]] = {}
        for i, item in enumerate(items):
            by_prompt.setdefault(item.prompt_name, []).append(i)
        for prompt_name, members in by_prompt.items():
            texts = [t for i in members for t in items[i].texts]
            with self.lock:
                vecs = self.encoder.encode(texts, batch_size=self.batch_size, dim=self.dim, prompt_name=prompt_name)
            start = 0
            for i in members:
                full[i] = vecs[start : start + len(items[i].texts)]
                start += len(items[i].texts)
        return [self._cut(vecs, item.dim) for vecs, item in zip(full, items)]

    def _cut(self, vecs: np.ndarray, dim: int) -> np.ndarray:
        """The first ``dim`` dimensions, renormalised when the model normalises (as ``encode(dim=)`` does)."""
        if dim >= vecs.shape[1]:
            return np.ascontiguousarray(vecs)
        out = np.ascontiguousarray(vecs[:, :dim])
        if self.encoder.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            np.divide(out, norms, out=out, where=norms > 0)
        return out


class Embedders:
    """The served models by name, started and closed together."""

    def __init__(self, embedders: Sequence[Embedder]):
        self.by_name = {e.name: e for e in embedders}

    @classmethod
    def load(cls, config: ServeConfig, encoders: dict | None = None, shared=None) -> "Embedders":
        """One embedder per ``config.models`` spec. ``encoders``: already loaded encoders by served name;
        ``shared``: ``(model, encoder, lock)`` of the index, reused for a spec naming the same model."""
        from textcl.models import Encoder

        encoders = dict(encoders or {})
        out = []
        for spec in config.models:
            name, path = parse_model_spec(spec)
            if name in encoders:
                out.append(Embedder(name, encoders[name], config))
            elif shared is not None and path == shared[0]:
                out.append(Embedder(name, shared[1], config, lock=shared[2]))
            else:
                out.append(Embedder(name, Encoder.load(path, backend=config.backend or "torch"), config))
        return cls(out)

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
        """Start the batchers; ``threads``: set torch's threads to it until :meth:`close` (a server without an
        index; the index service sets them otherwise)."""
        if threads is not None:
            import torch

            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(threads)
        for embedder in self:
            embedder.batcher.start()
        return self

    def close(self, timeout: float = 60.0) -> None:
        """Answer what is queued, stop the batchers, give torch its threads back."""
        for embedder in self:
            embedder.batcher.close(timeout)
        if getattr(self, "_threads_before", None):
            import torch

            torch.set_num_threads(self._threads_before)
            self._threads_before = None

    @property
    def healthy(self) -> bool:
        return all(e.batcher.alive for e in self)
