"""``nn.Linear`` with an optional fused activation, and ``nn.Identity``."""

from __future__ import annotations

import math

import torch

from tinydl import _runtime
from tinydl import functional as F

from .module import Module, Parameter


class FusedLayer(Module):
    """What Linear and Conv2d share: a weight (out first) and optional bias with PyTorch's default
    init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both (= kaiming_uniform_ with a=sqrt(5)), so the
    same seed gives torch's weights; and an activation the kernel fuses (``Sequential`` passes the
    following activation module's in through ``forward(x, activation=..., negative_slope=...)``)."""

    fuses_activation = True

    def _make_parameters(self, weight_shape: tuple, fan_in: int, bias: bool, device, dtype) -> None:
        self.fan_in = fan_in
        kw = dict(device=device or _runtime.device(), dtype=dtype or torch.float32)
        self.weight = Parameter(torch.empty(weight_shape, **kw))
        if bias:
            self.bias = Parameter(torch.empty((weight_shape[0],), **kw))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.fan_in) if self.fan_in > 0 else 0.0
        self.weight.data.uniform_(-bound, bound)  # an RNG fill of the storage, as torch's init does
        if self.bias is not None:
            self.bias.data.uniform_(-bound, bound)

    def _fused(self, activation: str | None, negative_slope: float | None) -> tuple[str, float]:
        return (self.activation if activation is None else activation,
                self.negative_slope if negative_slope is None else negative_slope)


class Linear(FusedLayer):
    """y = act(x @ weight.T + bias). weight is (out_features, in_features) as in PyTorch, and so is
    the init (see FusedLayer)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "none",
                 negative_slope: float = 0.01, device=None, dtype=None):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"Linear: {name} must be a non-negative int, got {v!r}")
        F.check_activation(activation)
        self.in_features, self.out_features = in_features, out_features
        self.activation, self.negative_slope = activation, negative_slope
        self._make_parameters((out_features, in_features), in_features, bias, device, dtype)

    def forward(self, x, activation: str | None = None, negative_slope: float | None = None):
        return F.linear(x, self.weight, self.bias, *self._fused(activation, negative_slope))

    def extra_repr(self) -> str:
        act = f", activation={self.activation!r}" if self.activation != "none" else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}{act}"


class Identity(Module):
    def forward(self, x):
        return x
