"""Optimizer update kernels. The core has plain SGD; momentum, Adam and AdamW extend this file."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import ELEMENTWISE_BLOCK, AotSpec, elementwise_grid, signature


@triton.jit
def sgd_kernel(p_ptr, g_ptr, n, lr, BLOCK: tl.constexpr):
    # lr is a runtime scalar: a scheduler changing it never triggers a recompile.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    p = tl.load(p_ptr + offs, mask=mask).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask).to(tl.float32)
    tl.store(p_ptr + offs, (p - lr * g).to(p_ptr.dtype.element_ty), mask=mask)


def sgd_step(p: torch.Tensor, g: torch.Tensor, lr: float) -> None:
    """In place: p -= lr * g (p contiguous)."""
    g = g.contiguous()
    if p.numel():
        sgd_kernel[elementwise_grid(p.numel())](p, g, p.numel(), float(lr), BLOCK=ELEMENTWISE_BLOCK)


AOT_SPECS = [
    AotSpec("sgd_kernel[fp32]", sgd_kernel,
            signature(sgd_kernel, {"p_ptr": "*fp32", "g_ptr": "*fp32", "n": "i64", "lr": "fp32"}, {"BLOCK": 1024}),
            {"BLOCK": 1024}),
]
