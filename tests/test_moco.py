"""MoCo: EMA key encoder, FIFO queue (order, wraparound, checkpoint round trip), same-batch masking."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from textcl.losses import MoCoQueue, MomentumEncoder, info_nce, moco_loss, momentum_update, text_keys


def _rows(n, start=0, dim=2):
    return torch.arange(start, start + n, dtype=torch.float).repeat_interleave(dim).view(n, dim)


def test_ema_by_hand_and_buffers_copied():
    q, k = nn.BatchNorm1d(1), nn.BatchNorm1d(1)
    with torch.no_grad():
        q.weight.fill_(3.0)
        k.weight.fill_(1.0)
        q.running_mean.fill_(7.0)
    momentum_update(k, q, m=0.9)
    assert k.weight.item() == pytest.approx(0.9 * 1.0 + 0.1 * 3.0)
    assert k.running_mean.item() == 7.0
    assert q.weight.item() == 3.0  # the query encoder is untouched


def test_momentum_encoder_is_a_frozen_copy_updated_by_ema():
    torch.manual_seed(0)
    enc = nn.Linear(3, 2)
    key = MomentumEncoder(enc, momentum=0.5)
    assert all(not p.requires_grad for p in key.parameters())
    before = key.encoder.weight.clone()
    with torch.no_grad():
        enc.weight.add_(2.0)
    key.update(enc)
    assert torch.allclose(key.encoder.weight, 0.5 * before + 0.5 * enc.weight)
    out = key(torch.randn(4, 3))
    assert out.shape == (4, 2) and not out.requires_grad
    with pytest.raises(ValueError, match="momentum"):
        MomentumEncoder(enc, momentum=1.5)
    with pytest.raises(ValueError, match="key_model"):
        momentum_update(nn.Linear(3, 3), enc)


def test_queue_is_fifo_and_wraps_around():
    q = MoCoQueue(dim=2, size=5)
    assert len(q) == 0 and q.negatives()[0].shape == (0, 2)
    q.enqueue(_rows(3, 0), torch.tensor([0, 1, 2]))
    assert q.negatives()[1].tolist() == [0, 1, 2]
    q.enqueue(_rows(3, 3), torch.tensor([3, 4, 5]))  # wraps: 0 is overwritten by 5
    emb, keys = q.negatives()
    assert len(q) == 5 and int(q.ptr) == 1
    assert keys.tolist() == [1, 2, 3, 4, 5] and emb[:, 0].tolist() == [1, 2, 3, 4, 5]
    q.enqueue(_rows(7, 10), torch.arange(10, 17))  # more than the queue holds: the newest 5 survive
    assert q.negatives()[1].tolist() == [12, 13, 14, 15, 16]


def test_queue_state_round_trips_exactly_through_a_checkpoint():
    q = MoCoQueue(dim=2, size=4)
    q.enqueue(_rows(3), text_keys(["a", "b", "c"]))
    q.enqueue(_rows(2, 3), text_keys(["d", "e"]))
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    r = MoCoQueue(dim=2, size=4)
    r.load_state_dict(torch.load(buf))
    for a, b in zip(q.negatives(), r.negatives()):
        assert torch.equal(a, b)
    assert int(r.ptr) == int(q.ptr) and len(r) == len(q)
    q.enqueue(_rows(1, 9), text_keys(["f"]))
    r.enqueue(_rows(1, 9), text_keys(["f"]))
    assert torch.equal(q.negatives()[0], r.negatives()[0])


def test_queue_rejects_bad_inputs():
    with pytest.raises(ValueError, match="size"):
        MoCoQueue(dim=2, size=0)
    q = MoCoQueue(dim=2, size=4)
    with pytest.raises(ValueError, match="embeddings: expected shape \\(n, 2\\)"):
        q.enqueue(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="keys: expected shape \\(3,\\)"):
        q.enqueue(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))


def test_moco_loss_uses_queue_as_shared_negatives():
    torch.manual_seed(1)
    q, k = torch.randn(3, 4), torch.randn(3, 4)
    queue = MoCoQueue(dim=4, size=8)
    assert torch.allclose(moco_loss(q, k, queue), info_nce(q, k))  # empty queue: in-batch only
    queue.enqueue(torch.randn(5, 4))
    expected = info_nce(q, k, queue.negatives()[0])
    assert torch.allclose(moco_loss(q, k, queue), expected)


def test_queued_copy_of_a_current_batch_item_is_not_its_negative():
    torch.manual_seed(2)
    q, k = torch.randn(2, 4), torch.randn(2, 4)
    keys = text_keys(["same", "other"])
    old = torch.randn(3, 4)
    queue = MoCoQueue(dim=4, size=8)
    queue.enqueue(old, text_keys(["x", "same", "y"]))  # "same" was queued in an earlier step
    got = moco_loss(q, k, queue, positive_keys=keys)
    # Only row 0 loses queue entry 1; row 1 keeps all negatives.
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 3] = True
    assert torch.allclose(got, info_nce(q, k, old, mask=mask), atol=1e-6)
    assert not torch.allclose(got, info_nce(q, k, old), atol=1e-4)
