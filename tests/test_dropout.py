"""Fast CPU dropout: the Bernoulli(1 - p) distribution, the x * keep / (1 - p) rule and its gradient, masks that
follow torch's seed (and GradCache's replay), attention equal to softmax(q k^T s + mask) with the same mask, and
a model that keeps its outputs, its saved config and its sentence-transformers loading."""
import json

import pytest
import torch

from textcl.losses.gradcache import RandContext
from textcl.models import Encoder
from textcl.models.dropout import ATTENTION, FastDropout, bernoulli_keep, cpu_attention, fast_dropout, install


def test_keep_rate_is_one_minus_p():
    torch.manual_seed(0)
    n = 1_000_000
    for p in (0.1, 0.5, 0.9):
        rate = bernoulli_keep((n,), p).float().mean().item()
        sigma = (p * (1 - p) / n) ** 0.5
        assert abs(rate - (1 - p)) < 5 * sigma, (p, rate)
    assert bernoulli_keep((3, 5), 0.0).all()  # p = 0 keeps everything


def test_masks_are_independent_across_positions_and_calls():
    torch.manual_seed(1)
    a, b = bernoulli_keep((200_000,), 0.5).float(), bernoulli_keep((200_000,), 0.5).float()
    # neighbours (the two halves of one 64-bit draw) and two calls: correlation ~ N(0, 1/sqrt(n)) = 0.0022
    assert abs(torch.corrcoef(torch.stack([a[:-1], a[1:]]))[0, 1]) < 0.012
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1]) < 0.012


def test_bad_rate_is_refused_by_name():
    with pytest.raises(ValueError, match="dropout p: expected 0 <= p < 1, got 1.0"):
        bernoulli_keep((4,), 1.0)
    with pytest.raises(ValueError, match="got -0.1"):
        bernoulli_keep((4,), -0.1)


def test_masks_follow_torch_seed_and_gradcache_replay():
    torch.manual_seed(5)
    first = bernoulli_keep((64, 33), 0.3)
    torch.manual_seed(5)
    assert torch.equal(first, bernoulli_keep((64, 33), 0.3))
    assert not torch.equal(first, bernoulli_keep((64, 33), 0.3))  # the stream moved on
    torch.manual_seed(7)
    state = RandContext()
    drawn = bernoulli_keep((64, 33), 0.3)
    with state:
        assert torch.equal(drawn, bernoulli_keep((64, 33), 0.3))  # the replay draws the same mask


def test_values_and_gradient_are_x_keep_over_one_minus_p():
    torch.manual_seed(2)
    x = torch.full((50, 40), 3.0, requires_grad=True)
    y = fast_dropout(x, 0.25)
    kept = y != 0
    assert torch.allclose(y[kept], torch.tensor(4.0))  # 3 / (1 - 0.25)
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() / 0.75)
    assert 0.15 < 1 - kept.float().mean() < 0.35


def test_eval_mode_and_p_zero_are_the_identity():
    x = torch.randn(8, 16)
    assert torch.equal(fast_dropout(x, 0.4, training=False), x)
    assert torch.equal(fast_dropout(x, 0.0), x)
    layer = FastDropout(0.4).eval()
    assert torch.equal(layer(x), x) and isinstance(layer, torch.nn.Dropout)


def _qkv(b=3, h=2, n=7, d=4):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, h, n, d, generator=g) for _ in range(3)]


def test_attention_is_softmax_times_the_same_mask():
    q, k, v = _qkv()
    mask = torch.ones(3, 1, 7, 7, dtype=torch.bool)
    mask[1, :, :, 5:] = False  # row 1 has 5 tokens
    module = torch.nn.Module()
    torch.manual_seed(11)
    out, _ = cpu_attention(module, q, k, v, mask, dropout=0.2, scaling=0.5)
    torch.manual_seed(11)
    keep = bernoulli_keep((3, 2, 7, 7), 0.2)
    scores = (q @ k.transpose(-1, -2)) * 0.5
    probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) * keep / 0.8
    assert torch.allclose(out, (probs @ v).transpose(1, 2), atol=1e-6)
    # an additive float mask gives the same
    additive = torch.zeros(3, 1, 7, 7).masked_fill(~mask, float("-inf"))
    torch.manual_seed(11)
    out2, _ = cpu_attention(module, q, k, v, additive, dropout=0.2, scaling=0.5)
    assert torch.allclose(out, out2, atol=1e-6)


def test_attention_without_dropout_is_transformers_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q, k, v = _qkv()
    module = torch.nn.Module()
    module.is_causal = False
    ours, _ = cpu_attention(module, q, k, v, None, dropout=0.0, scaling=0.5)
    theirs, _ = sdpa_attention_forward(module, q, k, v, None, dropout=0.0, scaling=0.5)
    assert torch.equal(ours, theirs)


def test_installed_model_keeps_outputs_config_and_loading(tiny_bert_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    enc = Encoder.load(tiny_bert_dir)
    texts = ["a cat sat on the mat", "dogs", "the quick brown fox jumps over the lazy dog"]
    before = enc.encode(texts)
    found = install(enc.model)
    assert found == {"layers": sum(isinstance(m, FastDropout) for m in enc.model.modules()), "attention": True}
    assert found["layers"] == 1 + 3 * 2  # embeddings + (attention probabilities, attention output, output) x 2
    assert enc.model.config._attn_implementation == ATTENTION
    assert torch.equal(torch.from_numpy(enc.encode(texts)), torch.from_numpy(before))  # eval: no dropout at all

    enc.train()
    feats = enc.tokenize(texts)
    torch.manual_seed(3)
    a = enc(feats)
    torch.manual_seed(3)
    b = enc(feats)
    torch.manual_seed(4)
    c = enc(feats)
    assert torch.equal(a, b) and not torch.equal(a, c)  # training noise follows the seed
    a.square().mean().backward()
    assert all(p.grad is not None for p in enc.model.encoder.parameters())

    saved = enc.eval().save(tmp_path / "m")
    config = json.loads((saved / "config.json").read_text())
    assert ATTENTION not in json.dumps(config)  # the saved model is a plain BERT folder
    st = SentenceTransformer(str(saved), device="cpu")
    assert torch.allclose(torch.from_numpy(st.encode(texts)), torch.from_numpy(before), atol=1e-5)


def test_causal_and_grouped_heads_keep_transformers_attention():
    """A causal module (GPT-2 style, is_causal on the module, mask None when unpadded) or grouped key/value
    heads must not take the bidirectional path: the output equals transformers' SDPA with the same dropout
    switched off by seed-independent comparison at dropout 0 (causality), and runs at all (grouped heads)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q, k, v = _qkv()
    module = torch.nn.Module()
    module.is_causal = True
    torch.manual_seed(0)
    ours, _ = cpu_attention(module, q, k, v, None, dropout=0.5, scaling=0.5)
    # token 0 of a causal model sees only itself: its output is v[..., 0, :] scaled by its dropout keep or 0
    first = ours[:, 0]  # (B, heads, d)
    assert torch.all((first == 0) | torch.isclose(first, v[:, :, 0] * 2.0, atol=1e-6).all(-1, keepdim=True))
    module.is_causal = False
    kg, vg = k[:, :1], v[:, :1]  # one key/value head for two query heads
    out, _ = cpu_attention(module, q, kg, vg, None, dropout=0.2, scaling=0.5)
    assert out.shape == (3, 7, 2, 4)
    ref, _ = sdpa_attention_forward(module, q, kg, vg, None, dropout=0.0, scaling=0.5)
    assert ref.shape == out.shape


def test_a_query_with_no_key_gets_zeros_not_nan():
    q, k, v = _qkv()
    mask = torch.ones(3, 1, 7, 7, dtype=torch.bool)
    mask[0, :, 2, :] = False  # query 2 of row 0 may attend nothing
    out, _ = cpu_attention(torch.nn.Module(), q, k, v, mask, dropout=0.2, scaling=0.5)
    assert torch.isfinite(out).all() and torch.equal(out[0, 2], torch.zeros(2, 4))


def test_a_rate_next_to_one_drops_everything():
    assert not bernoulli_keep((1000,), 1 - 2**-40).any()
