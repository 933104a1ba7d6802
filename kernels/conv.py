"""conv2d as an implicit GEMM: forward with fused bias + activation, dgrad and wgrad (+ bias grad).

Shapes (NCHW, PyTorch's layouts): x (N, C, H, W), w (K, C/G, R, S), b (K,), y (N, K, P, Q) with
G groups, CG = C/G input and KG = K/G output channels per group. Per group the three passes are
GEMMs whose operands are gathered on the fly from the 4-D tensors (no im2col buffer in memory):

- forward   y[npq, k] = sum_crs X[npq, crs] * W[crs, k]. Tiles (BLOCK_M output pixels n*p*q,
            BLOCK_N output channels), loops c*r*s in BLOCK_K chunks; the input tile is gathered
            with the window offsets h = p*stride - pad + r*dilation (out of range -> 0, which is
            the zero padding). Bias and activation run in the epilogue on the fp32 accumulator.
- dgrad     dx[nhw, c] = sum_krs dZ[nhw, krs] * W[krs, c], where dZ is gathered at
            p = (h + pad - r*dilation) / stride (only where that division is exact and in range).
            dZ = dY * act'(s) is formed tile by tile from dY and the saved s (y or z).
- wgrad     dw[k, crs] = sum_npq dZ[k, npq] * X[npq, crs], loops n*p*q; the column-block-0 programs
            also sum dZ for db. On a GPU the n*p*q loop is split over SPLIT programs (a handful of
            output tiles would leave most SMs idle) writing fp32 partials that a second kernel
            sums in a fixed order: deterministic, no atomics.

In the interpreter the launchers zero-pad x (forward, wgrad) and place dY in a zero-padded,
zero-stuffed buffer (dgrad) on the host, so every gather runs IN_BOUNDS: no per-element bounds
masks, and dgrad always runs as a unit-stride gather (see _HOST_PAD, _dgrad_buffer).

All accumulation is fp32. Offsets along the batch and channel axes are int64 (N*C*H*W can pass
2**31 elements).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import elementwise as _ew
from ._common import (
    INTERP_IDX64,
    INTERPRET,
    AotSpec,
    cdiv,
    dot_input_precision,
    low_precision_dot_upcast,
    next_pow2,
    signature,
)
from .activations import ACTIVATIONS, act_bwd, act_fwd, activation_code


@triton.jit
def conv2d_fwd_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, z_ptr,
    N, H, W, P, Q, R, S, CG, KG,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wk, stride_wc, stride_wr, stride_ws,
    stride_yn, stride_yk, stride_yp, stride_yq,
    str_h, str_w, pad_h, pad_w, dil_h, dil_w,
    alpha,
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, SAVE_Z: tl.constexpr, IN_BOUNDS: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, IDX64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # IN_BOUNDS: no padding (none asked for, or x zero-padded on the host), so every tap of an
    # in-range output pixel lies inside x and the gather needs no per-element h/w bounds mask.
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    g = tl.program_id(2)
    PQ = P * Q
    RS = R * S
    CRS = CG * RS
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output pixels n*p*q
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # output channels of group g
    if IDX64:  # see _common.INTERP_IDX64
        offs_m = offs_m.to(tl.int64)
        offs_n = offs_n.to(tl.int64)
    mask_m = offs_m < N * PQ
    mask_n = offs_n < KG
    n = offs_m // PQ
    pq = offs_m - n * PQ
    p = pq // Q
    q = pq - p * Q
    h0 = p * str_h - pad_h  # top-left corner of each output pixel's window, in input pixels
    w0 = q * str_w - pad_w
    # x offset = row part (pixel) + column part (tap c, r, s): one broadcast add per tile
    x_row = x_ptr + n.to(tl.int64) * stride_xn + (g * CG).to(tl.int64) * stride_xc + h0 * stride_xh + w0 * stride_xw
    w_base = w_ptr + (g * KG + offs_n).to(tl.int64) * stride_wk

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, CRS, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        if IDX64:
            kk = kk.to(tl.int64)
        mask_k = kk < CRS
        c = kk // RS
        rs = kk - c * RS
        r = rs // S
        s = rs - r * S
        rh = r * dil_h
        sw = s * dil_w
        mask_a = mask_m[:, None] & mask_k[None, :]
        if not IN_BOUNDS:  # out-of-image taps load 0: that is the zero padding
            h = h0[:, None] + rh[None, :]
            w = w0[:, None] + sw[None, :]
            mask_a = mask_a & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        x_col = c.to(tl.int64) * stride_xc + rh * stride_xh + sw * stride_xw
        a = tl.load(x_row[:, None] + x_col[None, :], mask=mask_a, other=0.0)
        b = tl.load(w_base[None, :] + (c * stride_wc + r * stride_wr + s * stride_ws)[:, None],
                    mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)

    if HAS_BIAS:
        acc += tl.load(b_ptr + g * KG + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    out_offs = (n.to(tl.int64) * stride_yn + p * stride_yp + q * stride_yq)[:, None] \
        + (g * KG + offs_n).to(tl.int64)[None, :] * stride_yk
    mask = mask_m[:, None] & mask_n[None, :]
    if SAVE_Z:  # the derivative needs the pre-activation: one extra write of the output's size
        tl.store(z_ptr + out_offs, acc.to(z_ptr.dtype.element_ty), mask=mask)
    y = act_fwd(acc, ACT, alpha)
    tl.store(y_ptr + out_offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def conv2d_bwd_dx_kernel(
    dy_ptr, s_ptr, w_ptr, dx_ptr,
    N, H, W, P, Q, R, S, CG, KG,
    stride_dyn, stride_dyk, stride_dyp, stride_dyq,
    stride_wk, stride_wc, stride_wr, stride_ws,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    str_h, str_w, pad_h, pad_w, dil_h, dil_w,
    alpha,
    ACT: tl.constexpr, UNIT_STRIDE: tl.constexpr, IN_BOUNDS: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, IDX64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # s (the saved y or z) has dy's layout: the launcher makes dy contiguous like s.
    # IN_BOUNDS (with UNIT_STRIDE): dy was zero-padded by (R-1)*dil (and zero-stuffed between
    # strided pixels) on the host, so every tap of an in-range input pixel lies inside it and the
    # gather needs no per-element p/q bounds mask (see _dgrad_buffer).
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    g = tl.program_id(2)
    HW = H * W
    RS = R * S
    KRS = KG * RS
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # input pixels n*h*w
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # input channels of group g
    if IDX64:  # see _common.INTERP_IDX64
        offs_m = offs_m.to(tl.int64)
        offs_n = offs_n.to(tl.int64)
    mask_m = offs_m < N * HW
    mask_n = offs_n < CG
    n = offs_m // HW
    hw = offs_m - n * HW
    h = hw // W
    w = hw - h * W
    n64 = n.to(tl.int64)
    hp = h + pad_h  # tap (r, s) of output pixel (p, q) lands on h = p*stride - pad + r*dil
    wp = w + pad_w
    dy_row = n64 * stride_dyn + (g * KG).to(tl.int64) * stride_dyk
    if UNIT_STRIDE:  # p = hp - r*dil: the dy offset splits into row + column parts too
        dy_row += hp * stride_dyp + wp * stride_dyq
    # row pointers (1-D): adding a column offset to them is one pointer add per tile
    dy_rowp = dy_ptr + dy_row
    s_rowp = s_ptr + dy_row
    w_base = w_ptr + (g * KG).to(tl.int64) * stride_wk + offs_n * stride_wc

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, KRS, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        if IDX64:
            kk = kk.to(tl.int64)
        mask_k = kk < KRS
        k = kk // RS
        rs = kk - k * RS
        r = rs // S
        s = rs - r * S
        rh = r * dil_h
        sw = s * dil_w
        k64 = k.to(tl.int64)
        mask = mask_m[:, None] & mask_k[None, :]
        if UNIT_STRIDE:
            offs = (k64 * stride_dyk - rh * stride_dyp - sw * stride_dyq)[None, :]
            if not IN_BOUNDS:
                th = hp[:, None] - rh[None, :]
                tw = wp[:, None] - sw[None, :]
                mask = mask & (th >= 0) & (th < P) & (tw >= 0) & (tw < Q)
        else:  # only exact divisions by the stride are output pixels
            th = hp[:, None] - rh[None, :]
            tw = wp[:, None] - sw[None, :]
            p = th // str_h
            q = tw // str_w
            mask = mask & (th >= 0) & (tw >= 0) & (p * str_h == th) & (q * str_w == tw) & (p < P) & (q < Q)
            offs = (k64 * stride_dyk)[None, :] + p * stride_dyp + q * stride_dyq
        dz = tl.load(dy_rowp[:, None] + offs, mask=mask, other=0.0).to(tl.float32)
        if ACT != 0:
            sv = tl.load(s_rowp[:, None] + offs, mask=mask, other=0.0).to(tl.float32)
            # masked lanes load dy = s = 0 and every act'(0) is finite, so they stay exactly 0
            # without a where() (one full-tile pass fewer in the interpreter)
            dz = dz * act_bwd(sv, ACT, alpha)
        wt = tl.load(w_base[None, :] + (k64 * stride_wk + r * stride_wr + s * stride_ws)[:, None],
                     mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if UPCAST:
            wt = wt.to(tl.float32)
        else:  # tensor cores take dZ in the operands' dtype, as PyTorch rounds it
            dz = dz.to(wt.dtype)
        acc = tl.dot(dz, wt, acc, input_precision=PRECISION)

    out = (dx_ptr + n64 * stride_dxn + h * stride_dxh + w * stride_dxw)[:, None] \
        + (g * CG + offs_n).to(tl.int64)[None, :] * stride_dxc
    tl.store(out, acc.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def conv2d_bwd_dw_kernel(
    dy_ptr, s_ptr, x_ptr, dw_ptr, db_ptr,
    N, H, W, P, Q, R, S, CG, KG, K,
    stride_dyn, stride_dyk, stride_dyp, stride_dyq,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_dwsplit, stride_dwk, stride_dbsplit,
    str_h, str_w, pad_h, pad_w, dil_h, dil_w,
    chunks_per_split,
    alpha,
    ACT: tl.constexpr, HAS_DW: tl.constexpr, HAS_DB: tl.constexpr, IN_BOUNDS: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, IDX64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # IN_BOUNDS: no padding (x zero-padded on the host, or none asked for): as in the forward,
    # the x gather needs no per-element h/w bounds mask.
    # dw is addressed as (SPLIT, K, CG*R*S) with the c*r*s axis contiguous; db as (SPLIT, K).
    # s (the saved y or z) has dy's layout: the launcher makes dy contiguous like s.
    pid = tl.program_id(0)
    split = tl.program_id(1)
    g = tl.program_id(2)
    PQ = P * Q
    NPQ = N * PQ
    RS = R * S
    CRS = CG * RS
    num_cols = tl.cdiv(CRS, BLOCK_N)
    pid_m = pid // num_cols
    pid_n = pid - pid_m * num_cols
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output channels of group g
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # c*r*s of group g
    if IDX64:  # see _common.INTERP_IDX64
        offs_m = offs_m.to(tl.int64)
        offs_n = offs_n.to(tl.int64)
    mask_m = offs_m < KG
    mask_n = offs_n < CRS
    c = offs_n // RS
    rs = offs_n - c * RS
    r = rs // S
    s = rs - r * S
    rh = r * dil_h
    sw = s * dil_w
    dy_rows = dy_ptr + (g * KG + offs_m).to(tl.int64) * stride_dyk
    s_rows = s_ptr + (g * KG + offs_m).to(tl.int64) * stride_dyk
    x_col = (g * CG + c).to(tl.int64) * stride_xc + rh * stride_xh + sw * stride_xw

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    db = tl.zeros((BLOCK_M,), dtype=tl.float32)
    l_start = split * chunks_per_split * BLOCK_K
    l_end = tl.minimum(l_start + chunks_per_split * BLOCK_K, NPQ)
    for l0 in range(l_start, l_end, BLOCK_K):
        offs_l = l0 + tl.arange(0, BLOCK_K)
        if IDX64:
            offs_l = offs_l.to(tl.int64)
        mask_l = offs_l < l_end
        n = offs_l // PQ
        pq = offs_l - n * PQ
        p = pq // Q
        q = pq - p * Q
        n64 = n.to(tl.int64)
        mask_z = mask_m[:, None] & mask_l[None, :]
        dy_col = (n64 * stride_dyn + p * stride_dyp + q * stride_dyq)[None, :]
        dz = tl.load(dy_rows[:, None] + dy_col, mask=mask_z, other=0.0).to(tl.float32)
        if ACT != 0:
            sv = tl.load(s_rows[:, None] + dy_col, mask=mask_z, other=0.0).to(tl.float32)
            dz = dz * act_bwd(sv, ACT, alpha)  # masked lanes: 0 * act'(0) = 0, as in dgrad
        if HAS_DB:
            db += tl.sum(dz, axis=1)
        if HAS_DW:
            h0 = p * str_h - pad_h
            w0 = q * str_w - pad_w
            mask_x = mask_l[:, None] & mask_n[None, :]
            if not IN_BOUNDS:
                h = h0[:, None] + rh[None, :]
                w = w0[:, None] + sw[None, :]
                mask_x = mask_x & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            x_row = x_ptr + n64 * stride_xn + h0 * stride_xh + w0 * stride_xw
            xt = tl.load(x_row[:, None] + x_col[None, :], mask=mask_x, other=0.0)
            if UPCAST:
                xt = xt.to(tl.float32)
            else:
                dz = dz.to(xt.dtype)
            acc = tl.dot(dz, xt, acc, input_precision=PRECISION)
    if HAS_DW:
        out = dw_ptr + split.to(tl.int64) * stride_dwsplit + (g * KG + offs_m).to(tl.int64)[:, None] * stride_dwk \
            + offs_n[None, :]
        tl.store(out, acc.to(dw_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])
    if HAS_DB:
        if pid_n == 0:  # every column block computed the same sum; the first one writes it
            tl.store(db_ptr + split.to(tl.int64) * stride_dbsplit + g * KG + offs_m,
                     db.to(db_ptr.dtype.element_ty), mask=mask_m)


@triton.jit
def conv2d_bwd_reduce_kernel(ws_ptr, out_ptr, L, SPLIT, BLOCK: tl.constexpr):
    """out[l] = sum_i ws[i, l] over the SPLIT fp32 partials, in a fixed order (deterministic)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < L
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in range(0, SPLIT):
        acc += tl.load(ws_ptr + i * L + offs, mask=mask, other=0.0)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Launch configurations
#
# GPU: implicit-GEMM tiles (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages), the N tile sized
# to the channel count so small layers (LeNet's 6 and 16 channels) don't waste 7/8 of the tile.
# Interpreter: the cost is per gathered element, per Triton op and per program instance, so one
# tile covers all channels and the pixel/reduction tiles come from a small cost model
# (_interp_gemm), up to Triton's largest tile (2**20 elements).
# ----------------------------------------------------------------------------------------------

# 8 warps throughout: each gathered element carries its own address and bounds mask, and with 4
# warps (twice the elements a thread) every config below spilled on sm_90 at the benchmark shapes;
# so did a 128x128 tile. ``tools/kernel_report.py --traced-only`` shows registers and spills.
GPU_CONFIGS = {
    # name: (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages)
    "n16": (128, 16, 32, 8, 2),  # 3 stages: Triton 3.6's ptxas spilled LeNet's conv1 (its loop is 1 chunk)
    "n32": (128, 32, 32, 8, 3),
    "n64": (128, 64, 32, 8, 3),
    "n128": (64, 128, 32, 8, 3),
}
#: wgrad: (BLOCK_M over output channels, BLOCK_N over c*r*s, BLOCK_K over n*p*q)
GPU_WGRAD_CONFIGS = {
    "m16": (16, 32, 32, 8, 3),  # 16x64x64: an FMA (fp32) tile near 255 registers, spilling on some ptxas
    "m32": (32, 64, 64, 8, 3),
    "m64": (64, 64, 64, 8, 3),
    "m128": (128, 64, 32, 8, 3),
}
REDUCE_BLOCK = 1 << 16 if INTERPRET else 1024
_INTERP_TILE = 1 << 20  # Triton's largest tensor (TRITON_MAX_TENSOR_NUMEL)
_GPU_PROGRAMS = 264  # ~2 waves on an H100 (132 SMs): enough parallel work for the split wgrad
#: Interpreter: zero-pad x (forward, wgrad) and dY (dgrad) on the host, one allocation + copy, so
#: the gathers run IN_BOUNDS: ~8 fewer full-tile numpy passes per K-chunk. On a GPU that copy is
#: an extra pass over memory while the masks are nearly free, so the kernels mask instead (and run
#: IN_BOUNDS only where there is no padding).
_HOST_PAD = INTERPRET


def _pick(table, prefix: str, channels: int):
    for size in (16, 32, 64):
        if channels <= size:
            return table[f"{prefix}{size}"]
    return table[f"{prefix}128"]


def _clamp_pow2(n: int, lo: int, hi: int) -> int:
    return min(hi, max(lo, next_pow2(n)))


#: Interpreter cost model (measured on a 2-core CPU): each element of a gathered tile costs ~30 ns
#: (the interpreter loads element by element, plus the pointer and mask passes), masked-off lanes
#: included; each K-chunk ~3 ms of Python op dispatch and each program ~5 ms more.
_INTERP_NS_PER_ELEM, _INTERP_MS_PER_CHUNK, _INTERP_MS_PER_PROGRAM = 30.0, 3.0, 5.0


def _interp_gemm(pixels: int, channels: int, loop: int):
    # The interpreter's tl.dot takes any shape (no 16-minimum as on tensor cores): the channel
    # tile fits the channel count. Pixel and loop tiles: the cheapest split under the cost model
    # above, which weighs padding waste (the last pixel tile, a loop not a power of two) against
    # the per-chunk and per-program overheads.
    bn = _clamp_pow2(channels, 1, 128)
    best = None
    bk = 16
    while bk <= min(512, max(16, next_pow2(loop))):
        chunks = cdiv(loop, bk)
        bm = 16
        while bm <= min(max(16, next_pow2(pixels)), _INTERP_TILE // bk):
            tile_ms = bm * bk * _INTERP_NS_PER_ELEM * 1e-6
            cost = cdiv(pixels, bm) * (chunks * (tile_ms + _INTERP_MS_PER_CHUNK) + _INTERP_MS_PER_PROGRAM)
            if best is None or cost < best[0]:
                best = (cost, bm, bk)
            bm *= 2
        bk *= 2
    return best[1], bn, best[2], 1, 1


def _gemm_config(pixels: int, channels: int, loop: int):
    return _interp_gemm(pixels, channels, loop) if INTERPRET else _pick(GPU_CONFIGS, "n", channels)


def _wgrad_config(rows: int, cols: int, loop: int):
    if INTERPRET:
        bm = _clamp_pow2(rows, 1, 128)  # any dot shape in the interpreter, as in _interp_gemm
        bn = _clamp_pow2(cols, 16, 512)
        bk = _clamp_pow2(loop, 16, max(16, _INTERP_TILE // bn))
        return bm, bn, bk, 1, 1
    return _pick(GPU_WGRAD_CONFIGS, "m", rows)


def out_size(size: int, kernel: int, stride: int, pad: int, dil: int) -> int:
    return (size + 2 * pad - dil * (kernel - 1) - 1) // stride + 1


def _pad_x(x: torch.Tensor, padding) -> torch.Tensor:
    """x with its zero padding materialised: (N, C, H + 2*pad_h, W + 2*pad_w)."""
    ph, pw = padding
    N, C, H, W = x.shape
    xp = torch.zeros((N, C, H + 2 * ph, W + 2 * pw), device=x.device, dtype=x.dtype)
    xp[:, :, ph:ph + H, pw:pw + W].copy_(x)
    return xp


def _dgrad_buffer(dz: torch.Tensor, hw, rs, stride, padding, dilation) -> torch.Tensor:
    """dZ placed in a zero buffer so that dgrad becomes a unit-stride gather with every tap in range.

    Input pixel h gets tap r from output pixel p with p*stride = h + pad - r*dil. Storing dZ[p] at
    row i = p*stride + (R-1)*dil - pad makes that row i = h + (R-1-r)*dil, inside [0, H + (R-1)*dil)
    for every tap of every input pixel; rows between strided pixels and around them hold 0 (no
    output pixel there). Output pixels whose row falls outside the buffer see no input pixel
    (their windows lie in the padding) and are left out. Same for columns. The kernel then runs
    with stride 1, padding (R-1)*dil and the buffer's size as P x Q.
    """
    N, K, P, Q = dz.shape
    rows = []
    for size, out, k, st, pad, dil in zip(hw, (P, Q), rs, stride, padding, dilation):
        off = (k - 1) * dil - pad
        ext = size + (k - 1) * dil
        lo = max(0, -(off // st))  # first output pixel with row >= 0: ceil(-off / st)
        hi = min(out, (ext - 1 - off) // st + 1)
        rows.append((ext, off, lo, max(lo, hi), st))
    (HB, oh, plo, phi, sh), (WB, ow, qlo, qhi, sw) = rows
    buf = torch.zeros((N, K, HB, WB), device=dz.device, dtype=dz.dtype)
    if phi > plo and qhi > qlo:
        buf[:, :, plo * sh + oh:(phi - 1) * sh + oh + 1:sh, qlo * sw + ow:(qhi - 1) * sw + ow + 1:sw].copy_(
            dz[:, :, plo:phi, qlo:qhi])
    return buf


# ----------------------------------------------------------------------------------------------
# Launchers (inputs are assumed validated by tinydl.ops.conv; any strides work)
# ----------------------------------------------------------------------------------------------

def conv2d_fwd(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stride=(1, 1), padding=(0, 0),
               dilation=(1, 1), groups: int = 1, activation: str = "none", alpha: float = 0.01,
               save_z: bool = False):
    """y = act(conv2d(x, w) + b). Returns (y, z) with z the pre-activation (if ``save_z``) or None."""
    act = activation_code(activation)
    N, C, H, W = x.shape
    K, CG, R, S = w.shape
    P, Q = out_size(H, R, stride[0], padding[0], dilation[0]), out_size(W, S, stride[1], padding[1], dilation[1])
    y = torch.empty((N, K, P, Q), device=x.device, dtype=x.dtype)
    z = torch.empty_like(y) if save_z else None
    KG = K // groups
    if y.numel() == 0:
        return y, z
    if _HOST_PAD and tuple(padding) != (0, 0):
        x, padding = _pad_x(x, padding), (0, 0)
        H, W = x.shape[2:]
    bm, bn, bk, warps, stages = _gemm_config(N * P * Q, KG, CG * R * S)
    grid = (cdiv(N * P * Q, bm), cdiv(KG, bn), groups)
    conv2d_fwd_kernel[grid](
        x, w, b.contiguous() if b is not None else y, y, z if z is not None else y,
        N, H, W, P, Q, R, S, CG, KG,
        *x.stride(), *w.stride(), *y.stride(),
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        float(alpha),
        ACT=act, HAS_BIAS=b is not None, SAVE_Z=save_z, IN_BOUNDS=tuple(padding) == (0, 0),
        PRECISION=dot_input_precision(x.dtype), UPCAST=low_precision_dot_upcast(x.dtype), IDX64=INTERP_IDX64,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages,
    )
    return y, z


def conv2d_bwd(dy: torch.Tensor, saved: torch.Tensor | None, x: torch.Tensor | None, w: torch.Tensor,
               x_shape, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups: int = 1,
               activation: str = "none", alpha: float = 0.01,
               need_dx: bool = True, need_dw: bool = True, need_db: bool = False):
    """Gradients of ``y = act(conv2d(x, w) + b)``.

    ``saved`` is y or z (whichever ``activations.saves_input`` names; unused for "none");
    ``x`` is needed only for dw. Returns (dx, dw, db), None where not asked for.
    """
    act = activation_code(activation)
    N, C, H, W = x_shape
    K, CG, R, S = w.shape
    _, _, P, Q = dy.shape
    KG = K // groups
    dy = dy.contiguous()  # the kernels address s (contiguous y or z) with dy's strides
    s = saved if act != ACTIVATIONS["none"] else dy
    if INTERPRET and act != ACTIVATIONS["none"] and need_dx:
        # The interpreter pays per gathered element, and dgrad gathers every dY element R*S times:
        # form dZ = dY * act'(s) once in one elementwise pass instead of inside every gather.
        # (On a GPU those re-reads hit cache and the fused form saves a pass over memory.)
        dy = _ew.activation_bwd(dy, s, activation, alpha)
        act, s = ACTIVATIONS["none"], dy
    prec, upcast = dot_input_precision(w.dtype), low_precision_dot_upcast(w.dtype)
    conv = (stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1])
    dx = dw = db = None
    if need_dx:
        dx = torch.empty(x_shape, device=dy.device, dtype=dy.dtype)
        if dx.numel():
            if dy.numel() == 0 or KG == 0:
                dx.zero_()
            else:
                dyx, sx, conv_x, PB, QB = dy, s, conv, P, Q
                in_bounds = _HOST_PAD and act == ACTIVATIONS["none"]
                if in_bounds:  # (the interpreter formed dZ above: there is no s to pad alongside)
                    dyx = sx = _dgrad_buffer(dy, (H, W), (R, S), stride, padding, dilation)
                    PB, QB = dyx.shape[2:]
                    conv_x = (1, 1, (R - 1) * dilation[0], (S - 1) * dilation[1], dilation[0], dilation[1])
                bm, bn, bk, warps, stages = _gemm_config(N * H * W, CG, KG * R * S)
                conv2d_bwd_dx_kernel[(cdiv(N * H * W, bm), cdiv(CG, bn), groups)](
                    dyx, sx, w, dx, N, H, W, PB, QB, R, S, CG, KG,
                    *dyx.stride(), *w.stride(), *dx.stride(), *conv_x, float(alpha),
                    ACT=act, UNIT_STRIDE=in_bounds or tuple(stride) == (1, 1), IN_BOUNDS=in_bounds,
                    PRECISION=prec, UPCAST=upcast, IDX64=INTERP_IDX64,
                    BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages,
                )
    if need_dw or need_db:
        run_dw = need_dw and CG * R * S > 0
        NPQ = N * P * Q
        if NPQ == 0 or KG == 0 or not (run_dw or need_db):  # nothing to sum: zeros, as in PyTorch
            dw = torch.zeros(w.shape, device=dy.device, dtype=w.dtype) if need_dw else None
            db = torch.zeros((K,), device=dy.device, dtype=w.dtype) if need_db else None
            return dx, dw, db
        crs = CG * R * S if run_dw else 1
        bm, bn, bk, warps, stages = _wgrad_config(KG, crs, NPQ)
        tiles = cdiv(KG, bm) * cdiv(crs, bn)
        chunks = cdiv(NPQ, bk)
        split = 1 if INTERPRET else max(1, min(chunks, cdiv(_GPU_PROGRAMS, tiles * groups)))
        per_split = cdiv(chunks, split)
        split = cdiv(chunks, per_split)  # no empty splits
        if split == 1:
            dw_out = torch.empty(w.shape, device=dy.device, dtype=w.dtype) if run_dw else None
            db_out = torch.empty((K,), device=dy.device, dtype=w.dtype) if need_db else None
        else:  # fp32 partials, summed below in a fixed order
            dw_out = torch.empty((split, K, crs), device=dy.device, dtype=torch.float32) if run_dw else None
            db_out = torch.empty((split, K), device=dy.device, dtype=torch.float32) if need_db else None
        xx, conv_w, HX, WX = (x, conv, H, W) if run_dw else (dy, conv, H, W)
        if run_dw and _HOST_PAD and tuple(padding) != (0, 0):
            xx = _pad_x(x, padding)
            HX, WX = xx.shape[2:]
            conv_w = (stride[0], stride[1], 0, 0, dilation[0], dilation[1])
        conv2d_bwd_dw_kernel[(tiles, split, groups)](
            dy, s, xx, dw_out if run_dw else dy, db_out if need_db else dy,
            # bias only: a 1x1, 1-channel "filter", so the kernel's c*r*s axis is the one column the grid has
            N, HX, WX, P, Q, R if run_dw else 1, S if run_dw else 1, CG if run_dw else 1, KG, K,
            *dy.stride(), *xx.stride(),
            K * crs, crs, K, *conv_w, per_split, float(alpha),
            ACT=act, HAS_DW=run_dw, HAS_DB=need_db, IN_BOUNDS=conv_w[2:4] == (0, 0),
            PRECISION=prec, UPCAST=upcast, IDX64=INTERP_IDX64,
            BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages,
        )
        if split > 1:
            # w's shape from the start: a reshaped view would be cloned when autograd hands it out
            dw_out = _reduce(dw_out, w.dtype, w.shape) if run_dw else None
            db_out = _reduce(db_out, w.dtype) if need_db else None
        if need_dw:
            dw = dw_out if run_dw else torch.zeros(w.shape, device=dy.device, dtype=w.dtype)
        db = db_out
    return dx, dw, db


def _reduce(ws: torch.Tensor, dtype: torch.dtype, shape=None) -> torch.Tensor:
    """Sum the (split, ...) fp32 partials over split into a new contiguous tensor of ``shape``."""
    split = ws.shape[0]
    L = ws[0].numel()
    out = torch.empty(ws.shape[1:] if shape is None else shape, device=ws.device, dtype=dtype)
    conv2d_bwd_reduce_kernel[(cdiv(L, REDUCE_BLOCK),)](ws, out, L, split, BLOCK=REDUCE_BLOCK, num_warps=4,
                                                       num_stages=1)  # as in its AOT spec
    return out


# ----------------------------------------------------------------------------------------------
# Configurations for the ahead-of-time GPU compile check
# ----------------------------------------------------------------------------------------------

def _aot_specs():
    specs = []
    conv_types = {n: "i32" for n in ("N", "H", "W", "P", "Q", "R", "S", "CG", "KG", "K", "str_h", "str_w",
                                      "pad_h", "pad_w", "dil_h", "dil_w", "chunks_per_split")}
    conv_types["alpha"] = "fp32"

    def types(kernel, ptr):
        t = dict(conv_types)
        for a in kernel.arg_names:
            if a.endswith("_ptr"):
                t[a] = ptr
            elif a.startswith("stride_"):
                t[a] = "i32"
        return t

    # Every tile the GPU heuristic can pick in fp32/IEEE and bf16 (fp32 for the sm_80 set), with gelu
    # (the heaviest epilogue/derivative); relu and none on the small fp32 tile. TF32 and fp16 only
    # change the dot's input type or precision: their smallest and largest tiles stand in for the
    # rest. Variants that only change a constexpr compile for sm_90 alone.
    tiles = {("fp32", "ieee"): None, ("bf16", "tf32"): None,
             ("fp32", "tf32"): ("n16", "n128", "m16", "m128"), ("fp16", "tf32"): ("n16", "n128", "m16", "m128")}
    for (dtype, prec), only in tiles.items():
        p = f"*{dtype}"
        base = dtype == "fp32" and prec == "ieee"
        for cname, cfg in GPU_CONFIGS.items():
            if only and cname not in only:
                continue
            bm, bn, bk, warps, stages = cfg
            for act in ([0, 1, 6] if (cname == "n16" and base) else [6]):
                archs = (90, 80) if (base and act == 6) else (90,)
                tag = f"{dtype}/{prec}/{cname}/act{act}"
                # IN_BOUNDS (padding 0) only drops masks: one variant per fp32 tile, sm_90
                for inb in ((False, True) if (act == 6 and base) else (False,)):
                    c = dict(ACT=act, HAS_BIAS=True, SAVE_Z=True, IN_BOUNDS=inb, PRECISION=prec, UPCAST=False,
                             IDX64=False, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)
                    specs.append(AotSpec(f"conv2d_fwd_kernel[{tag}/inb{int(inb)}]", conv2d_fwd_kernel,
                                         signature(conv2d_fwd_kernel, types(conv2d_fwd_kernel, p), c), c,
                                         warps, stages, archs=(90,) if inb else archs))
                # dgrad IN_BOUNDS runs only on the host-padded interpreter path: one variant shows it compiles
                for unit, inb in (((True, False), (False, False)) if act == 6 and cname in ("n16", "n128")
                                  else ((True, False),)) + (((True, True),) if base and cname == "n16" and act == 0
                                                            else ()):
                    c = dict(ACT=act, UNIT_STRIDE=unit, IN_BOUNDS=inb, PRECISION=prec, UPCAST=False, IDX64=False,
                             BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)
                    specs.append(AotSpec(f"conv2d_bwd_dx_kernel[{tag}/unit{int(unit)}/inb{int(inb)}]",
                                         conv2d_bwd_dx_kernel,
                                         signature(conv2d_bwd_dx_kernel, types(conv2d_bwd_dx_kernel, p), c), c,
                                         warps, stages, archs=archs if unit and not inb else (90,)))
        for cname, cfg in GPU_WGRAD_CONFIGS.items():
            if only and cname not in only:
                continue
            bm, bn, bk, warps, stages = cfg
            # split partials are fp32; the dtype-specific variant is the unsplit direct write
            for out_t in sorted({p, "*fp32"}):
                for inb in ((False, True) if base else (False,)):
                    tag = f"{dtype}/{prec}/{cname}/act6/out{out_t[1:]}/inb{int(inb)}"
                    c = dict(ACT=6, HAS_DW=True, HAS_DB=True, IN_BOUNDS=inb, PRECISION=prec, UPCAST=False,
                             IDX64=False, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)
                    t = types(conv2d_bwd_dw_kernel, p)
                    t.update(dw_ptr=out_t, db_ptr=out_t)
                    specs.append(AotSpec(f"conv2d_bwd_dw_kernel[{tag}]", conv2d_bwd_dw_kernel,
                                         signature(conv2d_bwd_dw_kernel, t, c), c, warps, stages,
                                         archs=(90, 80) if base and not inb else (90,)))
        if dtype == "fp32" and prec == "tf32":
            continue  # the reduction has no dot: same kernel as fp32/ieee
        c = dict(BLOCK=1024)
        specs.append(AotSpec(f"conv2d_bwd_reduce_kernel[{dtype}]", conv2d_bwd_reduce_kernel,
                             signature(conv2d_bwd_reduce_kernel,
                                       {"ws_ptr": "*fp32", "out_ptr": p, "L": "i32", "SPLIT": "i32"}, c),
                             c, 4, 1, archs=(90, 80) if dtype == "fp32" else (90,)))
    return specs


AOT_SPECS = _aot_specs()
