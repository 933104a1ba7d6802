"""Elementwise kernels. The core needs only ``add`` (gradient accumulation in autograd)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import ELEMENTWISE_BLOCK, AotSpec, elementwise_grid, signature
from .activations import act_bwd, act_fwd, activation_code


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    # int64 offsets: a flat gradient can pass 2**31 elements (8 GiB of fp32).
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n  # the last block runs past the end
    x = tl.load(x_ptr + offs, mask=mask)
    y = tl.load(y_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, x + y, mask=mask)


def add(x: torch.Tensor, y: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``out = x + y`` for same-shape tensors (out may be x: in-place accumulation)."""
    if x.shape != y.shape:
        raise ValueError(f"add: shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    x = x.contiguous()
    y = y.to(x.dtype).contiguous()
    if out is None:
        out = torch.empty_like(x)
    elif not out.is_contiguous() or out.shape != x.shape:
        raise ValueError("add: out must be a contiguous tensor of the operands' shape")
    n = x.numel()
    if n:
        add_kernel[elementwise_grid(n)](x, y, out, n, BLOCK=ELEMENTWISE_BLOCK)
    return out


AOT_SPECS = [
    AotSpec(f"add_kernel[{dt}]", add_kernel,
            signature(add_kernel, {"x_ptr": f"*{dt}", "y_ptr": f"*{dt}", "out_ptr": f"*{dt}", "n": "i64"},
                      {"BLOCK": 1024}),
            {"BLOCK": 1024})
    for dt in ("fp32", "bf16")
]


# ---------------------------------------------------------------------------------------------
# Standalone activations: y = act(x) and dx = dy * act'(s), s = y or x (activations.saves_input)
# ---------------------------------------------------------------------------------------------

@triton.jit
def act_fwd_kernel(x_ptr, y_ptr, n, alpha, ACT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask).to(tl.float32)
    tl.store(y_ptr + offs, act_fwd(x, ACT, alpha).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def act_bwd_kernel(dy_ptr, s_ptr, dx_ptr, n, alpha, ACT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dy = tl.load(dy_ptr + offs, mask=mask).to(tl.float32)
    s = tl.load(s_ptr + offs, mask=mask).to(tl.float32)
    tl.store(dx_ptr + offs, (dy * act_bwd(s, ACT, alpha)).to(dx_ptr.dtype.element_ty), mask=mask)


def activation_fwd(x: torch.Tensor, activation: str, alpha: float = 0.01) -> torch.Tensor:
    x = x.contiguous()
    y = torch.empty_like(x)
    if x.numel():
        act_fwd_kernel[elementwise_grid(x.numel())](x, y, x.numel(), float(alpha),
                                                    ACT=activation_code(activation), BLOCK=ELEMENTWISE_BLOCK)
    return y


def activation_bwd(dy: torch.Tensor, saved: torch.Tensor, activation: str, alpha: float = 0.01) -> torch.Tensor:
    dy, saved = dy.contiguous(), saved.contiguous()
    dx = torch.empty_like(dy)
    if dy.numel():
        act_bwd_kernel[elementwise_grid(dy.numel())](dy, saved, dx, dy.numel(), float(alpha),
                                                     ACT=activation_code(activation), BLOCK=ELEMENTWISE_BLOCK)
    return dx


def _act_specs():
    specs = []
    for act in range(8):
        for dt in ("fp32", "bf16"):
            archs = (90, 80) if dt == "fp32" else (90,)
            p = f"*{dt}"
            c = {"ACT": act, "BLOCK": 1024}
            specs.append(AotSpec(f"act_fwd_kernel[{dt}/act{act}]", act_fwd_kernel,
                                 signature(act_fwd_kernel, {"x_ptr": p, "y_ptr": p, "n": "i64", "alpha": "fp32"}, c), c,
                                 archs=archs))
            specs.append(AotSpec(f"act_bwd_kernel[{dt}/act{act}]", act_bwd_kernel,
                                 signature(act_bwd_kernel, {"dy_ptr": p, "s_ptr": p, "dx_ptr": p, "n": "i64",
                                                            "alpha": "fp32"}, c), c, archs=archs))
    return specs


AOT_SPECS += _act_specs()
