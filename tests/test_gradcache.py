"""GradCache: the cached step gives the loss and gradients of the uncached step, dropout included."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from textcl.losses import InfoNCE, RandContext, cached_backward, split_batch
from textcl.losses import gradcache as gradcache_mod


def _mlp(seed=0, p=0.2):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(p), nn.Linear(16, 8), nn.Dropout(p))


def _uncached(views, loss_fn, m):
    """The reference: the same chunked forwards (hence the same RNG draws), all with a graph."""
    embs = [torch.cat([fn(c) for c in split_batch(x, m)]) for fn, x in views]
    loss = loss_fn(*embs)
    loss.backward()
    return loss.detach()


def _grads(*modules):
    return [p.grad.clone() for mod in modules for p in mod.parameters() if p.grad is not None]


def _run_both(make_views, loss_fn, m, modules, seed=123):
    torch.manual_seed(seed)
    ref_loss = _uncached(make_views(), loss_fn, m)
    ref_grads, ref_rng = _grads(*modules), torch.get_rng_state()
    for mod in modules:
        mod.zero_grad()
    torch.manual_seed(seed)
    loss = cached_backward(make_views(), loss_fn, m)
    return (ref_loss, ref_grads, ref_rng), (loss, _grads(*modules), torch.get_rng_state())


def _assert_same(ref, got):
    (rl, rg, rr), (gl, gg, gr) = ref, got
    assert not gl.requires_grad
    assert torch.allclose(gl, rl, atol=1e-5), (gl, rl)
    assert len(gg) == len(rg) > 0
    for a, b in zip(gg, rg):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    assert torch.equal(gr, rr)  # the global RNG ends where the uncached step leaves it


def test_unsup_simcse_same_inputs_twice_with_dropout():
    model = _mlp()
    x = torch.randn(20, 6)
    loss_fn = InfoNCE(0.05)
    _assert_same(*_run_both(lambda: [(model, x), (model, x)], loss_fn, 8, [model]))


def test_without_rng_replay_the_gradients_differ(monkeypatch):
    """Guards the test above: a replay that draws fresh dropout masks is caught."""
    model = _mlp()
    x = torch.randn(20, 6)
    monkeypatch.setattr(RandContext, "__enter__", lambda self: self)
    monkeypatch.setattr(RandContext, "__exit__", lambda self, *exc: None)
    ref, got = _run_both(lambda: [(model, x), (model, x)], InfoNCE(0.05), 8, [model])
    assert not all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got[1], ref[1]))


def test_siamese_triples_with_hard_negatives_and_learnt_temperature():
    model = _mlp(1)
    q, d, n = torch.randn(12, 6), torch.randn(12, 6), torch.randn(12, 6)
    loss_mod = InfoNCE(0.05, learnable_temperature=True, hard_negative_weight=0.3)

    def loss_fn(a, p, neg):
        return loss_mod(a, p, neg.unsqueeze(1))

    _assert_same(*_run_both(lambda: [(model, q), (model, d), (model, n)], loss_fn, 5, [model, loss_mod]))


def test_two_tower_encoders_and_dict_inputs():
    qenc, denc = _mlp(2), _mlp(3)
    xq, xd = {"x": torch.randn(9, 6), "scale": 2.0}, {"x": torch.randn(9, 6), "scale": 2.0}

    def embed(enc):
        return lambda batch: enc(batch["x"]) * batch["scale"]

    _assert_same(*_run_both(lambda: [(embed(qenc), xq), (embed(denc), xd)], InfoNCE(0.1, symmetric=True), 4,
                            [qenc, denc]))


def test_without_dropout_equals_one_full_batch_forward():
    model = _mlp(4, p=0.0)
    x, y = torch.randn(16, 6), torch.randn(16, 6)
    loss_fn = InfoNCE(0.05)
    ref = loss_fn(model(x), model(y))
    ref.backward()
    ref_grads = _grads(model)
    model.zero_grad()
    loss = cached_backward([(model, x), (model, y)], loss_fn, mini_batch_size=3)
    assert torch.allclose(loss, ref.detach(), atol=1e-5)
    for a, b in zip(_grads(model), ref_grads):
        assert torch.allclose(a, b, atol=1e-5)


def test_tiny_bert_with_dropout_matches_uncached():
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32,
                        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    torch.manual_seed(0)
    bert = BertModel(config).train()
    g = torch.Generator().manual_seed(1)
    batch = {"input_ids": torch.randint(5, 50, (12, 10), generator=g),
             "attention_mask": torch.ones(12, 10, dtype=torch.long)}
    batch["attention_mask"][::3, 7:] = 0

    def embed(b):
        return bert(**b).last_hidden_state[:, 0]

    _assert_same(*_run_both(lambda: [(embed, batch), (embed, batch)], InfoNCE(0.05), 5, [bert]))


def test_backward_hook_and_no_sync_are_used():
    model = _mlp(5, p=0.0)
    x = torch.randn(10, 6)
    calls = {"backward": 0, "no_sync": 0}

    def backward(loss):
        calls["backward"] += 1
        (loss * 2).backward()  # e.g. a loss scale: it must reach the parameter gradients

    class NoSync:
        def __enter__(self):
            calls["no_sync"] += 1

        def __exit__(self, *exc):
            return None

    cached_backward([(model, x), (model, x)], InfoNCE(0.05), 4, backward=backward, no_sync=NoSync)
    scaled = _grads(model)
    model.zero_grad()
    cached_backward([(model, x), (model, x)], InfoNCE(0.05), 4)
    assert calls == {"backward": 1, "no_sync": 5}  # 2 views x 3 chunks, all but the last replay
    for a, b in zip(scaled, _grads(model)):
        assert torch.allclose(a, 2 * b, atol=1e-6)


def test_split_batch_handles_tensors_mappings_and_lists():
    assert [c.tolist() for c in split_batch(torch.arange(5), 2)] == [[0, 1], [2, 3], [4]]
    chunks = split_batch({"ids": torch.arange(5), "flag": True}, 3)
    assert [c["ids"].tolist() for c in chunks] == [[0, 1, 2], [3, 4]] and chunks[1]["flag"] is True
    assert split_batch(["a", "b", "c"], 2) == [["a", "b"], ["c"]]


def test_bad_arguments_are_named():
    model = _mlp()
    x = torch.randn(4, 6)
    with pytest.raises(ValueError, match="mini_batch_size"):
        cached_backward([(model, x)], lambda e: e.sum(), 0)
    with pytest.raises(ValueError, match="views\\[0\\]: embed_fn must return an \\(m, d\\) tensor"):
        cached_backward([(lambda b: model(b)[:, None], x)], lambda e: e.sum(), 2)
    with pytest.raises(ValueError, match="views\\[1\\]"):
        cached_backward([(model, x), (x, model)], lambda a, b: a.sum(), 2)
    with pytest.raises(TypeError, match="inputs"):
        split_batch(3, 2)
    assert gradcache_mod.__all__ == ["RandContext", "split_batch", "cached_backward"]
