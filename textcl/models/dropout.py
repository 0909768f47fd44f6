"""Dropout whose masks are cheap to draw on the CPU.

torch draws a CPU dropout mask one element at a time from its Mersenne Twister (``bernoulli_``): on a 2-core
Xeon, 7 ns an element, 44 ms for one layer's attention probabilities at batch 32 x 128 tokens, 25-30% of a
MiniLM training step (benchmarks/RESULTS.md, "The uniform-length shape"). Here a mask comes from numpy's SFC64
generator, 64 random bits a call, split into two 32-bit draws, each kept when it is at or above ``p x 2**32``:
the same i.i.d. Bernoulli(1 - p) distribution (p rounded to a multiple of 2**-32), 2.6x faster. Each mask's
SFC64 seed is drawn from torch's default CPU generator, so ``torch.manual_seed``, a checkpoint's saved RNG state
and GradCache's replay (:class:`textcl.losses.gradcache.RandContext`) give the same masks as they do for
torch's own dropout. On other devices :func:`fast_dropout` is ``torch.nn.functional.dropout``.

:func:`install` puts it into a Hugging Face model: every ``nn.Dropout`` becomes a :class:`FastDropout`, and a
model that runs attention through transformers' attention interface gets :func:`cpu_attention`, which applies
the attention-probability dropout itself when training on the CPU and is transformers' SDPA otherwise.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

ATTENTION = "textcl_cpu"  #: the name :func:`cpu_attention` is registered under in transformers' interfaces


def bernoulli_keep(shape: tuple[int, ...] | torch.Size, p: float) -> torch.Tensor:
    """A bool tensor of ``shape`` (on the CPU): each element True with probability ``1 - p``, independently."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout p: expected 0 <= p < 1, got {p}")
    n = int(np.prod(shape, dtype=np.int64))
    seed = int(torch.randint(0, 2**62, (1,)))  # follows torch's CPU RNG: seeding, saved states, replays
    raw = np.random.SFC64(seed).random_raw((n + 1) // 2)  # (ceil(n / 2),) uint64 = n 32-bit draws
    draws = torch.from_numpy(raw.view(np.int32))[:n]  # uniform on [-2**31, 2**31)
    threshold = round(p * 2**32) - 2**31  # P(draw >= threshold) = 1 - p (to 2**-32)
    if threshold > 2**31 - 1:  # p within 2**-33 of 1: no int32 draw reaches it
        return torch.zeros(tuple(shape), dtype=torch.bool)
    return (draws >= threshold).view(shape)


class _MaskedScale(torch.autograd.Function):
    """x (any shape) -> x * keep * scale, keeping the bool mask (1 byte an element) for the backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float, scale: float) -> torch.Tensor:
        keep = bernoulli_keep(x.shape, p)
        ctx.save_for_backward(keep)
        ctx.scale = scale
        out = x.mul(keep)
        return out.mul_(scale) if scale != 1.0 else out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        out = grad.mul(keep)
        return (out.mul_(ctx.scale) if ctx.scale != 1.0 else out), None, None


def fast_dropout(x: torch.Tensor, p: float, training: bool = True, *, rescale: bool = True) -> torch.Tensor:
    """``torch.nn.functional.dropout(x, p, training)`` with :func:`bernoulli_keep`'s masks on the CPU.
    ``rescale=False`` leaves out the ``1 / (1 - p)`` factor (CPU only), for a caller that applies it to a
    smaller tensor downstream."""
    if not training or p == 0.0 or x.device.type != "cpu":
        return nn.functional.dropout(x, p, training)
    return _MaskedScale.apply(x, p, 1.0 / (1.0 - p) if rescale else 1.0)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` (same ``p``, same ``inplace`` flag ignored) drawing its CPU masks with :func:`fast_dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def cpu_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                  **kwargs):
    """transformers' attention-function signature: query, key, value (B, heads, L, d_head), attention_mask
    (B, 1, L, L) bool (True: attend) or additive float, or None -> ((B, L, heads, d_head), None).

    Training a bidirectional model on the CPU with attention dropout: softmax(q k^T x scaling + mask) in fp32,
    :func:`fast_dropout`, times v, as transformers' eager attention computes it (torch's SDPA runs an unfused
    path on the CPU whenever dropout is on); a query with no key to attend gets zeros, as with SDPA. Causal
    models, grouped key/value heads, soft-capping and position biases, and everything without dropout:
    transformers' SDPA attention, unchanged.
    """
    if (dropout == 0.0 or query.device.type != "cpu" or kwargs.get("is_causal") or getattr(module, "is_causal", False)
            or key.shape[1] != query.shape[1] or kwargs.get("softcap") is not None
            or kwargs.get("position_bias") is not None):
        # causal models, grouped key/value heads, soft-capping, position biases: transformers' SDPA as it is
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    # both scale factors go to the (B, heads, L, d_head) side, d_head / L the size of the (B, heads, L, L) one
    scores = torch.matmul(query * scaling, key.transpose(-1, -2))  # (B, heads, L, L)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        else:
            scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32)  # fp32 under bf16 autocast too, as SDPA computes it
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        probs = probs.masked_fill(~attention_mask.any(dim=-1, keepdim=True), 0.0)  # no key to attend: 0, not NaN
    kept = fast_dropout(probs.to(value.dtype), dropout, rescale=False)
    out = torch.matmul(kept, value).mul_(1.0 / (1.0 - dropout))  # (B, heads, L, d_head)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, cpu_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def install(model: nn.Module) -> dict[str, int | bool]:
    """Give ``model`` (a Hugging Face ``PreTrainedModel``) fast CPU dropout in place: each ``nn.Dropout`` becomes
    a :class:`FastDropout` with the same rate, and a model on transformers' SDPA attention interface runs
    :func:`cpu_attention` (the config's ``_attn_implementation`` is not saved with the model). Returns
    ``{"layers": number of dropout layers replaced, "attention": whether attention dropout is covered}``."""
    layers = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p))
                layers += 1
    config = getattr(model, "config", None)
    attention = False
    if config is not None and getattr(model, "_supports_attention_backend", False) \
            and getattr(config, "_attn_implementation", None) == "sdpa":
        _register()
        config._attn_implementation = ATTENTION
        attention = True
    return {"layers": layers, "attention": attention}
