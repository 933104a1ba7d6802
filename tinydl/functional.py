"""Differentiable ops (``tinydl.functional``, imported as ``F``), PyTorch names and semantics.

Each op is a ``Function`` (forward/backward launching kernels from ``tinydl.kernels``) plus a
public function that validates its arguments on the host, before any kernel runs. Every
Function's docstring says what it saves for backward.
"""

from __future__ import annotations

import math

from tinydl.autograd import Function, Tensor
from tinydl.kernels import elementwise as _ew
from tinydl.kernels import linear as _lin
from tinydl.kernels.activations import ACTIVATIONS, saves_input
from tinydl.ops._validate import as_tensor, check_activation, check_float  # noqa: F401 (used by modules)

# ------------------------------------------------------------------------------------------------
# Linear (+ fused activation)
# ------------------------------------------------------------------------------------------------


class Linear(Function):
    """y = act(x @ W.T + b) in one kernel; backward fuses act' into the gradient GEMMs.

    Saves: x (2-D view) only if W needs a gradient, W (a reference to the parameter), and for the
    derivative either y (relu, sigmoid, tanh, leaky_relu with slope > 0: the output the next
    layer keeps anyway) or the pre-activation z (gelu, silu, elu, leaky_relu with slope <= 0);
    nothing for activation "none".
    """

    @staticmethod
    def forward(ctx, x, w, b, activation="none", alpha=0.01):
        lead, K = x.shape[:-1], x.shape[-1]
        x2 = x.reshape(math.prod(lead), K)  # not -1: K may be 0
        save_z = ctx.requires_grad and saves_input(activation, alpha)
        y, z = _lin.linear_fwd(x2, w, b, activation, alpha, save_z=save_z)
        need_w = ctx.needs_input_grad[1]
        ctx.save_for_backward(x2 if need_w else None, w,
                              (z if save_z else y) if activation != "none" else None)
        ctx.activation, ctx.alpha, ctx.x_shape = activation, alpha, x.shape
        return y.reshape(*lead, w.shape[0])

    @staticmethod
    def backward(ctx, grad):
        x2, w, s = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        dy = grad.reshape(math.prod(grad.shape[:-1]), grad.shape[-1])
        dx, dw, db = _lin.linear_bwd(dy, s, x2, w, ctx.activation, ctx.alpha,
                                     need_dx=need_x, need_dw=need_w, need_db=need_b)
        return (dx.reshape(ctx.x_shape) if dx is not None else None), dw, db, None, None


def linear(x, weight, bias=None, activation: str = "none", negative_slope: float = 0.01) -> Tensor:
    """``act(x @ weight.T + bias)``; x of shape (..., in_features), weight (out_features, in_features).

    ``activation`` is one of none, relu, leaky_relu (``negative_slope``), sigmoid, tanh, elu
    (alpha 1), gelu (exact erf form), silu, fused into the GEMM's epilogue.
    """
    x, weight = as_tensor(x, "input"), as_tensor(weight, "weight")
    bias = None if bias is None else as_tensor(bias, "bias")
    check_activation(activation)
    check_float("linear", input=x, weight=weight, bias=bias)
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input has shape {tuple(x.shape)}, so in_features={x.shape[-1] if x.ndim else None}, "
                         f"but weight {tuple(weight.shape)} expects in_features={weight.shape[1]}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"linear: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    alpha = 1.0 if activation == "elu" else float(negative_slope)
    return Linear.apply(x, weight, bias, activation, alpha)


# ------------------------------------------------------------------------------------------------
# Standalone activations
# ------------------------------------------------------------------------------------------------


class Activation(Function):
    """y = act(x) elementwise. Saves y or x, whichever the derivative is exact from (see
    ``kernels/activations.py``)."""

    @staticmethod
    def forward(ctx, x, activation="relu", alpha=0.01):
        y = _ew.activation_fwd(x, activation, alpha)
        if ctx.requires_grad:
            ctx.save_for_backward(x if saves_input(activation, alpha) else y)
        ctx.activation, ctx.alpha = activation, alpha
        return y

    @staticmethod
    def backward(ctx, grad):
        (s,) = ctx.saved_tensors
        return _ew.activation_bwd(grad, s, ctx.activation, ctx.alpha), None, None


def _activation(x, activation: str, alpha: float = 0.01) -> Tensor:
    x = as_tensor(x, "input")
    check_float(activation, input=x)
    return Activation.apply(x, activation, float(alpha))


def relu(x) -> Tensor:
    return _activation(x, "relu")


def leaky_relu(x, negative_slope: float = 0.01) -> Tensor:
    return _activation(x, "leaky_relu", negative_slope)


def sigmoid(x) -> Tensor:
    return _activation(x, "sigmoid")


def tanh(x) -> Tensor:
    return _activation(x, "tanh")


def elu(x, alpha: float = 1.0) -> Tensor:
    return _activation(x, "elu", alpha)


def gelu(x, approximate: str = "none") -> Tensor:
    if approximate != "none":
        raise ValueError(f"gelu: approximate={approximate!r} is not supported; tinydl implements 'none' (erf)")
    return _activation(x, "gelu")


def silu(x) -> Tensor:
    return _activation(x, "silu")


__all__ = ["linear", "relu", "leaky_relu", "sigmoid", "tanh", "elu", "gelu", "silu", "ACTIVATIONS"]

# The other op families live in tinydl/ops/ (one file each) and are re-exported here, so that
# ``from tinydl import functional as F`` is the one public namespace.
from tinydl.ops import conv as _conv  # noqa: E402
from tinydl.ops import elementwise as _elementwise  # noqa: E402
from tinydl.ops import loss as _loss  # noqa: E402
from tinydl.ops.conv import *  # noqa: E402, F401, F403
from tinydl.ops.elementwise import *  # noqa: E402, F401, F403
from tinydl.ops.loss import *  # noqa: E402, F401, F403

__all__ += _conv.__all__ + _elementwise.__all__ + _loss.__all__
