"""Activation modules. Each knows its kernel name so ``Sequential`` can fuse it into the
preceding Linear/Conv2d (``fused_activation``); on its own it runs the elementwise kernel."""

from __future__ import annotations

from tinydl import functional as F

from .module import Module


class _Activation(Module):
    name = "none"

    @property
    def fused_activation(self) -> tuple[str, float] | None:
        """(activation name, negative_slope) for a fused kernel, or None if it can't be fused."""
        return (self.name, 0.01)

    def forward(self, x):
        return F._activation(x, self.name)


class ReLU(_Activation):
    name = "relu"

    def __init__(self, inplace: bool = False):
        super().__init__()


class Sigmoid(_Activation):
    name = "sigmoid"


class Tanh(_Activation):
    name = "tanh"


class SiLU(_Activation):
    name = "silu"


class GELU(_Activation):
    name = "gelu"

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate != "none":
            raise ValueError(f"GELU: approximate={approximate!r} is not supported; tinydl implements 'none'")


class LeakyReLU(_Activation):
    name = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        self.negative_slope = float(negative_slope)

    @property
    def fused_activation(self):
        return (self.name, self.negative_slope)

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class ELU(_Activation):
    name = "elu"

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        super().__init__()
        self.alpha = float(alpha)

    @property
    def fused_activation(self):
        # fused kernels implement alpha = 1 only (F.linear has no alpha argument)
        return (self.name, 1.0) if self.alpha == 1.0 else None

    def forward(self, x):
        return F.elu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
