"""A pull towards the starting weights (``optim.l2_start``), the L2-SP regulariser in decoupled form.

After each optimizer step every encoder weight ``w`` moves back towards its starting value ``w0``::

    w <- w - lr_t * lam * (w - w0)

the way AdamW's decoupled weight decay pulls towards zero (Loshchilov & Hutter 2019), with ``lr_t`` the step's
scheduled learning rate; L2-SP (Li et al. 2018) adds ``lam/2 * ||w - w0||^2`` to the loss instead, which Adam
would rescale per parameter. ``w0`` is taken when the model is loaded, before a resumed run loads its
checkpoint, so a resumed run pulls towards the same start.
"""
from __future__ import annotations

from typing import Iterable

import torch


class StartAnchor:
    """Holds a copy of ``params``' starting values (the same shapes, on their device)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lam: float):
        self.lam = float(lam)
        self.pairs = [(p, p.detach().clone()) for p in params if p.requires_grad]

    @torch.no_grad()
    def pull(self, lr: float) -> None:
        """``w -= lr * lam * (w - w0)`` for each held weight (after the optimizer step)."""
        rate = lr * self.lam
        if rate <= 0.0:
            return
        for p, p0 in self.pairs:
            p.sub_(p.detach() - p0, alpha=rate)

    def distance(self) -> float:
        """``||w - w0||`` over all held weights (for the log)."""
        with torch.no_grad():
            return float(torch.sqrt(sum(((p - p0).float() ** 2).sum() for p, p0 in self.pairs)))
