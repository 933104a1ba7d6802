"""``nn.Linear`` with an optional fused activation, and ``nn.Identity``."""

from __future__ import annotations

import math

import torch

from tinydl import _runtime
from tinydl import functional as F

from .module import Module, Parameter


class Linear(Module):
    """y = act(x @ weight.T + bias). weight is (out_features, in_features) as in PyTorch, and so is
    the init: U(-1/sqrt(in), 1/sqrt(in)) for weight (kaiming_uniform with a=sqrt(5)) and bias."""

    fuses_activation = True

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "none",
                 negative_slope: float = 0.01, device=None, dtype=None):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"Linear: {name} must be a non-negative int, got {v!r}")
        F.check_activation(activation)
        self.in_features, self.out_features = in_features, out_features
        self.activation, self.negative_slope = activation, negative_slope
        kw = dict(device=device or _runtime.device(), dtype=dtype or torch.float32)
        self.weight = Parameter(torch.empty((out_features, in_features), **kw))
        if bias:
            self.bias = Parameter(torch.empty((out_features,), **kw))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        self.weight.data.uniform_(-bound, bound)  # RNG fill = kaiming_uniform_(a=sqrt(5))
        if self.bias is not None:
            self.bias.data.uniform_(-bound, bound)

    def forward(self, x, activation: str | None = None, negative_slope: float | None = None):
        act = self.activation if activation is None else activation
        slope = self.negative_slope if negative_slope is None else negative_slope
        return F.linear(x, self.weight, self.bias, act, slope)

    def extra_repr(self) -> str:
        act = f", activation={self.activation!r}" if self.activation != "none" else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}{act}"


class Identity(Module):
    def forward(self, x):
        return x
