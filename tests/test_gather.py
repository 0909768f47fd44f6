"""Cross-device gathering, unit-tested with the collectives monkeypatched: threads stand in for ranks."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # the shared scenarios, whatever the import mode
import _dist_gather as sc  # noqa: E402
from textcl.losses import all_gather_no_grad, all_gather_with_grad, gather as gather_mod


class ThreadDist:
    """The few ``torch.distributed`` calls textcl.losses.gather makes, across threads of one process."""

    def __init__(self, world):
        self.world = world
        self.local = threading.local()
        self.barrier = threading.Barrier(world, timeout=30)
        self.slots = [None] * world

    def is_available(self):
        return True

    def is_initialized(self):  # only inside the rank threads; the main thread is "one process"
        return hasattr(self.local, "rank")

    def get_rank(self, group=None):
        return self.local.rank

    def get_world_size(self, group=None):
        return self.world

    def _exchange(self, tensor):
        self.slots[self.local.rank] = tensor.clone()
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()
        return out

    def all_gather(self, out, tensor, group=None):
        for o, t in zip(out, self._exchange(tensor)):
            o.copy_(t)

    def all_reduce(self, tensor, group=None):
        tensor.copy_(torch.stack(self._exchange(tensor)).sum(0))

    def run(self, fn):
        results, errors = [None] * self.world, []

        def target(rank):
            self.local.rank = rank
            try:
                results[rank] = fn(rank)
            except BaseException as exc:  # surfaced below
                errors.append(exc)
                self.barrier.abort()

        threads = [threading.Thread(target=target, args=(r,)) for r in range(self.world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results


@pytest.fixture
def fake_dist(monkeypatch):
    fake = ThreadDist(2)
    monkeypatch.setattr(gather_mod, "dist", fake)
    return fake


def test_without_a_process_group_gather_is_the_identity():
    x = torch.randn(3, 2)
    y, offset = all_gather_with_grad(x)
    assert y is x and offset == 0
    assert torch.equal(all_gather_no_grad(x), x)


def test_all_gather_with_grad_uneven_sizes_and_gradient_sum(fake_dist):
    xs = [torch.arange(6.0).view(3, 2).requires_grad_(), torch.arange(6.0, 8.0).view(1, 2).requires_grad_()]

    def fn(rank):
        out, offset = all_gather_with_grad(xs[rank])
        # Each rank weighs the gathered rows differently; rank r's rows receive the sum over ranks.
        (out * (rank + 1)).sum().backward()
        return out.detach(), offset

    (out0, off0), (out1, off1) = fake_dist.run(fn)
    assert torch.equal(out0, torch.arange(8.0).view(4, 2)) and torch.equal(out1, out0)
    assert (off0, off1) == (0, 3)
    assert torch.equal(xs[0].grad, torch.full((3, 2), 3.0)) and torch.equal(xs[1].grad, torch.full((1, 2), 3.0))


@pytest.mark.parametrize("sizes", [(3, 3), (4, 2)])
@pytest.mark.parametrize("name", list(sc.CONFIGS))
def test_two_ranks_equal_one_process_on_the_concatenated_batch(fake_dist, name, sizes):
    data = sc.make_data()
    ref_loss, ref_grads = sc.reference(name, data)
    models = [sc.make_model() for _ in range(2)]
    losses = [sc.make_loss(name) for _ in range(2)]

    def fn(rank):
        lo = sum(sizes[:rank])
        loss = sc.step(models[rank], losses[rank], name, data, lo, lo + sizes[rank])
        loss.backward()
        return loss.detach()

    rank_losses = fake_dist.run(fn)
    # What DDP does: average the gradients over ranks (and the reported losses average to the global one).
    assert torch.allclose(sum(rank_losses) / 2, ref_loss, atol=1e-5)
    grads = [[q.grad for q in list(m.parameters()) + list(lf.parameters())] for m, lf in zip(models, losses)]
    for g0, g1, ref in zip(*grads, ref_grads):
        assert torch.allclose((g0 + g1) / 2, ref, atol=1e-5), ((g0 + g1) / 2 - ref).abs().max()


def test_keys_mask_duplicates_that_live_on_the_other_rank(fake_dist):
    """Row 0 ('a') on rank 0 and row 4 ('a') on rank 1: with keys the loss changes, as in one process."""
    data = sc.make_data()
    model = sc.make_model()
    from textcl.losses import InfoNCE, text_keys

    def fn(rank):
        lo = 3 * rank
        with torch.no_grad():
            a, p = model(data["a"][lo:lo + 3]), model(data["p"][lo:lo + 3])
        keys = text_keys(sc.TEXTS)[lo:lo + 3]
        loss_fn = InfoNCE(0.1, gather_across_devices=True)
        return loss_fn(a, p, anchor_keys=keys, positive_keys=keys), loss_fn(a, p)

    (k0, plain0), (k1, plain1) = fake_dist.run(fn)
    with torch.no_grad():
        a, p = model(data["a"]), model(data["p"])
    keys = text_keys(sc.TEXTS)
    one = InfoNCE(0.1)(a, p, anchor_keys=keys, positive_keys=keys)
    assert torch.allclose((k0 + k1) / 2, one, atol=1e-6)
    assert not torch.allclose((k0 + k1) / 2, (plain0 + plain1) / 2, atol=1e-4)


def test_cached_and_gathered_step_equals_one_process(fake_dist):
    """GradCache inside each rank, all-gather inside the loss: still one process on the whole batch."""
    from textcl.losses import InfoNCE, cached_backward

    data = sc.make_data(n=8)
    ref_model = sc.make_model()
    ref = InfoNCE(0.1)(ref_model(data["a"]), ref_model(data["p"]))
    ref.backward()
    models = [sc.make_model() for _ in range(2)]

    def fn(rank):
        views = [(models[rank], data["a"][4 * rank:4 * rank + 4]), (models[rank], data["p"][4 * rank:4 * rank + 4])]
        return cached_backward(views, InfoNCE(0.1, gather_across_devices=True), mini_batch_size=3)

    losses = fake_dist.run(fn)
    assert torch.allclose(sum(losses) / 2, ref.detach(), atol=1e-5)
    for g0, g1, r in zip(models[0].parameters(), models[1].parameters(), ref_model.parameters()):
        assert torch.allclose((g0.grad + g1.grad) / 2, r.grad, atol=1e-5)
