"""GradCache: the loss of a large batch with the memory of a small one.

The number of in-batch negatives is the batch size, but activation memory grows with it too. GradCache
(Gao et al., 2021) breaks that link in three passes:

1. embed every mini-batch chunk **without** a graph, recording the RNG state before each chunk;
2. compute the loss on the full embedding matrices and back-propagate it to the embeddings only (cheap);
3. re-embed each chunk **with** a graph under its recorded RNG state, so dropout draws the very same masks,
   and back-propagate the cached embedding gradients into the encoder, one chunk at a time.

The parameter gradients equal those of the uncached step on the same forward passes (tested to 1e-5 with
dropout on). Cost: one extra forward pass; peak memory: one chunk's activations plus the ``(N, d)``
embeddings and the loss's ``(N, C)`` logits.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

__all__ = ["RandContext", "split_batch", "cached_backward"]


class RandContext:
    """Snapshot of the CPU and CUDA random number generators, replayable with ``with``.

    Built just before a forward pass; entering it later restores that snapshot inside
    :func:`torch.random.fork_rng`, so the replay draws the same dropout masks and the global RNG is left
    exactly where it was before the ``with``.
    """

    def __init__(self) -> None:
        self.cpu_state = torch.get_rng_state()
        self.cuda_states = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self.cuda_states = torch.cuda.get_rng_state_all()
        self._fork = None

    def __enter__(self) -> RandContext:
        devices = list(range(len(self.cuda_states))) if self.cuda_states is not None else []
        self._fork = torch.random.fork_rng(devices=devices)
        self._fork.__enter__()
        torch.set_rng_state(self.cpu_state)
        if self.cuda_states is not None:
            torch.cuda.set_rng_state_all(self.cuda_states)
        return self

    def __exit__(self, *exc) -> None:
        fork, self._fork = self._fork, None
        fork.__exit__(*exc)


def _batch_len(inputs: Any) -> int:
    if isinstance(inputs, torch.Tensor):
        return inputs.shape[0]
    if isinstance(inputs, Mapping):
        for value in inputs.values():
            if isinstance(value, torch.Tensor):
                return value.shape[0]
        raise ValueError("inputs: a mapping needs at least one tensor to tell the batch size")
    if isinstance(inputs, (list, tuple)):
        return len(inputs)
    raise TypeError(f"inputs: expected a tensor, a mapping of tensors or a list, got {type(inputs).__name__}")


def split_batch(inputs: Any, mini_batch_size: int) -> list[Any]:
    """Split a batch along its first dimension into chunks of at most ``mini_batch_size``.

    ``inputs`` is a tensor, a mapping of tensors (a tokenizer's ``BatchEncoding``; tensors whose first
    dimension is the batch are split, other values are passed to every chunk), or a list/tuple (texts).
    """
    n = _batch_len(inputs)
    if isinstance(inputs, torch.Tensor):
        return list(inputs.split(mini_batch_size))
    if isinstance(inputs, Mapping):
        return [
            {k: (v[s : s + mini_batch_size] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == n else v)
             for k, v in inputs.items()}
            for s in range(0, n, mini_batch_size)
        ]
    return [inputs[s : s + mini_batch_size] for s in range(0, n, mini_batch_size)]


def cached_backward(
    views: Sequence[tuple[Callable[[Any], torch.Tensor], Any]],
    loss_fn: Callable[..., torch.Tensor],
    mini_batch_size: int,
    *,
    backward: Callable[[torch.Tensor], None] | None = None,
    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> torch.Tensor:
    """Compute ``loss_fn(*embeddings)`` over a large batch and accumulate its gradients into the encoders,
    holding only one chunk of activations at a time.

    Args:
        views: one ``(embed_fn, inputs)`` pair per embedding matrix the loss takes, in ``loss_fn``'s argument
            order. ``embed_fn(chunk) -> (m, d)`` is a forward pass (the same module may appear in several
            views: anchor and positive of a siamese encoder, or the *same* texts twice for unsupervised
            SimCSE, each view with its own dropout). ``inputs`` is anything :func:`split_batch` accepts.
        loss_fn: ``loss_fn(*embeddings) -> scalar``, e.g. an :class:`~textcl.losses.InfoNCE`; it may have
            parameters of its own (a learnt temperature) and may all-gather across devices.
        mini_batch_size: rows per forward pass (the trainer's ``loss.mini_batch_size: auto`` measures the largest
            that fits the device: :mod:`textcl.models.memory`).
        backward: how to back-propagate the *loss* in pass 2 (default ``loss.backward()``); pass
            ``accelerator.backward`` so that fp16 loss scaling and gradient-accumulation division apply. The
            embedding gradients then carry that scaling into pass 3, which uses plain autograd.
        no_sync: a factory for a context that suspends DDP's gradient all-reduce (``lambda:
            accelerator.no_sync(model)`` or ``model.no_sync``): used for every replay backward but the last,
            so gradients are reduced once per step.

    Returns:
        The loss, detached. Gradients are *accumulated* into ``.grad`` (zero them as usual). The global RNG
        ends where an uncached step on the same chunks would leave it.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Dropout(0.1))
        >>> x = torch.randn(64, 8)                     # unsupervised SimCSE: the same inputs twice
        >>> loss = cached_backward([(model, x), (model, x)], InfoNCE(0.05), mini_batch_size=16)
        >>> model[0].weight.grad.shape
        torch.Size([4, 8])

    References:
        Gao, Zhang, Han, Callan, *Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup*,
        RepL4NLP 2021 (arXiv:2101.06983).
    """
    if not isinstance(mini_batch_size, int) or isinstance(mini_batch_size, bool) or mini_batch_size < 1:
        raise ValueError(f"mini_batch_size: expected a positive integer, got {mini_batch_size!r}")
    if not views:
        raise ValueError("views: expected at least one (embed_fn, inputs) pair")
    for i, view in enumerate(views):
        if not (isinstance(view, (tuple, list)) and len(view) == 2 and callable(view[0])):
            raise ValueError(f"views[{i}]: expected an (embed_fn, inputs) pair with a callable embed_fn")

    # Pass 1: embeddings without a graph, and the RNG state in front of each chunk.
    chunks, states, embeddings = [], [], []
    with torch.no_grad():
        for i, (embed_fn, inputs) in enumerate(views):
            view_chunks = split_batch(inputs, mini_batch_size)
            view_states, parts = [], []
            for chunk in view_chunks:
                view_states.append(RandContext())
                out = embed_fn(chunk)
                if not isinstance(out, torch.Tensor) or out.dim() != 2:
                    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                    raise ValueError(f"views[{i}]: embed_fn must return an (m, d) tensor, got {got}")
                parts.append(out)
            chunks.append(view_chunks)
            states.append(view_states)
            embeddings.append(torch.cat(parts).detach().requires_grad_())

    # Pass 2: the loss on the full matrices; gradients stop at the embeddings (and the loss's own params).
    with torch.enable_grad():
        loss = loss_fn(*embeddings)
    (backward or torch.Tensor.backward)(loss)

    # Pass 3: replay each chunk with a graph and push its slice of the cached gradient through it.
    todo = [(v, c) for v, e in enumerate(embeddings) if e.grad is not None for c in range(len(chunks[v]))]
    for n, (v, c) in enumerate(todo):
        embed_fn = views[v][0]
        grad = embeddings[v].grad[c * mini_batch_size : (c + 1) * mini_batch_size]
        sync = contextlib.nullcontext() if (no_sync is None or n == len(todo) - 1) else no_sync()
        with sync, states[v][c], torch.enable_grad():
            out = embed_fn(chunks[v][c])
            torch.autograd.backward(out, grad_tensors=grad.to(out.dtype))
    return loss.detach()
