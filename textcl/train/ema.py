"""An exponential moving average of the trained weights (Polyak averaging), evaluated and saved in their place.

After optimizer step ``t`` (1, 2, ...) every trained parameter ``w`` updates its average ``a``::

    a <- d_t * a + (1 - d_t) * w,    d_t = min(decay, (1 + t) / (10 + t))

starting from the initial weights. The ramp ``(1 + t) / (10 + t)`` keeps the first steps from being dominated
by the starting model when the run is short against the horizon ``1 / (1 - decay)`` (the rule of TensorFlow's
``ExponentialMovingAverage`` with ``num_updates``). Evaluation, best-step selection and the saved model use
the average; training continues from the raw weights.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch

__all__ = ["WeightAverage"]


class WeightAverage:
    """The average of ``params`` (the optimizer's trained tensors), with the number of updates so far.

    Registered with Accelerate's checkpointing (``state_dict`` / ``load_state_dict``), so a resumed run
    continues the same average."""

    def __init__(self, params: Iterable[torch.nn.Parameter], decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay: expected a value in (0, 1), got {decay!r}")
        self.params = list(params)
        self.decay = float(decay)
        self.updates = 0
        self.shadow = [p.detach().clone() for p in self.params]

    def rate(self, t: int) -> float:
        """``d_t``: the weight kept of the average at update ``t``."""
        return min(self.decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current weights into the average (call after each optimizer step)."""
        self.updates += 1
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - self.rate(self.updates))

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block the parameters hold the average; the raw weights come back after it."""
        with torch.no_grad():
            raw = [p.detach().to("cpu", copy=True) for p in self.params]  # not a second copy on the accelerator
            for p, a in zip(self.params, self.shadow):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, r in zip(self.params, raw):
                    p.copy_(r)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "decay": self.decay, "shadow": list(self.shadow)}  # saved at once

    def load_state_dict(self, state: dict) -> None:
        if float(state["decay"]) != self.decay:
            raise ValueError(f"weight average: the checkpoint was written with optim.ema_decay {state['decay']}, this "
                             f"run has {self.decay}; resume with the same value or start afresh")
        shadow = state["shadow"]
        if len(shadow) != len(self.shadow) or any(a.shape != b.shape for a, b in zip(shadow, self.shadow)):
            raise ValueError("weight average: the checkpoint's average does not match this model's parameters")
        with torch.no_grad():
            for s, t in zip(self.shadow, shadow):
                s.copy_(t)
        self.updates = int(state["updates"])
