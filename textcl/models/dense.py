"""A sentence-transformers ``Dense`` module: a linear layer and an activation named by its class path."""
from __future__ import annotations

import torch
from torch import nn


class DenseLayer(nn.Module):
    """``activation(linear(x))``: a sentence-transformers ``Dense`` module. (B, d_in) -> (B, d_out)."""

    ACTIVATIONS = {
        "torch.nn.modules.activation.Tanh": nn.Tanh,
        "torch.nn.modules.linear.Identity": nn.Identity,
        "torch.nn.modules.activation.ReLU": nn.ReLU,
        "torch.nn.modules.activation.GELU": nn.GELU,
        "torch.nn.modules.activation.Sigmoid": nn.Sigmoid,
    }

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 activation: str = "torch.nn.modules.activation.Tanh"):
        super().__init__()
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"unsupported Dense activation {activation!r}; expected one of {sorted(self.ACTIVATIONS)}")
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation_name = activation
        self.activation = self.ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x))
