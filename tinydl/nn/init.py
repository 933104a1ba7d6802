"""Parameter initialisation with ``torch.nn.init``'s names, formulas and RNG draws.

The random fills are ``uniform_``/``normal_`` on the tensor's storage (an allocation, drawn from
torch's generator), in the same order and with the same bounds as ``torch.nn.init``, so after
``td.manual_seed(s)`` a tinydl parameter gets exactly the values ``torch.manual_seed(s)`` and
``torch.nn.init`` would give. Every function takes a tinydl Tensor (or a torch tensor), fills it
in place and returns it.
"""

from __future__ import annotations

import math

import torch

from tinydl.autograd import Tensor

__all__ = ["calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_", "xavier_uniform_",
           "xavier_normal_", "kaiming_uniform_", "kaiming_normal_"]


def _data(tensor) -> torch.Tensor:
    if isinstance(tensor, Tensor):
        return tensor.data
    if isinstance(tensor, torch.Tensor):
        return tensor
    raise TypeError(f"init: tensor must be a tinydl.Tensor or torch.Tensor, got {type(tensor).__name__}")


_LINEAR_FNS = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
               "conv_transpose3d", "sigmoid")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for ``nonlinearity`` (PyTorch's table)."""
    if nonlinearity in _LINEAR_FNS:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _fans(t: torch.Tensor) -> tuple[int, int]:
    if t.dim() < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 dimensions")
    receptive = math.prod(t.shape[2:]) if t.dim() > 2 else 1
    return t.size(1) * receptive, t.size(0) * receptive


def _fan(t: torch.Tensor, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _fans(t)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor, a: float = 0.0, b: float = 1.0, generator: torch.Generator | None = None):
    _data(tensor).uniform_(a, b, generator=generator)
    return tensor


def normal_(tensor, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None):
    _data(tensor).normal_(mean, std, generator=generator)
    return tensor


def constant_(tensor, val: float):
    _data(tensor).fill_(val)
    return tensor


def zeros_(tensor):
    _data(tensor).zero_()
    return tensor


def ones_(tensor):
    _data(tensor).fill_(1.0)
    return tensor


def xavier_uniform_(tensor, gain: float = 1.0, generator: torch.Generator | None = None):
    """U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(_data(tensor))
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    a = math.sqrt(3.0) * std  # PyTorch's order of operations: the same bound to the last bit
    return uniform_(tensor, -a, a, generator)


def xavier_normal_(tensor, gain: float = 1.0, generator: torch.Generator | None = None):
    """N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(_data(tensor))
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return normal_(tensor, 0.0, std, generator)


def kaiming_uniform_(tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                     generator: torch.Generator | None = None):
    """U(-bound, bound), bound = gain * sqrt(3 / fan); nn.Linear/Conv2d use a=sqrt(5)."""
    t = _data(tensor)
    if 0 in t.shape:
        return tensor
    fan = _fan(t, mode)
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    generator: torch.Generator | None = None):
    """N(0, std^2), std = gain / sqrt(fan)."""
    t = _data(tensor)
    if 0 in t.shape:
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(t, mode))
    return normal_(tensor, 0.0, std, generator)
