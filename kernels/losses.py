"""Softmax / log-softmax over the last dim, the elementwise losses (MSE, L1, BCE-with-logits) and
the deterministic reduction shared with ``cross_entropy.py``.

Row kernels (softmax) see a 2-D ``(rows, C)`` problem: each program owns ``ROWS`` rows and walks
the classes in ``BLOCK_C`` chunks with an online max/sum, so any C works without holding a whole
row in registers; a second pass writes the output. In the interpreter one chunk covers the whole
row and a program takes many rows (its cost is per program and per op, not per element).

Elementwise losses write either the per-element loss (``reduction="none"``) or one fp32 partial
sum per program; ``loss_reduce_kernel`` then adds the partials in a fixed order (deterministic, no
atomics) and divides by the element count for "mean". Backward recomputes the derivative from the
saved input and target (cheaper than storing it) and scales by the incoming gradient.

NaN: ``tl.max`` drops NaN, but a NaN entry still reaches the row sum through ``exp(NaN - m)``, so
it poisons exactly its own row, as in PyTorch. A row that is all ``-inf`` uses 0 as its shift
(``exp(-inf - -inf)`` would be NaN in the middle of a row that later turns finite) and comes out
0/0 = NaN at the end, as in PyTorch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import ELEMENTWISE_BLOCK, INTERPRET, AotSpec, cdiv, elementwise_grid, next_pow2, signature

# ----------------------------------------------------------------------------------------------
# Shared device helpers
# ----------------------------------------------------------------------------------------------


@triton.jit
def _log1p(u):
    # log(1 + u) without losing u when u << 1 (the interpreter has no libdevice log1p): with
    # w = fl(1 + u), log(w) * u / (w - 1) cancels the rounding of w (Goldberg, "What every
    # computer scientist should know..."), a few ulp for u >= 0.
    w = 1.0 + u
    d = w - 1.0
    return tl.where(d == 0.0, u, tl.log(w) * (u / tl.where(d == 0.0, 1.0, d)))


# ----------------------------------------------------------------------------------------------
# Row configurations. GPU: (ROWS, BLOCK_C, num_warps); the launcher takes the first whose
# BLOCK_C covers C, else the last one, which loops over class chunks. ROWS * BLOCK_C stays at
# 2-4k fp32 values per program so a few live tiles fit in registers without spills.
# ----------------------------------------------------------------------------------------------

ROW_GPU_CONFIGS = ((16, 64, 4), (8, 256, 4), (2, 1024, 4), (1, 4096, 8))
#: interpreter: whole rows up to this many classes, and about this many elements per program
_INTERP_MAX_C = 1 << 17
_INTERP_ELEMS = 1 << 16


def row_config(n_rows: int, C: int):
    """(ROWS, BLOCK_C, num_warps) for a row kernel over (n_rows, C)."""
    if INTERPRET:
        block_c = min(next_pow2(C), _INTERP_MAX_C)
        rows = max(1, min(_INTERP_ELEMS // block_c, next_pow2(n_rows)))
        return rows, block_c, 1
    for cfg in ROW_GPU_CONFIGS:
        if cfg[1] >= C:
            return cfg
    return ROW_GPU_CONFIGS[-1]


#: the one-program reduction over partial sums: chunk size per loop step
REDUCE_BLOCK = 1 << 16 if INTERPRET else 1024


@triton.jit
def loss_reduce_kernel(partial_ptr, out_ptr, divisor_ptr, P, divisor,
                       DIVISOR_ON_DEVICE: tl.constexpr, BLOCK: tl.constexpr):
    # One program adds the P fp32 partials in a fixed order (deterministic run to run), then
    # divides once: divisor is the count for "mean" (0 -> 0/0 = NaN, PyTorch's empty mean), 1 for
    # "sum". A count only the device knows (cross-entropy's non-ignored rows) is read from
    # divisor_ptr (an int64), so no host sync is needed and the launch can be graph-captured.
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, P, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(partial_ptr + offs, mask=offs < P, other=0.0)
    total = tl.sum(acc, axis=0)
    if DIVISOR_ON_DEVICE:
        total = total / tl.load(divisor_ptr).to(tl.float32)
    else:
        total = total / divisor
    tl.store(out_ptr, total.to(out_ptr.dtype.element_ty))


def reduce_partials(partials: torch.Tensor, divisor: float | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0-d tensor of ``dtype``: sum(partials) / divisor, summed in fp32 in one program.

    ``divisor`` is a float, or a one-element int64 device tensor holding it.
    """
    out = torch.empty((), device=partials.device, dtype=dtype)
    on_device = isinstance(divisor, torch.Tensor)
    loss_reduce_kernel[(1,)](partials, out, divisor if on_device else partials, partials.numel(),
                             1.0 if on_device else float(divisor),
                             DIVISOR_ON_DEVICE=on_device, BLOCK=REDUCE_BLOCK)
    return out


# ----------------------------------------------------------------------------------------------
# Softmax / log-softmax over the last dim
# ----------------------------------------------------------------------------------------------


@triton.jit
def softmax_fwd_kernel(x_ptr, y_ptr, N, C, stride_xn, stride_xc, stride_yn, stride_yc,
                       LOG: tl.constexpr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_mask = rows < N
    rows64 = rows.to(tl.int64)  # N * C can pass 2**31 elements
    m = tl.full((ROWS,), float("-inf"), tl.float32)
    s = tl.zeros((ROWS,), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask = row_mask[:, None] & (cols < C)[None, :]
        x = tl.load(x_ptr + rows64[:, None] * stride_xn + cols[None, :] * stride_xc, mask=mask,
                    other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=1))
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m - shift)
        e = tl.exp(x - shift[:, None])
        if LOG:
            # s holds sum - 1: the max's own e^0 = 1 is kept out, so that log(sum) = log1p(s) keeps
            # a tiny s (the max entry's log-probability -log1p(s) would round to 0 otherwise).
            # Entries equal to the max count 1 each; when the max grows, the old (s + 1) rescales.
            at_max = x == m_new[:, None]
            rest = tl.sum(tl.where(at_max, 0.0, e), axis=1)
            n_at = tl.sum(at_max.to(tl.float32), axis=1)
            s = tl.where(m_new > m, (s + 1.0) * alpha + ((n_at - 1.0) + rest), s + (n_at + rest))
        else:
            s = s * alpha + tl.sum(e, axis=1)
        m = m_new
    shift = tl.where(m == float("-inf"), 0.0, m)
    if LOG:
        # all -inf row: log-sum -inf, and -inf - -inf = NaN below, as in PyTorch; a +inf entry
        # makes the whole row NaN in PyTorch (inf - inf inside its sum): here too
        log_s = tl.where(m == float("-inf"), float("-inf"), _log1p(s))
        log_s = tl.where(m == float("inf"), float("nan"), log_s)
    else:
        inv_s = 1.0 / s
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask = row_mask[:, None] & (cols < C)[None, :]
        x = tl.load(x_ptr + rows64[:, None] * stride_xn + cols[None, :] * stride_xc, mask=mask,
                    other=float("-inf")).to(tl.float32)
        if LOG:
            # (x - max) - log(s) rather than x - (max + log(s)): x - max is exact when x is near the
            # max (Sterbenz), and log(s) is small there, so nothing cancels
            y = (x - shift[:, None]) - log_s[:, None]
        else:
            y = tl.exp(x - shift[:, None]) * inv_s[:, None]
        tl.store(y_ptr + rows64[:, None] * stride_yn + cols[None, :] * stride_yc,
                 y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def softmax_bwd_kernel(dy_ptr, y_ptr, dx_ptr, N, C, stride_dyn, stride_dyc, stride_yn, stride_yc,
                       stride_dxn, stride_dxc,
                       LOG: tl.constexpr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    # softmax:     dx = y * (dy - sum(dy * y))
    # log_softmax: dx = dy - exp(y) * sum(dy)
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_mask = rows < N
    rows64 = rows.to(tl.int64)
    acc = tl.zeros((ROWS,), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask = row_mask[:, None] & (cols < C)[None, :]
        dy = tl.load(dy_ptr + rows64[:, None] * stride_dyn + cols[None, :] * stride_dyc, mask=mask,
                     other=0.0).to(tl.float32)
        if LOG:
            acc += tl.sum(dy, axis=1)
        else:
            y = tl.load(y_ptr + rows64[:, None] * stride_yn + cols[None, :] * stride_yc, mask=mask,
                        other=0.0).to(tl.float32)
            acc += tl.sum(dy * y, axis=1)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask = row_mask[:, None] & (cols < C)[None, :]
        dy = tl.load(dy_ptr + rows64[:, None] * stride_dyn + cols[None, :] * stride_dyc, mask=mask,
                     other=0.0).to(tl.float32)
        y = tl.load(y_ptr + rows64[:, None] * stride_yn + cols[None, :] * stride_yc, mask=mask,
                    other=0.0).to(tl.float32)
        if LOG:
            dx = dy - tl.exp(y) * acc[:, None]
        else:
            dx = y * (dy - acc[:, None])
        tl.store(dx_ptr + rows64[:, None] * stride_dxn + cols[None, :] * stride_dxc,
                 dx.to(dx_ptr.dtype.element_ty), mask=mask)


def softmax_fwd(x: torch.Tensor, log: bool = False) -> torch.Tensor:
    """Softmax (or log-softmax) over the last dim of a 2-D (rows, C) tensor, any strides."""
    N, C = x.shape
    y = torch.empty((N, C), device=x.device, dtype=x.dtype)
    if N == 0 or C == 0:
        return y
    rows, block_c, warps = row_config(N, C)
    softmax_fwd_kernel[(cdiv(N, rows),)](
        x, y, N, C, x.stride(0), x.stride(1), y.stride(0), y.stride(1),
        LOG=log, ROWS=rows, BLOCK_C=block_c, num_warps=warps)
    return y


def softmax_bwd(dy: torch.Tensor, y: torch.Tensor, log: bool = False) -> torch.Tensor:
    """Gradient of (log-)softmax over the last dim, from the saved output y; 2-D, any strides."""
    N, C = y.shape
    dx = torch.empty((N, C), device=y.device, dtype=y.dtype)
    if N == 0 or C == 0:
        return dx
    rows, block_c, warps = row_config(N, C)
    softmax_bwd_kernel[(cdiv(N, rows),)](
        dy, y, dx, N, C, dy.stride(0), dy.stride(1), y.stride(0), y.stride(1), dx.stride(0), dx.stride(1),
        LOG=log, ROWS=rows, BLOCK_C=block_c, num_warps=warps)
    return dx


# ----------------------------------------------------------------------------------------------
# Elementwise losses: MSE, L1, BCE-with-logits
# ----------------------------------------------------------------------------------------------

MSE, L1, BCE_LOGITS = 0, 1, 2
LOSSES = {"mse_loss": MSE, "l1_loss": L1, "binary_cross_entropy_with_logits": BCE_LOGITS}


@triton.jit
def elementwise_loss_fwd_kernel(x_ptr, y_ptr, out_ptr, partial_ptr, n,
                                LOSS: tl.constexpr, STORE: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if LOSS == 0:
        d = x - y
        loss = d * d
    elif LOSS == 1:
        loss = tl.abs(x - y)
    else:
        # max(x, 0) - x*y + log(1 + e^-|x|): no overflow for any x, and the log1p keeps e^-|x|
        # when it is tiny (large |x|), where log(1 + e^-|x|) would round to 0.
        loss = tl.where(x > 0, x, 0.0) - x * y + _log1p(tl.exp(-tl.abs(x)))
    if STORE:
        tl.store(out_ptr + offs, loss.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(partial_ptr + pid, tl.sum(tl.where(mask, loss, 0.0), axis=0))


@triton.jit
def elementwise_loss_bwd_kernel(g_ptr, x_ptr, y_ptr, dx_ptr, dy_ptr, n, divisor,
                                LOSS: tl.constexpr, G_SCALAR: tl.constexpr,
                                NEED_DX: tl.constexpr, NEED_DY: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if G_SCALAR:  # mean/sum: one upstream value; divisor is n for mean, 1 for sum
        g = tl.load(g_ptr).to(tl.float32) / divisor
    else:
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if LOSS == 0:
        d = 2.0 * (x - y)
        ddx = g * d
        ddy = -ddx
    elif LOSS == 1:
        d = x - y
        # sign(d), 0 at d == 0 and (as PyTorch's l1 backward gives) 0 at NaN
        sgn = tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, 0.0))
        ddx = g * sgn
        ddy = -ddx
    else:
        e = tl.exp(-tl.abs(x))
        sig = tl.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        ddx = g * (sig - y)
        ddy = -g * x
    if NEED_DX:
        tl.store(dx_ptr + offs, ddx.to(dx_ptr.dtype.element_ty), mask=mask)
    if NEED_DY:
        tl.store(dy_ptr + offs, ddy.to(dy_ptr.dtype.element_ty), mask=mask)


def elementwise_loss_fwd(x: torch.Tensor, y: torch.Tensor, loss: str, reduction: str) -> torch.Tensor:
    """``loss`` (a key of LOSSES) of same-shape x and y, reduced: "none" -> x.shape, else 0-d.

    Accumulation is fp32; the result has x's dtype.
    """
    code = LOSSES[loss]
    x, y = x.contiguous(), y.contiguous()
    n = x.numel()
    if reduction == "none":
        out = torch.empty_like(x)
        if n:
            elementwise_loss_fwd_kernel[elementwise_grid(n)](x, y, out, out, n, LOSS=code, STORE=True,
                                                             BLOCK=ELEMENTWISE_BLOCK)
        return out
    grid = elementwise_grid(n)
    partials = torch.empty(grid[0], device=x.device, dtype=torch.float32)
    if n:
        elementwise_loss_fwd_kernel[grid](x, y, partials, partials, n, LOSS=code, STORE=False,
                                          BLOCK=ELEMENTWISE_BLOCK)
    return reduce_partials(partials, float(n) if reduction == "mean" else 1.0, x.dtype)


def elementwise_loss_bwd(g: torch.Tensor, x: torch.Tensor, y: torch.Tensor, loss: str, reduction: str,
                         need_dx: bool = True, need_dy: bool = True):
    """(dx, dy) of ``loss`` under upstream gradient g (0-d for mean/sum, x.shape for none)."""
    code = LOSSES[loss]
    x, y = x.contiguous(), y.contiguous()
    n = x.numel()
    dx = torch.empty_like(x) if need_dx else None
    dy = torch.empty_like(y) if need_dy else None
    if n and (need_dx or need_dy):
        g = g.contiguous()
        elementwise_loss_bwd_kernel[elementwise_grid(n)](
            g, x, y, dx if need_dx else x, dy if need_dy else x, n,
            float(n) if reduction == "mean" else 1.0,
            LOSS=code, G_SCALAR=reduction != "none", NEED_DX=need_dx, NEED_DY=need_dy,
            BLOCK=ELEMENTWISE_BLOCK)
    return dx, dy


# ----------------------------------------------------------------------------------------------
# Configurations for the ahead-of-time GPU compile check
# ----------------------------------------------------------------------------------------------


def _aot_specs():
    specs = []
    # fp16 differs from bf16 only in the load/store conversions: bf16 stands for both 16-bit types
    for dt in ("fp32", "bf16"):
        for on_device in (False, True):
            c = {"DIVISOR_ON_DEVICE": on_device, "BLOCK": 1024}
            specs.append(AotSpec(
                f"loss_reduce_kernel[{dt}/{'device' if on_device else 'host'}_divisor]", loss_reduce_kernel,
                signature(loss_reduce_kernel, {"partial_ptr": "*fp32", "out_ptr": f"*{dt}", "divisor_ptr": "*i64",
                                               "P": "i32", "divisor": "fp32"}, c),
                c, archs=(90, 80) if dt == "fp32" else (90,)))
    # fp16 differs from bf16 only in the load/store conversions: bf16 stands for both 16-bit types
    for dt in ("fp32", "bf16"):
        p = f"*{dt}"
        for rows, block_c, warps in ROW_GPU_CONFIGS:
            for log in (False, True):
                archs = (90, 80) if dt == "fp32" and block_c == 4096 else (90,)
                c = dict(LOG=log, ROWS=rows, BLOCK_C=block_c)
                tag = f"{dt}/{'log' if log else 'softmax'}/{rows}x{block_c}"
                specs.append(AotSpec(
                    f"softmax_fwd_kernel[{tag}]", softmax_fwd_kernel,
                    signature(softmax_fwd_kernel, {"x_ptr": p, "y_ptr": p, "N": "i32", "C": "i32",
                                                   "stride_xn": "i32", "stride_xc": "i32",
                                                   "stride_yn": "i32", "stride_yc": "i32"}, c),
                    c, num_warps=warps, archs=archs))
                specs.append(AotSpec(
                    f"softmax_bwd_kernel[{tag}]", softmax_bwd_kernel,
                    signature(softmax_bwd_kernel, {"dy_ptr": p, "y_ptr": p, "dx_ptr": p, "N": "i32", "C": "i32",
                                                   "stride_dyn": "i32", "stride_dyc": "i32",
                                                   "stride_yn": "i32", "stride_yc": "i32",
                                                   "stride_dxn": "i32", "stride_dxc": "i32"}, c),
                    c, num_warps=warps, archs=archs))
        for name, code in LOSSES.items():
            archs = (90, 80) if dt == "fp32" else (90,)
            for store in (False, True):
                c = dict(LOSS=code, STORE=store, BLOCK=1024)
                specs.append(AotSpec(
                    f"elementwise_loss_fwd_kernel[{dt}/{name}/{'none' if store else 'reduce'}]",
                    elementwise_loss_fwd_kernel,
                    signature(elementwise_loss_fwd_kernel, {"x_ptr": p, "y_ptr": p, "out_ptr": p if store else "*fp32",
                                                            "partial_ptr": "*fp32", "n": "i64"}, c),
                    c, archs=archs))
            for g_scalar in (False, True):
                c = dict(LOSS=code, G_SCALAR=g_scalar, NEED_DX=True, NEED_DY=True, BLOCK=1024)
                specs.append(AotSpec(
                    f"elementwise_loss_bwd_kernel[{dt}/{name}/{'scalar' if g_scalar else 'none'}]",
                    elementwise_loss_bwd_kernel,
                    signature(elementwise_loss_bwd_kernel, {"g_ptr": p, "x_ptr": p, "y_ptr": p, "dx_ptr": p,
                                                            "dy_ptr": p, "n": "i64", "divisor": "fp32"}, c),
                    c, archs=archs))
    return specs


AOT_SPECS = _aot_specs()
