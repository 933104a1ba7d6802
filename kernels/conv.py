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

All accumulation is fp32. Offsets along the batch and channel axes are int64 (N*C*H*W can pass
2**31 elements).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tinydl import _runtime

from . import elementwise as _ew
from ._common import INTERPRET, AotSpec, low_precision_dot_upcast, next_pow2, signature
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
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, SAVE_Z: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, IDX64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    g = tl.program_id(2)
    PQ = P * Q
    RS = R * S
    CRS = CG * RS
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output pixels n*p*q
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # output channels of group g
    if IDX64:  # see _INTERP_IDX64
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
        h = h0[:, None] + rh[None, :]
        w = w0[:, None] + sw[None, :]
        # out-of-image taps load 0: that is the zero padding
        mask_a = mask_m[:, None] & mask_k[None, :] & (h >= 0) & (h < H) & (w >= 0) & (w < W)
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
    ACT: tl.constexpr, UNIT_STRIDE: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, IDX64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # s (the saved y or z) has dy's layout: the launcher makes dy contiguous like s.
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    g = tl.program_id(2)
    HW = H * W
    RS = R * S
    KRS = KG * RS
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # input pixels n*h*w
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # input channels of group g
    if IDX64:  # see _INTERP_IDX64
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
        th = hp[:, None] - rh[None, :]
        tw = wp[:, None] - sw[None, :]
        k64 = k.to(tl.int64)
        if UNIT_STRIDE:
            mask = mask_m[:, None] & mask_k[None, :] & (th >= 0) & (th < P) & (tw >= 0) & (tw < Q)
            offs = dy_row[:, None] + (k64 * stride_dyk - rh * stride_dyp - sw * stride_dyq)[None, :]
        else:  # only exact divisions by the stride are output pixels
            p = th // str_h
            q = tw // str_w
            mask = (mask_m[:, None] & mask_k[None, :] & (th >= 0) & (tw >= 0) & (p * str_h == th)
                    & (q * str_w == tw) & (p < P) & (q < Q))
            offs = dy_row[:, None] + (k64 * stride_dyk)[None, :] + p * stride_dyp + q * stride_dyq
        dz = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if ACT != 0:
            sv = tl.load(s_ptr + offs, mask=mask, other=0.0).to(tl.float32)
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
    ACT: tl.constexpr, HAS_DW: tl.constexpr, HAS_DB: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, IDX64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
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
    if IDX64:  # see _INTERP_IDX64
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
            h = h0[:, None] + rh[None, :]
            w = w0[:, None] + sw[None, :]
            mask_x = mask_l[:, None] & mask_n[None, :] & (h >= 0) & (h < H) & (w >= 0) & (w < W)
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
# Interpreter: the cost is per program instance and per Triton op, while the numpy work inside
# a tile is cheap, so one tile covers all channels and as many pixels as a ~2**18-element
# gather tile allows, and the reduction runs in chunks of up to 512.
# ----------------------------------------------------------------------------------------------

GPU_CONFIGS = {
    # name: (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages)
    "n16": (128, 16, 32, 4, 3),
    "n32": (128, 32, 32, 4, 3),
    "n64": (128, 64, 32, 4, 3),
    "n128": (128, 128, 32, 8, 3),
}
#: wgrad: (BLOCK_M over output channels, BLOCK_N over c*r*s, BLOCK_K over n*p*q)
GPU_WGRAD_CONFIGS = {
    "m16": (16, 64, 64, 4, 3),
    "m32": (32, 64, 64, 4, 3),
    "m64": (64, 64, 64, 4, 3),
    "m128": (128, 64, 32, 8, 3),
}
REDUCE_BLOCK = 1 << 16 if INTERPRET else 1024
_INTERP_TILE = 1 << 18
#: The interpreter checks every int32 add/mul of a tile for overflow (a cast to int64, the op and
#: two compares: ~5 extra numpy passes) but skips int64 ones, so tile indices are int64 there.
#: On a GPU int32 index math is cheaper and the big offsets are widened explicitly.
_INTERP_IDX64 = INTERPRET
_GPU_PROGRAMS = 264  # ~2 waves on an H100 (132 SMs): enough parallel work for the split wgrad


def _pick(table, prefix: str, channels: int):
    for size in (16, 32, 64):
        if channels <= size:
            return table[f"{prefix}{size}"]
    return table[f"{prefix}128"]


def _clamp_pow2(n: int, lo: int, hi: int) -> int:
    return min(hi, max(lo, next_pow2(n)))


def _interp_gemm(pixels: int, channels: int, loop: int):
    bn = _clamp_pow2(channels, 16, 128)
    bk = _clamp_pow2(loop, 16, 512)
    bm = _clamp_pow2(pixels, 16, max(16, _INTERP_TILE // bk))
    return bm, bn, bk, 1, 1


def _gemm_config(pixels: int, channels: int, loop: int):
    return _interp_gemm(pixels, channels, loop) if INTERPRET else _pick(GPU_CONFIGS, "n", channels)


def _wgrad_config(rows: int, cols: int, loop: int):
    if INTERPRET:
        bm = _clamp_pow2(rows, 16, 128)
        bn = _clamp_pow2(cols, 16, 512)
        bk = _clamp_pow2(loop, 16, max(16, _INTERP_TILE // bn))
        return bm, bn, bk, 1, 1
    return _pick(GPU_WGRAD_CONFIGS, "m", rows)


def _precision(dtype: torch.dtype) -> str:
    # input_precision only matters for fp32 operands; 16-bit tiles use tensor cores regardless.
    return _runtime.dot_precision() if dtype == torch.float32 else "tf32"


def out_size(size: int, kernel: int, stride: int, pad: int, dil: int) -> int:
    return (size + 2 * pad - dil * (kernel - 1) - 1) // stride + 1


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
    bm, bn, bk, warps, stages = _gemm_config(N * P * Q, KG, CG * R * S)
    grid = (triton.cdiv(N * P * Q, bm), triton.cdiv(KG, bn), groups)
    conv2d_fwd_kernel[grid](
        x, w, b.contiguous() if b is not None else y, y, z if z is not None else y,
        N, H, W, P, Q, R, S, CG, KG,
        *x.stride(), *w.stride(), *y.stride(),
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        float(alpha),
        ACT=act, HAS_BIAS=b is not None, SAVE_Z=save_z,
        PRECISION=_precision(x.dtype), UPCAST=low_precision_dot_upcast(x.dtype), IDX64=_INTERP_IDX64,
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
    prec, upcast = _precision(w.dtype), low_precision_dot_upcast(w.dtype)
    conv = (stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1])
    dx = dw = db = None
    if need_dx:
        dx = torch.empty(x_shape, device=dy.device, dtype=dy.dtype)
        if dx.numel():
            if dy.numel() == 0 or KG == 0:
                dx.zero_()
            else:
                bm, bn, bk, warps, stages = _gemm_config(N * H * W, CG, KG * R * S)
                conv2d_bwd_dx_kernel[(triton.cdiv(N * H * W, bm), triton.cdiv(CG, bn), groups)](
                    dy, s, w, dx, N, H, W, P, Q, R, S, CG, KG,
                    *dy.stride(), *w.stride(), *dx.stride(), *conv, float(alpha),
                    ACT=act, UNIT_STRIDE=tuple(stride) == (1, 1), PRECISION=prec, UPCAST=upcast, IDX64=_INTERP_IDX64,
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
        tiles = triton.cdiv(KG, bm) * triton.cdiv(crs, bn)
        chunks = triton.cdiv(NPQ, bk)
        split = 1 if INTERPRET else max(1, min(chunks, triton.cdiv(_GPU_PROGRAMS, tiles * groups)))
        per_split = triton.cdiv(chunks, split)
        split = triton.cdiv(chunks, per_split)  # no empty splits
        if split == 1:
            dw_out = torch.empty(w.shape, device=dy.device, dtype=w.dtype) if run_dw else None
            db_out = torch.empty((K,), device=dy.device, dtype=w.dtype) if need_db else None
        else:  # fp32 partials, summed below in a fixed order
            dw_out = torch.empty((split, K, crs), device=dy.device, dtype=torch.float32) if run_dw else None
            db_out = torch.empty((split, K), device=dy.device, dtype=torch.float32) if need_db else None
        xx = x if run_dw else dy
        conv2d_bwd_dw_kernel[(tiles, split, groups)](
            dy, s, xx, dw_out if run_dw else dy, db_out if need_db else dy,
            N, H, W, P, Q, R, S, CG if run_dw else 1, KG, K,
            *dy.stride(), *xx.stride(),
            K * crs, crs, K, *conv, per_split, float(alpha),
            ACT=act, HAS_DW=run_dw, HAS_DB=need_db, PRECISION=prec, UPCAST=upcast, IDX64=_INTERP_IDX64,
            BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages,
        )
        if split > 1:
            dw_out = _reduce(dw_out, w.dtype).reshape(w.shape) if run_dw else None
            db_out = _reduce(db_out, w.dtype) if need_db else None
        if need_dw:
            dw = dw_out if run_dw else torch.zeros(w.shape, device=dy.device, dtype=w.dtype)
        db = db_out
    return dx, dw, db


def _reduce(ws: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    split = ws.shape[0]
    L = ws[0].numel()
    out = torch.empty(ws.shape[1:], device=ws.device, dtype=dtype)
    conv2d_bwd_reduce_kernel[(triton.cdiv(L, REDUCE_BLOCK),)](ws, out, L, split, BLOCK=REDUCE_BLOCK)
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
                c = dict(ACT=act, HAS_BIAS=True, SAVE_Z=True, PRECISION=prec, UPCAST=False, IDX64=False,
                         BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)
                specs.append(AotSpec(f"conv2d_fwd_kernel[{tag}]", conv2d_fwd_kernel,
                                     signature(conv2d_fwd_kernel, types(conv2d_fwd_kernel, p), c), c,
                                     warps, stages, archs=archs))
                for unit in ((True, False) if act == 6 and cname in ("n16", "n128") else (True,)):
                    c = dict(ACT=act, UNIT_STRIDE=unit, PRECISION=prec, UPCAST=False, IDX64=False,
                             BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)
                    specs.append(AotSpec(f"conv2d_bwd_dx_kernel[{tag}/unit{int(unit)}]", conv2d_bwd_dx_kernel,
                                         signature(conv2d_bwd_dx_kernel, types(conv2d_bwd_dx_kernel, p), c), c,
                                         warps, stages, archs=archs if unit else (90,)))
        for cname, cfg in GPU_WGRAD_CONFIGS.items():
            if only and cname not in only:
                continue
            bm, bn, bk, warps, stages = cfg
            # split partials are fp32; the dtype-specific variant is the unsplit direct write
            for out_t in sorted({p, "*fp32"}):
                tag = f"{dtype}/{prec}/{cname}/act6/out{out_t[1:]}"
                c = dict(ACT=6, HAS_DW=True, HAS_DB=True, PRECISION=prec, UPCAST=False, IDX64=False,
                         BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)
                t = types(conv2d_bwd_dw_kernel, p)
                t.update(dw_ptr=out_t, db_ptr=out_t)
                specs.append(AotSpec(f"conv2d_bwd_dw_kernel[{tag}]", conv2d_bwd_dw_kernel,
                                     signature(conv2d_bwd_dw_kernel, t, c), c, warps, stages,
                                     archs=(90, 80) if base else (90,)))
        if dtype == "fp32" and prec == "tf32":
            continue  # the reduction has no dot: same kernel as fp32/ieee
        c = dict(BLOCK=1024)
        specs.append(AotSpec(f"conv2d_bwd_reduce_kernel[{dtype}]", conv2d_bwd_reduce_kernel,
                             signature(conv2d_bwd_reduce_kernel,
                                       {"ws_ptr": "*fp32", "out_ptr": p, "L": "i32", "SPLIT": "i32"}, c),
                             c, 4, 1, archs=(90, 80) if dtype == "fp32" else (90,)))
    return specs


AOT_SPECS = _aot_specs()
