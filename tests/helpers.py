"""``check_op``: the one helper every op test uses (after tinygrad's ``helper_test_op``).

It runs the same computation through tinydl and through PyTorch (in float64 by default, so the
reference's own rounding is out of the picture) and compares the forward result and the gradient
of every input that requires one, under one random upstream gradient.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as TF

import tinydl as td

# tinydl activation name -> the PyTorch reference (leaky_relu at PyTorch's default slope)
TORCH_ACT = {
    "none": lambda z: z,
    "relu": TF.relu,
    "leaky_relu": lambda z: TF.leaky_relu(z, 0.01),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "elu": TF.elu,
    "gelu": TF.gelu,
    "silu": TF.silu,
}

# Tolerances per dtype: (rtol, atol as a fraction of the reference's largest magnitude).
TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1.6e-2)}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype=torch.float32, what="", rtol=None, atol=None,
                 tol: tuple[float, float] | None = None):
    """``tol``: (rtol, atol as a fraction of the reference's largest magnitude) instead of ``TOL[dtype]``
    (e.g. TF32, whose rounding is relative to the magnitudes summed); ``rtol``/``atol`` override both."""
    r, a = tol or TOL[dtype]
    rtol = r if rtol is None else rtol
    scale = expected.detach().abs().nan_to_num(0, 0, 0).max().item() if expected.numel() else 0.0
    atol = a * max(scale, 1e-3) if atol is None else atol
    torch.testing.assert_close(actual.detach().to(expected.dtype).cpu(), expected.detach().cpu(),
                               rtol=rtol, atol=atol, equal_nan=True, msg=lambda m: f"{what}: {m}")


def check_op(td_fn: Callable, torch_fn: Callable, inputs: Sequence, requires_grad: Sequence[bool] | None = None,
             ref_dtype=torch.float64, grad_out: torch.Tensor | None = None, rtol=None, atol=None,
             tol: tuple[float, float] | None = None):
    """Compare ``td_fn(*tinydl inputs)`` with ``torch_fn(*reference inputs)``, forward and backward.

    ``inputs`` are torch tensors (any strides; tinydl gets them as they are, non-contiguous
    included) or other values passed to both sides unchanged. ``requires_grad[i]`` says which
    float inputs need a gradient (default: all float inputs). Returns (tinydl out, reference out).
    """
    if requires_grad is None:
        requires_grad = [isinstance(x, torch.Tensor) and x.is_floating_point() for x in inputs]
    td_in, ref_in = [], []
    for x, rg in zip(inputs, requires_grad):
        if isinstance(x, torch.Tensor):
            td_in.append(td.Tensor(x, requires_grad=rg))
            ref = x.detach().to(ref_dtype) if x.is_floating_point() else x.detach()
            ref_in.append(ref.requires_grad_(rg))
        else:
            td_in.append(x)
            ref_in.append(x)
    dtype = next((x.dtype for x in inputs if isinstance(x, torch.Tensor) and x.is_floating_point()), torch.float32)
    out = td_fn(*td_in)
    ref = torch_fn(*ref_in)
    assert out.shape == ref.shape, f"forward shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    assert out.dtype == dtype, f"forward dtype {out.dtype} != input dtype {dtype}"
    assert_close(out.data, ref, dtype, "forward", rtol, atol, tol)
    if any(requires_grad):
        g = grad_out if grad_out is not None else torch.randn(ref.shape, dtype=torch.float32)
        out.backward(g.to(out.dtype).to(out.device))
        ref.backward(g.to(ref.dtype))
        for i, (t, r, rg) in enumerate(zip(td_in, ref_in, requires_grad)):
            if rg:
                assert t.grad is not None, f"input {i}: no gradient"
                assert t.grad.shape == t.shape, f"input {i}: gradient shape {tuple(t.grad.shape)}"
                assert_close(t.grad, r.grad, dtype, f"grad of input {i}", rtol, atol, tol)
    return out, ref


def noncontiguous(t: torch.Tensor) -> torch.Tensor:
    """The same values as ``t`` in a non-contiguous layout (every other element of a wider tensor)."""
    wide = torch.empty(*t.shape[:-1], t.shape[-1] * 2, dtype=t.dtype, device=t.device)
    wide[..., ::2] = t
    out = wide[..., ::2]
    assert not out.is_contiguous() or t.shape[-1] <= 1
    return out
