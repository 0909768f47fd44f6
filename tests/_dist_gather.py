"""Shared scenarios for the cross-device tests: one global batch, split over ranks, vs one process.

Used in-process with threads standing in for ranks (tests/test_gather.py) and by real gloo processes
(tests/test_gather_dist.py, through ``worker``).
"""
from __future__ import annotations

import torch
from torch import nn

from textcl.losses import InfoNCE, text_keys

D_IN, K = 5, 2
# name -> (InfoNCE options, use hard negatives, use keys)
CONFIGS = {
    "hard_negatives": (dict(temperature=0.1, hard_negative_weight=0.5), True, False),
    "symmetric_keys": (dict(temperature=0.1, symmetric=True), True, True),
    "nt_xent_keys": (dict(temperature=0.2, nt_xent=True), False, True),
    "euclid_learnt_t": (dict(temperature=0.5, similarity="euclidean", learnable_temperature=True), False, False),
}
# Texts with duplicates that straddle the ranks (index 0 and 4, 1 and 5), and groups.
TEXTS = ["a", "b", "c", "d", "a", "b"]
GROUPS = torch.tensor([0, 1, -1, 2, 3, 2])


def make_data(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(n, *s, generator=g) for k, s in (("a", (D_IN,)), ("p", (D_IN,)), ("n", (K, D_IN)))}


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(D_IN, 4)


def make_loss(name):
    return InfoNCE(gather_across_devices=True, **CONFIGS[name][0])


def step(model, loss_fn, name, data, lo, hi):
    """Loss of rows [lo, hi) of the global batch (all of it in the single-process reference)."""
    _, use_neg, use_keys = CONFIGS[name]
    a, p = model(data["a"][lo:hi]), model(data["p"][lo:hi])
    neg = model(data["n"][lo:hi]) if use_neg else None
    kw = {}
    if use_keys:
        keys = text_keys(TEXTS)[lo:hi]
        kw = dict(anchor_keys=keys, positive_keys=keys, group_ids=GROUPS[lo:hi])
        if use_neg:
            kw["negative_keys"] = torch.stack([text_keys(["x", "b"]), text_keys(["y", "z"])] * 3)[lo:hi]
    return loss_fn(a, p, neg, **kw)


def reference(name, data):
    model, loss_fn = make_model(), make_loss(name)
    loss = step(model, loss_fn, name, data, 0, len(TEXTS))
    loss.backward()
    return loss.detach(), [q.grad.clone() for q in list(model.parameters()) + list(loss_fn.parameters())]


def worker(rank, world, init_file, out_dir, size_splits):
    """One gloo rank: DDP-wrapped model, every config and split, results saved for the parent to compare."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from datetime import timedelta

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    ok = False
    try:
        data = make_data()
        results = {}
        for sizes in size_splits:
            lo = sum(sizes[:rank])
            hi = lo + sizes[rank]
            for name in CONFIGS:
                model = DDP(make_model())
                loss_fn = make_loss(name)
                loss = step(model, loss_fn, name, data, lo, hi)
                loss.backward()
                # DDP averaged the model's gradients; a learnt temperature lives outside DDP: average it here.
                extra = [q.grad.clone() for q in loss_fn.parameters()]
                for t in extra:
                    dist.all_reduce(t)
                    t /= world
                results[tuple(sizes), name] = (loss.detach(), [q.grad.clone() for q in model.parameters()] + extra)
                del model, loss_fn, loss  # DDP's reducer holds the group: gone before the group is destroyed
        torch.save(results, f"{out_dir}/rank{rank}.pt")
        ok = True
    finally:
        # Both ranks reach here before either tears gloo down: a rank that destroys its group while the other
        # still talks to it aborts that one ("terminate called without an active exception").
        if ok:
            dist.barrier()
        dist.destroy_process_group()
