"""Loss ops and softmax (see tinydl/ops/__init__.py): ``F.cross_entropy``, ``F.softmax``,
``F.log_softmax``, ``F.mse_loss``, ``F.l1_loss``, ``F.binary_cross_entropy_with_logits``.

PyTorch's names, signatures and semantics; arguments are validated on the host before any kernel
runs (targets of ``cross_entropy`` included: one small kernel finds an out-of-range label and the
host raises). Per-class ``weight`` / ``pos_weight`` are not implemented and say so.
"""

from __future__ import annotations

import math

import torch

from tinydl.autograd import Function, Tensor
from tinydl.kernels import cross_entropy as _ce
from tinydl.kernels import losses as _losses
from tinydl.ops._validate import as_tensor, check_float

__all__ = ["cross_entropy", "softmax", "log_softmax", "mse_loss", "l1_loss", "binary_cross_entropy_with_logits"]

_REDUCTIONS = ("mean", "sum", "none")


def _reduction(op: str, reduction, size_average=None, reduce=None) -> str:
    """The reduction string, with PyTorch's legacy ``size_average``/``reduce`` flags folded in."""
    if size_average is not None or reduce is not None:
        size_average = True if size_average is None else size_average
        reduce = True if reduce is None else reduce
        reduction = ("mean" if size_average else "sum") if reduce else "none"
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction={reduction!r} is not valid: use one of {', '.join(_REDUCTIONS)}")
    return reduction


def _not_implemented(op: str, **args) -> None:
    for name, value in args.items():
        if value is not None:
            raise NotImplementedError(f"{op}: {name}= is not supported by tinydl (pass {name}=None)")


# ------------------------------------------------------------------------------------------------
# Cross-entropy
# ------------------------------------------------------------------------------------------------


class CrossEntropy(Function):
    """Softmax + negative log-likelihood in one kernel that also writes the logits' gradient.

    Saves: the gradient of the loss w.r.t. the logits for an upstream gradient of 1 (computed in
    the forward pass, (N, C) in the logits' dtype, only when the logits need a gradient); backward
    scales it by the incoming gradient into a new tensor. Nothing else: no logits, no softmax.
    """

    @staticmethod
    def forward(ctx, logits, target, reduction="mean", ignore_index=-100, label_smoothing=0.0, checked=None):
        unbatched = logits.ndim == 1
        x2 = logits.reshape(1, -1) if unbatched else logits
        t1 = target.reshape(1) if unbatched else target
        loss, dx = _ce.cross_entropy_fwd(x2, t1, checked, reduction, ignore_index, label_smoothing,
                                         compute_grad=ctx.needs_input_grad[0])
        ctx.save_for_backward(dx.reshape(logits.shape) if dx is not None else None)
        ctx.unbatched = unbatched
        return loss.reshape(()) if unbatched else loss

    @staticmethod
    def backward(ctx, grad):
        (dx,) = ctx.saved_tensors
        if ctx.unbatched:
            return _ce.cross_entropy_bwd(dx.reshape(1, -1), grad).reshape(dx.shape), None, None, None, None, None
        return _ce.cross_entropy_bwd(dx, grad), None, None, None, None, None


def cross_entropy(input, target, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of logits ``input`` (N, C) (or (C,)) and class indices ``target`` (N,) (or ()).

    PyTorch semantics: "mean" averages over the rows whose target is not ``ignore_index`` (NaN if
    there are none), "sum" adds them (0 if none), "none" returns one loss per row (0 where ignored);
    ``label_smoothing`` mixes the one-hot target with the uniform distribution.
    """
    op = "cross_entropy"
    x = as_tensor(input, "input")
    _not_implemented(op, weight=weight)
    reduction = _reduction(op, reduction, size_average, reduce)
    check_float(op, input=x)
    if isinstance(target, Tensor):
        target = target.data
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{op}: target must be a tensor of class indices, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"{op}: target has dtype {target.dtype}; tinydl supports class-index targets only: "
                        "pass an integer tensor (int64) of labels in [0, C)")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"{op}: ignore_index must be an int, got {ignore_index!r}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
            or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing={label_smoothing!r} is not valid: it must be a float in [0.0, 1.0]")
    if x.ndim not in (1, 2):
        raise ValueError(f"{op}: input must be (N, C) logits (or (C,) for one sample), got shape {tuple(x.shape)}")
    want = (x.shape[0],) if x.ndim == 2 else ()
    if tuple(target.shape) != want:
        raise ValueError(f"{op}: target has shape {tuple(target.shape)} but input {tuple(x.shape)} needs "
                         f"target shape {want} (one class index per row)")
    if target.device != x.device:
        raise ValueError(f"{op}: target is on {target.device} but input is on {x.device}")
    C = x.shape[-1]
    bad, checked = _ce.check_targets(target.reshape(-1), C, ignore_index)
    if bad is not None:
        label = target.reshape(-1)[bad].item()
        where = f"target[{bad}]" if x.ndim == 2 else "target"
        raise ValueError(f"{op}: {where} = {label} is out of range: class labels must be in [0, {C - 1}] "
                         f"for C={C} classes (or equal ignore_index={ignore_index})" if C else
                         f"{op}: {where} = {label} is out of range: input has C=0 classes, so every "
                         f"target must equal ignore_index={ignore_index}")
    return CrossEntropy.apply(x, target, reduction, ignore_index, float(label_smoothing), checked)


# ------------------------------------------------------------------------------------------------
# Softmax / log-softmax
# ------------------------------------------------------------------------------------------------


class Softmax(Function):
    """softmax(x) or log_softmax(x) along ``dim`` (moved last: the kernels work on rows).

    Saves: the output (as the 2-D (rows, C) tensor the kernel wrote); both gradients are exact
    from it (softmax: y * (dy - sum(dy * y)); log_softmax: dy - exp(y) * sum(dy)).
    """

    @staticmethod
    def forward(ctx, x, dim=-1, log=False):
        xm = x.reshape(1) if x.ndim == 0 else x.movedim(dim, -1)
        C = xm.shape[-1]
        y2 = _losses.softmax_fwd(xm.reshape(math.prod(xm.shape[:-1]), C), log)  # not -1: C may be 0
        ctx.save_for_backward(y2)
        ctx.dim, ctx.log, ctx.moved_shape, ctx.x_shape = dim, log, xm.shape, x.shape
        y = y2.reshape(xm.shape)
        return y.reshape(()) if x.ndim == 0 else y.movedim(-1, dim)

    @staticmethod
    def backward(ctx, grad):
        (y2,) = ctx.saved_tensors
        gm = grad.reshape(1) if grad.ndim == 0 else grad.movedim(ctx.dim, -1)
        dx = _losses.softmax_bwd(gm.reshape(y2.shape), y2, ctx.log).reshape(ctx.moved_shape)
        return (dx.reshape(()) if len(ctx.x_shape) == 0 else dx.movedim(-1, ctx.dim)), None, None


def _softmax(op: str, input, dim, dtype, log: bool) -> Tensor:
    x = as_tensor(input, "input")
    check_float(op, input=x)
    if dtype is not None and dtype != x.dtype:
        raise NotImplementedError(f"{op}: dtype={dtype} is not supported: cast the input first")
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{op}: dim must be an int, got {dim!r}")
    nd = max(x.ndim, 1)
    if not -nd <= dim < nd:
        raise ValueError(f"{op}: dim={dim} is out of range for an input of shape {tuple(x.shape)} "
                         f"(valid: {-nd} to {nd - 1})")
    return Softmax.apply(x, dim % nd, log)


def softmax(input, dim: int = -1, dtype=None) -> Tensor:
    """exp(x) / sum(exp(x)) along ``dim`` (default: the last), computed in fp32."""
    return _softmax("softmax", input, dim, dtype, log=False)


def log_softmax(input, dim: int = -1, dtype=None) -> Tensor:
    """x - logsumexp(x) along ``dim`` (default: the last), computed in fp32."""
    return _softmax("log_softmax", input, dim, dtype, log=True)


# ------------------------------------------------------------------------------------------------
# Elementwise losses
# ------------------------------------------------------------------------------------------------


class ElementwiseLoss(Function):
    """mse_loss / l1_loss / binary_cross_entropy_with_logits of same-shape input and target.

    Saves: input and target (references to tensors the caller holds anyway); backward recomputes
    the derivative from them in one kernel that writes both gradients.
    """

    @staticmethod
    def forward(ctx, x, y, loss="mse_loss", reduction="mean"):
        ctx.save_for_backward(x, y)
        ctx.loss, ctx.reduction = loss, reduction
        return _losses.elementwise_loss_fwd(x, y, loss, reduction)

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        need_x, need_y = ctx.needs_input_grad[:2]
        dx, dy = _losses.elementwise_loss_bwd(grad, x, y, ctx.loss, ctx.reduction, need_x, need_y)
        return (dx.reshape(x.shape) if dx is not None else None,
                dy.reshape(y.shape) if dy is not None else None, None, None)


def _elementwise_loss(op: str, input, target, reduction: str) -> Tensor:
    x, y = as_tensor(input, "input"), as_tensor(target, "target")
    check_float(op, input=x, target=y)
    if x.shape != y.shape:
        raise ValueError(f"{op}: target shape {tuple(y.shape)} must equal input shape {tuple(x.shape)} "
                         "(tinydl does not broadcast losses)")
    return ElementwiseLoss.apply(x, y, op, reduction)


def mse_loss(input, target, size_average=None, reduce=None, reduction: str = "mean") -> Tensor:
    """(input - target)^2, reduced by mean (over all elements), sum or none."""
    return _elementwise_loss("mse_loss", input, target, _reduction("mse_loss", reduction, size_average, reduce))


def l1_loss(input, target, size_average=None, reduce=None, reduction: str = "mean") -> Tensor:
    """|input - target|, reduced by mean, sum or none (gradient sign(input - target), 0 at a tie)."""
    return _elementwise_loss("l1_loss", input, target, _reduction("l1_loss", reduction, size_average, reduce))


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction: str = "mean", pos_weight=None) -> Tensor:
    """-[y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))], computed stably as
    max(x, 0) - x*y + log1p(exp(-|x|)); reduced by mean, sum or none."""
    op = "binary_cross_entropy_with_logits"
    _not_implemented(op, weight=weight, pos_weight=pos_weight)
    return _elementwise_loss(op, input, target, _reduction(op, reduction, size_average, reduce))
