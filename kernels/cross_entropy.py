"""Fused softmax-cross-entropy: one pass computes each row's loss and the gradient of its logits.

Shapes: logits (N, C) (any strides), target (N,) integer class indices.

Per row, with p = softmax(x), t the target, eps = label_smoothing:

    loss = (1 - eps) * (lse - x_t) + eps * (lse - mean_j x_j)       (0 where t == ignore_index)
    dloss/dx_j = p_j - eps / C - (1 - eps) * [j == t]

- forward   ``cross_entropy_fwd_kernel``: pass 1 walks the classes in BLOCK_C chunks keeping the
            running max m and s_other = sum_{j != t} e^(x_j - m) (the target's term kept apart);
            pass 2 writes the gradient (already divided by the number of counted rows for "mean",
            folded in fp32 before rounding to the logits' dtype). Per-row losses (fp32 math) go out
            as they are ("none") or as one fp32 partial sum per program, added up in a fixed order
            by ``losses.loss_reduce_kernel`` (deterministic, no atomics).
- backward  ``cross_entropy_bwd_kernel`` only scales the saved gradient by the incoming one
            (a scalar for mean/sum, one value per row for "none") into a new tensor: the saved
            gradient stays intact, so ``backward(retain_graph=True)`` can run again.
- targets   ``cross_entropy_check_kernel`` (one program) finds the first out-of-range label, which
            the host reads to raise a ValueError before the main launch, and counts the rows that
            are not ignored into a device int that the forward and reduction kernels divide by for
            "mean". Only that one int crosses to the host, and not even that while a CUDA graph is
            being captured (the check is skipped there; an out-of-range row then comes out NaN,
            never an out-of-bounds read).

Precision where it matters: for a confident row (p_t -> 1) ``p_t - 1`` is computed as
``-s_other / s``, never as a difference of two numbers near 1, and the loss ``lse - x_t`` as
``log1p(s_other / e_t)`` when the target is (near) the max, so tiny losses and gradients keep
their relative precision. ``-inf`` logits, all ``-inf`` rows and NaN behave as in PyTorch (a NaN or
an all ``-inf`` row makes that row's loss and gradient NaN, nothing else).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import ELEMENTWISE_BLOCK, INTERPRET, AotSpec, cdiv, elementwise_grid, signature
from .losses import ROW_GPU_CONFIGS, _log1p, reduce_partials, row_config


@triton.jit
def cross_entropy_check_kernel(t_ptr, out_ptr, N, C, stride_t, ignore_index, BLOCK: tl.constexpr):
    # One program walks all N targets (a few microseconds even for 1M rows) and writes
    # out[0] = the first row whose non-ignored label is outside [0, C) (N if none) and
    # out[1] = the number of rows that are not ignored (the "mean" divisor, read on the device).
    first = tl.full((BLOCK,), N, tl.int64)
    count = tl.zeros((BLOCK,), dtype=tl.int64)
    for start in range(0, N, BLOCK):
        offs = start + tl.arange(0, BLOCK).to(tl.int64)
        mask = offs < N
        t = tl.load(t_ptr + offs * stride_t, mask=mask, other=0).to(tl.int64)
        counted = mask & (t != ignore_index)
        bad = counted & ((t < 0) | (t >= C))
        first = tl.minimum(first, tl.where(bad, offs, N))
        count += counted.to(tl.int64)
    tl.store(out_ptr, tl.min(first, axis=0))
    tl.store(out_ptr + 1, tl.sum(count, axis=0))


@triton.jit
def cross_entropy_fwd_kernel(
    x_ptr, t_ptr, loss_ptr, partial_ptr, dx_ptr,
    N, C, stride_xn, stride_xc, stride_t, stride_dxn, stride_dxc,
    count_ptr, ignore_index, smoothing,
    MEAN: tl.constexpr, STORE_LOSS: tl.constexpr, COMPUTE_GRAD: tl.constexpr, SMOOTH: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * ROWS + tl.arange(0, ROWS)
    row_mask = rows < N
    rows64 = rows.to(tl.int64)  # N * C passes 2**31 for big vocabularies
    t = tl.load(t_ptr + rows64 * stride_t, mask=row_mask, other=0).to(tl.int64)
    counted = row_mask & (t != ignore_index)
    # the host refuses out-of-range labels before launching; inside a captured CUDA graph it
    # cannot look, so such a row never reads out of bounds and comes out NaN instead
    in_range = (t >= 0) & (t < C)
    valid = counted & in_range
    # an ignored row keeps no class apart (its ignore_index may be a real class index): its p is
    # then the plain softmax, used only to make its zero gradient NaN where PyTorch's is
    t = tl.where(valid, t, -1)
    x_t = tl.load(x_ptr + rows64 * stride_xn + t * stride_xc, mask=valid, other=0.0).to(tl.float32)

    # pass 1: running max m, s_other = sum_{j != t} e^(x_j - m), and sum_j x_j for smoothing
    m = tl.full((ROWS,), float("-inf"), tl.float32)
    s_other = tl.zeros((ROWS,), dtype=tl.float32)
    sum_x = tl.zeros((ROWS,), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask = row_mask[:, None] & (cols < C)[None, :]
        x = tl.load(x_ptr + rows64[:, None] * stride_xn + cols[None, :] * stride_xc, mask=mask,
                    other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=1))
        # shift 0 while the row is all -inf so far: exp(-inf - -inf) would be NaN
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        e = tl.where(cols[None, :] == t[:, None], 0.0, tl.exp(x - shift[:, None]))
        s_other = s_other * tl.exp(m - shift) + tl.sum(e, axis=1)
        if SMOOTH:
            sum_x += tl.sum(tl.where(mask, x, 0.0), axis=1)
        m = m_new

    shift = tl.where(m == float("-inf"), 0.0, m)
    e_t = tl.where(valid, tl.exp(x_t - shift), 0.0)
    s = s_other + e_t
    # lse - x_t. When the target is within ln 2 of the max, e_t > 1/2 and lse - x_t equals
    # log1p(s_other / e_t) exactly, which keeps a tiny loss; otherwise the loss is >= ln 2 - ish
    # and (shift - x_t) + log(s) has no cancellation. All -inf row: e_t = 0, -inf - -inf = NaN.
    nll = tl.where(e_t > 0.5, _log1p(s_other / tl.where(e_t > 0.5, e_t, 1.0)), (shift - x_t) + tl.log(s))
    if SMOOTH:
        loss = (1.0 - smoothing) * nll + smoothing * ((shift - sum_x / C) + tl.log(s))
    else:
        loss = nll
    loss = tl.where(valid, loss, tl.where(counted, float("nan"), 0.0))
    if STORE_LOSS:
        tl.store(loss_ptr + rows64, loss.to(loss_ptr.dtype.element_ty), mask=row_mask)
    else:
        tl.store(partial_ptr + pid, tl.sum(loss, axis=0))  # fp32, whatever the logits' dtype

    if COMPUTE_GRAD:
        # pass 2: dx_j = (p_j - eps/C - (1-eps)[j == t]) / divisor, with p_t - 1 = -s_other / s;
        # the divisor is the number of counted rows for "mean" (0 only when no row uses it)
        if MEAN:
            divisor = tl.load(count_ptr).to(tl.float32)
        else:
            divisor = 1.0
        inv_s = 1.0 / s
        g_t = -s_other * inv_s
        if SMOOTH:
            g_t = g_t + (smoothing - smoothing / C)
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            mask = row_mask[:, None] & (cols < C)[None, :]
            x = tl.load(x_ptr + rows64[:, None] * stride_xn + cols[None, :] * stride_xc, mask=mask,
                        other=float("-inf")).to(tl.float32)
            p = tl.exp(x - shift[:, None]) * inv_s[:, None]
            g = p
            if SMOOTH:
                g = g - smoothing / C
            g = tl.where(cols[None, :] == t[:, None], g_t[:, None], g) / divisor
            # an ignored row gets 0, except that NaN logits still make it NaN (p * 0), as PyTorch's
            # log_softmax backward does
            g = tl.where(valid[:, None], g, p * 0.0 + tl.where(counted, float("nan"), 0.0)[:, None])
            tl.store(dx_ptr + rows64[:, None] * stride_dxn + cols[None, :] * stride_dxc,
                     g.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def cross_entropy_bwd_kernel(gsaved_ptr, g_ptr, dx_ptr, n, C, stride_g,
                             G_SCALAR: tl.constexpr, BLOCK: tl.constexpr):
    # dx = saved gradient * upstream gradient, over the contiguous (N, C) saved gradient
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    d = tl.load(gsaved_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if G_SCALAR:
        g = tl.load(g_ptr).to(tl.float32)
    else:
        g = tl.load(g_ptr + (offs // C) * stride_g, mask=mask, other=0.0).to(tl.float32)
    tl.store(dx_ptr + offs, (d * g).to(dx_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------

#: targets per loop step of the one-program check kernel
CHECK_BLOCK = 1 << 16 if INTERPRET else 1024


def _capturing(t: torch.Tensor) -> bool:
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


def check_targets(target: torch.Tensor, C: int, ignore_index: int):
    """(first out-of-range row or None, a 2-element int64 device tensor whose [1] is the number
    of rows whose target is not ignore_index).

    Reads one int back to the host (a sync), except while a CUDA graph is being captured: then
    nothing is checked here and an out-of-range row's loss comes out NaN instead.
    """
    N = target.shape[0]
    out = torch.empty(2, device=target.device, dtype=torch.int64)
    cross_entropy_check_kernel[(1,)](target, out, N, C, target.stride(0) if N else 1, int(ignore_index),
                                     BLOCK=CHECK_BLOCK)
    if _capturing(target):
        return None, out
    first = out[0].item()
    return (first if first < N else None), out


def cross_entropy_fwd(logits: torch.Tensor, target: torch.Tensor, checked: torch.Tensor, reduction: str = "mean",
                      ignore_index: int = -100, label_smoothing: float = 0.0, compute_grad: bool = True):
    """Loss (0-d for mean/sum, (N,) for none, logits' dtype) and the gradient of the loss w.r.t.
    the logits for an upstream gradient of 1 (a new contiguous (N, C) tensor, or None).

    ``checked`` is the device tensor from ``check_targets`` (its [1] is the "mean" divisor), which
    must have passed: labels are not re-checked here (an out-of-range one gives a NaN row).
    """
    N, C = logits.shape
    dx = torch.empty((N, C), device=logits.device, dtype=logits.dtype) if compute_grad else None
    store_loss = reduction == "none"
    rows, block_c, warps = row_config(N, C)
    grid = (cdiv(N, rows),)
    if store_loss:
        loss = torch.empty((N,), device=logits.device, dtype=logits.dtype)
        partials = loss
    else:
        partials = torch.empty(grid, device=logits.device, dtype=torch.float32)
        loss = None
    count = checked[1:]
    if N and C:
        cross_entropy_fwd_kernel[grid](
            logits, target, partials, partials, dx if dx is not None else partials,
            N, C, logits.stride(0), logits.stride(1), target.stride(0),
            dx.stride(0) if dx is not None else 0, dx.stride(1) if dx is not None else 0,
            count, int(ignore_index), float(label_smoothing),
            MEAN=reduction == "mean", STORE_LOSS=store_loss, COMPUTE_GRAD=dx is not None,
            SMOOTH=label_smoothing != 0.0, ROWS=rows, BLOCK_C=block_c, num_warps=warps)
    elif N:  # C == 0: the target check let through only ignored rows, which count 0
        partials = torch.zeros_like(partials)
        loss = partials if store_loss else None
    if not store_loss:
        loss = reduce_partials(partials, count if reduction == "mean" else 1.0, logits.dtype)
    return loss, dx


def cross_entropy_bwd(saved_grad: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """saved_grad (N, C) times the upstream gradient: 0-d (mean/sum) or (N,) (none)."""
    N, C = saved_grad.shape
    dx = torch.empty_like(saved_grad)
    n = N * C
    if n:
        cross_entropy_bwd_kernel[elementwise_grid(n)](
            saved_grad, grad, dx, n, C, grad.stride(0) if grad.ndim else 0,
            G_SCALAR=grad.ndim == 0, BLOCK=ELEMENTWISE_BLOCK)
    return dx


# ----------------------------------------------------------------------------------------------
# Configurations for the ahead-of-time GPU compile check
# ----------------------------------------------------------------------------------------------


def _aot_specs():
    specs = []
    for tdt in ("i64", "u8"):
        c = {"BLOCK": 1024}
        specs.append(AotSpec(
            f"cross_entropy_check_kernel[{tdt}]", cross_entropy_check_kernel,
            signature(cross_entropy_check_kernel, {"t_ptr": f"*{tdt}", "out_ptr": "*i64", "N": "i32", "C": "i32",
                                                   "stride_t": "i32", "ignore_index": "i64"}, c),
            c, archs=(90, 80) if tdt == "i64" else (90,)))
    # fp16 differs from bf16 only in the load/store conversions: bf16 stands for both 16-bit types
    for dt in ("fp32", "bf16"):
        p = f"*{dt}"
        for rows, block_c, warps in ROW_GPU_CONFIGS:
            for mean, store_loss, grad, smooth in ((True, False, True, False), (False, True, True, True),
                                                   (False, False, False, False)):
                archs = (90, 80) if dt == "fp32" and block_c == 4096 and grad else (90,)
                c = dict(MEAN=mean, STORE_LOSS=store_loss, COMPUTE_GRAD=grad, SMOOTH=smooth, ROWS=rows,
                         BLOCK_C=block_c)
                red = "mean" if mean else ("none" if store_loss else "sum")
                tag = f"{dt}/{rows}x{block_c}/{red}/grad{int(grad)}/ls{int(smooth)}"
                specs.append(AotSpec(
                    f"cross_entropy_fwd_kernel[{tag}]", cross_entropy_fwd_kernel,
                    signature(cross_entropy_fwd_kernel,
                              {"x_ptr": p, "t_ptr": "*i64", "loss_ptr": p if store_loss else "*fp32",
                               "partial_ptr": p if store_loss else "*fp32", "dx_ptr": p,
                               "N": "i32", "C": "i32", "stride_xn": "i32", "stride_xc": "i32", "stride_t": "i32",
                               "stride_dxn": "i32", "stride_dxc": "i32", "count_ptr": "*i64",
                               "ignore_index": "i64", "smoothing": "fp32"}, c),
                    c, num_warps=warps, archs=archs))
        for g_scalar in (True, False):
            c = dict(G_SCALAR=g_scalar, BLOCK=1024)
            specs.append(AotSpec(
                f"cross_entropy_bwd_kernel[{dt}/{'scalar' if g_scalar else 'rows'}]", cross_entropy_bwd_kernel,
                signature(cross_entropy_bwd_kernel, {"gsaved_ptr": p, "g_ptr": p, "dx_ptr": p, "n": "i64",
                                                     "C": "i32", "stride_g": "i32"}, c),
                c, archs=(90, 80) if dt == "fp32" else (90,)))
    return specs


AOT_SPECS = _aot_specs()
