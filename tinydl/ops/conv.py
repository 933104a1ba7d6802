"""Convolution and pooling: ``F.conv2d``, ``F.max_pool2d``, ``F.avg_pool2d``.

PyTorch names and semantics. Each op validates its arguments on the host (clear errors naming
the argument, the value and what is valid) before any kernel runs. 3-D input (C, H, W) is taken
as one unbatched image, as in PyTorch.
"""

from __future__ import annotations

from tinydl.autograd import Function, Tensor
from tinydl.kernels import conv as _conv
from tinydl.kernels import pool as _pool
from tinydl.kernels.activations import saves_input
from tinydl.ops._validate import as_tensor, check_activation, check_float
from tinydl.ops.elementwise import reshape

__all__ = ["conv2d", "max_pool2d", "avg_pool2d"]


# ------------------------------------------------------------------------------------------------
# Argument checks
# ------------------------------------------------------------------------------------------------

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pair(op: str, name: str, v, lo: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= lo, as a pair."""
    vals = (v, v) if _is_int(v) else tuple(v) if isinstance(v, (tuple, list)) else None
    if vals is None or len(vals) != 2 or not all(_is_int(e) for e in vals):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
    if any(e < lo for e in vals):
        what = "positive" if lo == 1 else "non-negative"
        raise ValueError(f"{op}: {name} must be {what}, got {v!r}")
    return vals


def _batched(op: str, x: Tensor) -> bool:
    """True if x is 4-D (N, C, H, W); False for unbatched 3-D (C, H, W); error otherwise."""
    if x.ndim not in (3, 4):
        raise ValueError(f"{op}: expected 3-D (C, H, W) or 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
    return x.ndim == 4


# ------------------------------------------------------------------------------------------------
# conv2d (+ fused bias and activation)
# ------------------------------------------------------------------------------------------------


class Conv2d(Function):
    """y = act(conv2d(x, W) + b) in one implicit-GEMM kernel; backward fuses act' into the dgrad
    and wgrad kernels (the bias gradient is folded into wgrad).

    Saves: x only if W needs a gradient, W (a reference to the parameter), and for the derivative
    either y or the pre-activation z (whichever ``activations.saves_input`` names); nothing for
    activation "none".
    """

    @staticmethod
    def forward(ctx, x, w, b, stride, padding, dilation, groups, activation="none", alpha=0.01):
        save_z = ctx.requires_grad and saves_input(activation, alpha)
        y, z = _conv.conv2d_fwd(x, w, b, stride, padding, dilation, groups, activation, alpha, save_z=save_z)
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, w,
                              (z if save_z else y) if activation != "none" else None)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.activation, ctx.alpha, ctx.x_shape = activation, alpha, x.shape
        return y

    @staticmethod
    def backward(ctx, grad):
        x, w, s = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        stride, padding, dilation, groups = ctx.conf
        dx, dw, db = _conv.conv2d_bwd(grad, s, x, w, ctx.x_shape, stride, padding, dilation, groups,
                                      ctx.activation, ctx.alpha, need_dx=need_x, need_dw=need_w, need_db=need_b)
        return dx, dw, db, None, None, None, None, None, None


def _conv_padding(padding, kernel, dilation):
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        span = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if any(t % 2 for t in span):
            raise ValueError(f"conv2d: padding='same' needs an even dilation*(kernel-1) per axis (symmetric "
                             f"padding); got kernel {tuple(kernel)}, dilation {tuple(dilation)}")
        return (span[0] // 2, span[1] // 2)
    return _pair("conv2d", "padding", padding, 0)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1,
           activation: str = "none", negative_slope: float = 0.01) -> Tensor:
    """2-D convolution (cross-correlation, as PyTorch) of x (N, C, H, W) with weight (K, C/groups, R, S).

    ``padding`` is an int, a pair, "valid" or "same" (stride 1, symmetric only). ``activation``
    is fused into the kernel's epilogue like ``F.linear``.
    """
    x, weight = as_tensor(x, "input"), as_tensor(weight, "weight")
    bias = None if bias is None else as_tensor(bias, "bias")
    check_activation(activation)
    check_float("conv2d", input=x, weight=weight, bias=bias)
    batched = _batched("conv2d", x)
    if weight.ndim != 4:
        raise ValueError(f"conv2d: weight must be 4-D (out_channels, in_channels/groups, kH, kW), "
                         f"got shape {tuple(weight.shape)}")
    stride = _pair("conv2d", "stride", stride, 1)
    dilation = _pair("conv2d", "dilation", dilation, 1)
    if not _is_int(groups) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise ValueError(f"conv2d: padding={padding!r} is not valid: use an int, a pair, 'valid' or 'same'")
        if padding == "same" and stride != (1, 1):
            raise ValueError(f"conv2d: padding='same' is not supported for strided convolutions (stride={stride})")
    padding = _conv_padding(padding, weight.shape[2:], dilation)
    C, H, W = x.shape[-3:]
    K, CG, R, S = weight.shape
    if K % groups:
        raise ValueError(f"conv2d: out_channels={K} (weight.shape[0]) must be divisible by groups={groups}")
    if C % groups:
        raise ValueError(f"conv2d: in_channels={C} must be divisible by groups={groups}")
    if CG * groups != C:
        raise ValueError(f"conv2d: input has {C} channels, but weight {tuple(weight.shape)} with groups={groups} "
                         f"expects {CG * groups} channels (weight.shape[1] * groups)")
    if bias is not None and tuple(bias.shape) != (K,):
        raise ValueError(f"conv2d: bias must have shape ({K},), got {tuple(bias.shape)}")
    ph, pw = H + 2 * padding[0], W + 2 * padding[1]
    eh, ew = dilation[0] * (R - 1) + 1, dilation[1] * (S - 1) + 1
    if eh > ph or ew > pw:
        raise ValueError(f"conv2d: calculated padded input size per channel: ({ph} x {pw}). Kernel size "
                         f"(dilated): ({eh} x {ew}). Kernel size can't be greater than actual input size")
    alpha = 1.0 if activation == "elu" else float(negative_slope)
    x4 = x if batched else reshape(x, (1, *x.shape))
    y = Conv2d.apply(x4, weight, bias, stride, padding, dilation, groups, activation, alpha)
    return y if batched else reshape(y, tuple(y.shape[1:]))


# ------------------------------------------------------------------------------------------------
# Pooling
# ------------------------------------------------------------------------------------------------


def _pool_args(op: str, x: Tensor, kernel_size, stride, padding, dilation, ceil_mode):
    check_float(op, input=x)
    _batched(op, x)
    kernel = _pair(op, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) \
        else _pair(op, "stride", stride, 1)
    padding = _pair(op, "padding", padding, 0)
    dilation = _pair(op, "dilation", dilation, 1)
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"{op}: ceil_mode must be a bool, got {ceil_mode!r}")
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise ValueError(f"{op}: pad should be at most half of effective kernel size, but got pad={padding}, "
                         f"kernel_size={kernel}")
    H, W = x.shape[-2:]
    out = tuple(_pool.pool_out_size(n, k, s, p, d, ceil_mode)
                for n, k, s, p, d in zip((H, W), kernel, stride, padding, dilation))
    if x.shape[-3] == 0:
        raise ValueError(f"{op}: input of shape {tuple(x.shape)} has 0 channels; only the batch dim may be 0")
    if out[0] < 1 or out[1] < 1:
        raise ValueError(f"{op}: given input size ({x.shape[-3]}x{H}x{W}), calculated output size "
                         f"({x.shape[-3]}x{out[0]}x{out[1]}). Output size is too small")
    return kernel, stride, padding, dilation, out


class MaxPool2d(Function):
    """Max over each window. Saves the argmax of every window (int32, one per output element:
    the flat h*W + w position in its plane); backward gathers dy into each input element from the
    windows that chose it (deterministic, no atomics)."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, dilation, ceil_mode):
        y, idx = _pool.max_pool2d_fwd(x, kernel, stride, padding, dilation, ceil_mode, save_idx=ctx.requires_grad)
        ctx.save_for_backward(idx)
        ctx.conf = (kernel, stride, padding, dilation)
        ctx.x_shape = x.shape
        return y

    @staticmethod
    def backward(ctx, grad):
        (idx,) = ctx.saved_tensors
        return (_pool.max_pool2d_bwd(grad, idx, ctx.x_shape, *ctx.conf), None, None, None, None, None)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False) -> Tensor:
    """Max pooling over (kH, kW) windows of x (N, C, H, W); stride defaults to kernel_size.

    As in PyTorch: padded positions never win, a NaN in a window gives NaN, ties go to the first
    maximum (in row-major window order).
    """
    x = as_tensor(x, "input")
    if return_indices:
        raise ValueError("max_pool2d: return_indices=True is not supported by tinydl")
    kernel, stride, padding, dilation, _ = _pool_args("max_pool2d", x, kernel_size, stride, padding,
                                                      dilation, ceil_mode)
    if x.ndim == 3:
        y = MaxPool2d.apply(reshape(x, (1, *x.shape)), kernel, stride, padding, dilation, ceil_mode)
        return reshape(y, tuple(y.shape[1:]))
    return MaxPool2d.apply(x, kernel, stride, padding, dilation, ceil_mode)


class AvgPool2d(Function):
    """Mean over each window. Saves nothing (backward needs only the shapes and options)."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
        ctx.conf = (kernel, stride, padding, count_include_pad, divisor_override)
        ctx.x_shape = x.shape
        return _pool.avg_pool2d_fwd(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)

    @staticmethod
    def backward(ctx, grad):
        return (_pool.avg_pool2d_bwd(grad, ctx.x_shape, *ctx.conf), None, None, None, None, None, None)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override=None) -> Tensor:
    """Average pooling over (kH, kW) windows of x (N, C, H, W); stride defaults to kernel_size.

    ``count_include_pad`` counts zero padding in the divisor (PyTorch's default); in ceil mode a
    window running past the padded input divides by the part that fits, as in PyTorch.
    """
    x = as_tensor(x, "input")
    if not isinstance(count_include_pad, bool):
        raise TypeError(f"avg_pool2d: count_include_pad must be a bool, got {count_include_pad!r}")
    if divisor_override is not None and (not _is_int(divisor_override) or divisor_override == 0):
        raise ValueError(f"avg_pool2d: divisor_override must be None or a non-zero int, got {divisor_override!r}")
    kernel, stride, padding, _, _ = _pool_args("avg_pool2d", x, kernel_size, stride, padding, 1, ceil_mode)
    args = (kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    if x.ndim == 3:
        y = AvgPool2d.apply(reshape(x, (1, *x.shape)), *args)
        return reshape(y, tuple(y.shape[1:]))
    return AvgPool2d.apply(x, *args)
