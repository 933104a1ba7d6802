"""Elementwise, reduction, dropout and view ops (re-exported by ``tinydl.functional``).

add/sub/mul/div broadcast like PyTorch; their backward sums the gradient over the broadcast dims
with the sum kernel. sum/mean reduce over ``dim=None | int | tuple`` with ``keepdim``. Dropout
draws one seed per call from torch's generator (so ``td.manual_seed`` makes it reproducible) and
regenerates its mask from that seed in backward. The view ops (reshape, flatten, transpose,
permute) are torch views whose backward reshapes/permutes the gradient back.
"""

from __future__ import annotations

import builtins
import math
import numbers

import torch

from tinydl.autograd import Function, Tensor
from tinydl.kernels import elementwise as _k
from tinydl.ops._validate import as_tensor, check_float

__all__ = ["add", "sub", "mul", "div", "neg", "sum", "mean", "dropout", "reshape", "flatten", "transpose",
           "permute"]


# ------------------------------------------------------------------------------------------------
# Broadcasting binary ops
# ------------------------------------------------------------------------------------------------

class Binary(Function):
    """out = a OP b with broadcasting (OP: add with alpha, mul, div).

    Saves: add/sub nothing (only shapes); mul the other operand of each input that needs a
    gradient; div b, and a only if b needs a gradient.
    """

    @staticmethod
    def forward(ctx, a, b, op, alpha=1.0):
        out = _k.binary(a, b, op, alpha)
        ctx.op, ctx.alpha, ctx.a_shape, ctx.b_shape = op, alpha, a.shape, b.shape
        need_a, need_b = ctx.needs_input_grad[:2]
        if op == _k.OP_MUL:
            ctx.save_for_backward(b if need_a else None, a if need_b else None)
        elif op == _k.OP_DIV:
            ctx.save_for_backward(a if need_b else None, b)
        return out

    @staticmethod
    def backward(ctx, grad):
        need_a, need_b = ctx.needs_input_grad[:2]
        ga = gb = None
        if ctx.op == _k.OP_ADD:
            ga = _k.sum_to(grad, ctx.a_shape) if need_a else None
            gb = _k.sum_to(grad, ctx.b_shape, scale=ctx.alpha) if need_b else None
        elif ctx.op == _k.OP_MUL:
            b, a = ctx.saved_tensors
            ga = _k.sum_to(_k.binary(grad, b, _k.OP_MUL), ctx.a_shape) if need_a else None
            gb = _k.sum_to(_k.binary(grad, a, _k.OP_MUL), ctx.b_shape) if need_b else None
        else:
            a, b = ctx.saved_tensors
            ga = _k.sum_to(_k.binary(grad, b, _k.OP_DIV), ctx.a_shape) if need_a else None
            gb = _k.sum_to(_k.binary(grad, a, _k.OP_DIV_BWD_B, c=b), ctx.b_shape) if need_b else None
        return ga, gb, None, None


def _operands(op: str, a, b) -> tuple[Tensor, Tensor]:
    """Tensors or Python numbers; a number becomes a 0-d tensor of the other operand's dtype.

    (``torch.full``, not ``torch.tensor``: on a GPU the latter copies from pageable host memory, a
    sync in eager mode and an error inside a CUDA-graph capture; a fill passes the value as a
    kernel argument.)"""
    a_num = isinstance(a, numbers.Real) and not isinstance(a, bool)
    b_num = isinstance(b, numbers.Real) and not isinstance(b, bool)
    if a_num and b_num:
        raise TypeError(f"{op}: at least one operand must be a Tensor, got two numbers")
    if a_num:
        b = as_tensor(b, "other")
        a = Tensor(torch.full((), float(a), dtype=b.dtype, device=b.device))
    elif b_num:
        a = as_tensor(a, "input")
        b = Tensor(torch.full((), float(b), dtype=a.dtype, device=a.device))
    else:
        a, b = as_tensor(a, "input"), as_tensor(b, "other")
    check_float(op, input=a, other=b)
    try:
        torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(f"{op}: shapes {tuple(a.shape)} and {tuple(b.shape)} do not broadcast") from None
    return a, b


def _check_alpha(op: str, alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"{op}: alpha must be a number, got {type(alpha).__name__}")
    return float(alpha)


def add(input, other, *, alpha: float = 1) -> Tensor:
    """input + alpha * other, broadcasting (a residual connection is ``add(x, f(x))``)."""
    alpha = _check_alpha("add", alpha)
    a, b = _operands("add", input, other)
    return Binary.apply(a, b, _k.OP_ADD, alpha)


def sub(input, other, *, alpha: float = 1) -> Tensor:
    """input - alpha * other, broadcasting."""
    alpha = _check_alpha("sub", alpha)
    a, b = _operands("sub", input, other)
    return Binary.apply(a, b, _k.OP_ADD, -alpha)


def mul(input, other) -> Tensor:
    a, b = _operands("mul", input, other)
    return Binary.apply(a, b, _k.OP_MUL)


def div(input, other, *, rounding_mode: str | None = None) -> Tensor:
    """True division (IEEE: x/0 is inf or nan, as in PyTorch)."""
    if rounding_mode is not None:
        raise ValueError(f"div: rounding_mode={rounding_mode!r} is not supported; tinydl has true division only")
    a, b = _operands("div", input, other)
    return Binary.apply(a, b, _k.OP_DIV)


def neg(input) -> Tensor:
    x = as_tensor(input, "input")
    check_float("neg", input=x)
    return Binary.apply(x, Tensor(torch.full((), -1.0, dtype=x.dtype, device=x.device)), _k.OP_MUL)


# ------------------------------------------------------------------------------------------------
# Reductions
# ------------------------------------------------------------------------------------------------

class Sum(Function):
    """sum (divisor 1) or mean (divisor = reduced count) over ``dims``. Saves nothing: the
    backward broadcasts the gradient back over the input's shape."""

    @staticmethod
    def forward(ctx, x, dims, keepdim, mean):
        count = math.prod(x.shape[d] for d in dims)
        ctx.x_shape, ctx.dims, ctx.keepdim = x.shape, dims, keepdim
        ctx.divisor = float(count) if mean else 1.0
        return _k.sum_dims(x, dims, keepdim, divisor=ctx.divisor)

    @staticmethod
    def backward(ctx, grad):
        kept = list(ctx.x_shape)
        for d in ctx.dims:
            kept[d] = 1
        g = grad.reshape(kept).expand(ctx.x_shape)  # a broadcast view: the kernel reads it in place
        one = torch.ones((), dtype=grad.dtype, device=grad.device)
        if ctx.divisor == 1.0:
            return _k.binary(g, one, _k.OP_MUL), None, None, None
        return _k.binary(g, one * ctx.divisor, _k.OP_DIV), None, None, None


def _dims(op: str, x: Tensor, dim) -> tuple[int, ...]:
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):  # () means all, as in PyTorch
        return tuple(range(x.ndim))
    dims = (dim,) if isinstance(dim, int) and not isinstance(dim, bool) else dim
    if not isinstance(dims, (tuple, list)) or not builtins.all(isinstance(d, int) and not isinstance(d, bool)
                                                                for d in dims):
        raise TypeError(f"{op}: dim must be None, an int or a tuple of ints, got {dim!r}")
    nd = max(x.ndim, 1)
    out = []
    for d in dims:
        if not -nd <= d < nd:
            raise IndexError(f"{op}: dim {d} is out of range for a tensor of {x.ndim} dims "
                             f"(expected to be in range of [{-nd}, {nd - 1}])")
        d = d % nd
        if d in out:
            raise ValueError(f"{op}: dim {d} appears multiple times in the list of dims")
        out.append(d)
    if x.ndim == 0:
        return ()
    return tuple(sorted(out))


def sum(input, dim=None, keepdim: bool = False) -> Tensor:  # noqa: A001 (PyTorch's name)
    x = as_tensor(input, "input")
    check_float("sum", input=x)
    return Sum.apply(x, _dims("sum", x, dim), bool(keepdim), False)


def mean(input, dim=None, keepdim: bool = False) -> Tensor:
    """Mean over ``dim`` (all dims by default); an empty reduction gives nan, as in PyTorch."""
    x = as_tensor(input, "input")
    check_float("mean", input=x)
    return Sum.apply(x, _dims("mean", x, dim), bool(keepdim), True)


# ------------------------------------------------------------------------------------------------
# Dropout
# ------------------------------------------------------------------------------------------------

class Dropout(Function):
    """y = x * mask / (1 - p). Saves nothing: only the seed, from which backward regenerates the
    mask (the same kernel, applied to the gradient)."""

    @staticmethod
    def forward(ctx, x, p, seed):
        ctx.p, ctx.seed = p, seed
        return _k.dropout_fwd(x, p, seed)

    @staticmethod
    def backward(ctx, grad):
        return _k.dropout_bwd(grad, ctx.p, ctx.seed), None, None


def _check_p(p) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p!r}")
    return float(p)


def dropout(input, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p) when ``training``;
    otherwise (or with p = 0) return ``input`` unchanged. The mask comes from one seed drawn from
    torch's default generator per call: ``td.manual_seed`` makes it reproducible."""
    p = _check_p(p)
    if inplace:
        raise ValueError("dropout: inplace=True is not supported by tinydl; use inplace=False")
    x = as_tensor(input, "input")
    check_float("dropout", input=x)
    if not training or p == 0.0:
        return x
    # drawn from the CPU generator (td.manual_seed seeds it) whatever torch's default device is
    seed = int(torch.randint(0, 2**31 - 1, (1,), device="cpu").item())
    return Dropout.apply(x, p, seed)


# ------------------------------------------------------------------------------------------------
# Views
# ------------------------------------------------------------------------------------------------

class Reshape(Function):
    """A reshape (a view when the strides allow, else a copy). Saves nothing but the shape."""

    @staticmethod
    def forward(ctx, x, shape, view=False):
        ctx.x_shape = x.shape
        return x.view(shape) if view else x.reshape(shape)

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.x_shape), None, None


class Permute(Function):
    """A permutation of dims (a view). Saves nothing but the permutation."""

    @staticmethod
    def forward(ctx, x, dims):
        ctx.inverse = tuple(sorted(range(len(dims)), key=lambda i: dims[i]))
        return x.permute(dims)

    @staticmethod
    def backward(ctx, grad):
        return grad.permute(ctx.inverse), None


def _shape_arg(shape) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
        shape = shape[0]
    if not builtins.all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise TypeError(f"shape must be ints, got {tuple(shape)!r}")
    return tuple(shape)


def _reshape(x: Tensor, shape: tuple[int, ...], view: bool) -> Tensor:
    try:  # the shape check alone, on a storage-less tensor
        torch.empty(x.shape, device="meta").reshape(shape)
    except RuntimeError as e:
        raise ValueError(f"{'view' if view else 'reshape'}: {e}") from None
    if view and not _viewable(x.data, shape):
        raise RuntimeError(f"view size is not compatible with input tensor's size and stride; use .reshape(...) "
                           f"(input shape {tuple(x.shape)}, strides {x.data.stride()}, asked for {tuple(shape)})")
    return Reshape.apply(x, shape, view)


def _viewable(t: torch.Tensor, shape) -> bool:
    try:
        t.view(shape)
        return True
    except RuntimeError:
        return False


def reshape(input, shape) -> Tensor:
    x = as_tensor(input, "input")
    return _reshape(x, _shape_arg((shape,)), view=False)


def view(input, shape) -> Tensor:
    """Like reshape, but only as a view (an error where the strides don't allow one, as in PyTorch)."""
    x = as_tensor(input, "input")
    return _reshape(x, _shape_arg((shape,)), view=True)


def flatten(input, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    x = as_tensor(input, "input")
    nd = max(x.ndim, 1)
    s, e = start_dim, end_dim
    for name, d in (("start_dim", s), ("end_dim", e)):
        if not isinstance(d, int) or not -nd <= d < nd:
            raise IndexError(f"flatten: {name}={d!r} is out of range for a tensor of {x.ndim} dims")
    if x.ndim == 0:
        return _reshape(x, (1,), view=False)
    s, e = s % nd, e % nd
    if s > e:
        raise ValueError(f"flatten: start_dim ({start_dim}) cannot come after end_dim ({end_dim})")
    shape = tuple(x.shape[:s]) + (math.prod(x.shape[s:e + 1]),) + tuple(x.shape[e + 1:])
    return _reshape(x, shape, view=False)


def permute(input, dims) -> Tensor:
    x = as_tensor(input, "input")
    dims = tuple(dims)
    nd = x.ndim
    if len(dims) != nd or not builtins.all(isinstance(d, int) and -max(nd, 1) <= d < max(nd, 1) for d in dims):
        raise ValueError(f"permute: dims {dims} must be a permutation of the {nd} dims of a tensor of shape "
                         f"{tuple(x.shape)}")
    dims = tuple(d % nd for d in dims) if nd else ()
    if len(set(dims)) != nd:
        raise ValueError(f"permute: dims {dims} repeat a dim")
    return Permute.apply(x, dims)


def transpose(input, dim0: int, dim1: int) -> Tensor:
    x = as_tensor(input, "input")
    nd = max(x.ndim, 1)
    for d in (dim0, dim1):
        if not isinstance(d, int) or not -nd <= d < nd:
            raise IndexError(f"transpose: dim {d!r} is out of range for a tensor of {x.ndim} dims")
    if x.ndim == 0:
        return x
    dims = list(range(x.ndim))
    a, b = dim0 % nd, dim1 % nd
    dims[a], dims[b] = dims[b], dims[a]
    return Permute.apply(x, tuple(dims))
