"""Cross-device all-gather along the batch dimension, with and without gradient.

How the gradients combine (the one thing to get right)
------------------------------------------------------
Every rank gathers the candidates of all ranks and computes the loss of its *local* anchors against them:
``loss_r = (1/B_r) * sum of the rows of rank r``. The backward pass of :func:`all_gather_with_grad` sums,
over all ranks, the gradient that each rank's loss sends into a slot, and hands each rank the sum for its own
slot. So rank ``r``'s embeddings receive ``sum_s d loss_s / d x_r``. DistributedDataParallel then *averages*
the parameter gradients over the ``W`` ranks, which gives ``d/dθ (1/W) sum_s loss_s`` = the gradient of the
mean loss of one process on the concatenated batch (when all ranks hold ``B`` rows; :class:`InfoNCE` rescales
the local loss when they do not, see its docs). Without DDP (hand-written loops), average the parameter
gradients over ranks yourself (``all_reduce`` then divide by ``W``) to get the same result.

Nothing here needs a process group when there is only one process: the functions then return their input.
The collectives are looked up on the module attribute ``dist`` so unit tests can monkeypatch them.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["world_info", "gather_sizes", "all_gather_with_grad", "all_gather_no_grad"]


def world_info(group=None) -> tuple[int, int]:
    """``(rank, world_size)`` of the default (or given) process group; ``(0, 1)`` without one."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def gather_sizes(n: int, *, device: torch.device | str = "cpu", group=None) -> list[int]:
    """The dim-0 size of the local tensor on every rank, in rank order."""
    world = world_info(group)[1]
    if world == 1:
        return [n]
    local = torch.tensor([n], dtype=torch.long, device=device)
    out = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(out, local, group=group)
    return [int(t.item()) for t in out]


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather of equal-size tensors; backward sums each slot's gradient over ranks (all-reduce).

    An all-reduce of the whole gathered gradient instead of a reduce-scatter: it works on every backend
    (gloo has no reduce-scatter) and costs nothing that matters next to the encoder.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        rank, world = world_info(group)
        ctx.rank, ctx.world, ctx.group, ctx.n = rank, world, group, tensor.shape[0]
        tensor = tensor.contiguous()
        out = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(out, tensor, group=group)
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n], None


def _pad(tensor: torch.Tensor, n: int) -> torch.Tensor:
    if tensor.shape[0] == n:
        return tensor
    pad = tensor.new_zeros((n - tensor.shape[0],) + tuple(tensor.shape[1:]))
    return torch.cat([tensor, pad], dim=0)


def _unpad(gathered: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    m = max(sizes)
    if all(s == m for s in sizes):
        return gathered
    return torch.cat([gathered[r * m : r * m + s] for r, s in enumerate(sizes)], dim=0)


def all_gather_with_grad(
    tensor: torch.Tensor, *, sizes: list[int] | None = None, group=None
) -> tuple[torch.Tensor, int]:
    """Concatenate ``tensor`` from all ranks along dim 0, keeping the autograd graph.

    Ranks may hold different numbers of rows (a last, short batch): they are padded for the collective and
    trimmed after it.

    Args:
        tensor: ``(n_r, ...)`` local rows (same trailing shape and dtype on all ranks).
        sizes: every rank's ``n_r`` if already known (from :func:`gather_sizes`); gathered otherwise.
        group: process group (default: the global one).

    Returns:
        ``(gathered, offset)``: ``(sum n_r, ...)`` in rank order, and where this rank's rows start in it.
        The local rows of ``gathered`` are differentiable w.r.t. ``tensor`` directly and, through the
        backward all-reduce, with respect to every other rank's use of them.
    """
    rank, world = world_info(group)
    if world == 1:
        return tensor, 0
    if sizes is None:
        sizes = gather_sizes(tensor.shape[0], device=tensor.device, group=group)
    gathered = _AllGatherWithGrad.apply(_pad(tensor, max(sizes)), group)
    return _unpad(gathered, sizes), sum(sizes[:rank])


@torch.no_grad()
def all_gather_no_grad(tensor: torch.Tensor, *, sizes: list[int] | None = None, group=None) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0, detached (keys, ids, MoCo keys for the queue)."""
    world = world_info(group)[1]
    if world == 1:
        return tensor.detach()
    if sizes is None:
        sizes = gather_sizes(tensor.shape[0], device=tensor.device, group=group)
    padded = _pad(tensor.detach().contiguous(), max(sizes))
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded, group=group)
    return _unpad(torch.cat(out, dim=0), sizes)
