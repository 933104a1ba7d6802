"""``tinydl.nn.utils``: gradient clipping as kernels."""

from __future__ import annotations

import math
from typing import Iterable

import torch

from tinydl.autograd import Tensor
from tinydl.kernels import optim as _k

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, foreach=None) -> torch.Tensor:
    """Scale the gradients in place so their total ``norm_type``-norm is at most ``max_norm``.

    As in PyTorch: the total norm is taken over all gradients as if concatenated, every gradient
    is multiplied by min(1, max_norm / (total + 1e-6)), and the total norm (a 0-d fp32 tensor on
    the gradients' device) is returned. Parameters without a gradient are ignored. A NaN/inf
    total norm raises RuntimeError with ``error_if_nonfinite=True`` (before any gradient is
    changed) and otherwise propagates into the gradients, like PyTorch.

    Kernels: a partial reduction per block of each gradient, one program combining them into the
    norm and the clip coefficient (kept on the device: no host sync), and an in-place scale.
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    params = list(parameters)
    for p in params:
        if not isinstance(p, Tensor):
            raise TypeError(f"clip_grad_norm_: parameters must be tinydl Tensors, got {type(p).__name__}")
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or math.isnan(max_norm):
        raise ValueError(f"clip_grad_norm_: max_norm must be a number, got {max_norm!r}")
    norm_type = float(norm_type)
    if not (norm_type > 0 or norm_type == math.inf):
        raise ValueError(f"clip_grad_norm_: norm_type={norm_type} is not supported; use a positive number or inf")
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    devices = {g.device for g in grads}
    if len(devices) > 1:
        raise ValueError(f"clip_grad_norm_: gradients are on several devices {sorted(map(str, devices))}")
    for p in params:
        if p.grad is not None and not p.grad.is_contiguous():
            p.grad = p.grad.contiguous()
    grads = [p.grad for p in params if p.grad is not None]
    norm_coef = _k.grad_norm(grads, norm_type, float(max_norm))
    total = norm_coef[0]
    if error_if_nonfinite and not math.isfinite(total.item()):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, "
                           "so it cannot be clipped. To disable this error and scale the gradients by the "
                           "non-finite norm anyway, set `error_if_nonfinite=False`")
    for g in grads:
        _k.grad_scale_(g, norm_coef)
    return total
