"""Convolution, pooling and flatten modules with PyTorch's names, layouts and initialisation."""

from __future__ import annotations

from tinydl import functional as F
from tinydl.ops import conv as _ops

from .linear import FusedLayer
from .module import Module

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "Flatten"]


class Conv2d(FusedLayer):
    """y = act(conv2d(x, weight) + bias). weight is (out_channels, in_channels/groups, kH, kW) as in
    PyTorch, and so is the init (see FusedLayer), fan_in = in_channels/groups * kH * kW."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", activation: str = "none",
                 negative_slope: float = 0.01, device=None, dtype=None):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not _ops._is_int(v) or v < 1:
                raise ValueError(f"Conv2d: {name} must be a positive int, got {v!r}")
        if not _ops._is_int(groups) or groups < 1:
            raise ValueError(f"Conv2d: groups must be a positive int, got {groups!r}")
        if in_channels % groups:
            raise ValueError(f"Conv2d: in_channels={in_channels} must be divisible by groups={groups}")
        if out_channels % groups:
            raise ValueError(f"Conv2d: out_channels={out_channels} must be divisible by groups={groups}")
        if padding_mode != "zeros":
            raise ValueError(f"Conv2d: padding_mode={padding_mode!r} is not supported; tinydl implements 'zeros'")
        F.check_activation(activation)
        self.kernel_size = _ops._pair("Conv2d", "kernel_size", kernel_size, 1)
        self.stride = _ops._pair("Conv2d", "stride", stride, 1)
        self.padding = padding if isinstance(padding, str) else _ops._pair("Conv2d", "padding", padding, 0)
        self.dilation = _ops._pair("Conv2d", "dilation", dilation, 1)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.activation, self.negative_slope = activation, negative_slope
        fan_in = in_channels // groups * self.kernel_size[0] * self.kernel_size[1]
        self._make_parameters((out_channels, in_channels // groups, *self.kernel_size), fan_in, bias, device, dtype)

    def forward(self, x, activation: str | None = None, negative_slope: float | None = None):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                        *self._fused(activation, negative_slope))

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.activation != "none":
            s += f", activation={self.activation!r}"
        return s


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
                 ceil_mode: bool = False):
        super().__init__()
        if return_indices:
            raise ValueError("MaxPool2d: return_indices=True is not supported by tinydl")
        self.kernel_size, self.padding = kernel_size, padding
        self.stride = stride if stride is not None else kernel_size
        self.dilation, self.ceil_mode = dilation, ceil_mode

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override=None):
        super().__init__()
        self.kernel_size, self.padding = kernel_size, padding
        self.stride = stride if stride is not None else kernel_size
        self.ceil_mode, self.count_include_pad, self.divisor_override = ceil_mode, count_include_pad, divisor_override

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                            self.divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Flatten(Module):
    """Merge dims start_dim..end_dim (default: all but the batch dim), a view when possible."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
