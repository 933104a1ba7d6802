"""Fused linear + activation: ``y = act(x @ W.T + b)`` and its backward, as three GEMM kernels.

Shapes: x (M, K), W (N, K) (PyTorch's ``(out, in)``), b (N,), y (M, N).

- forward   tiles (M, N), loops K. Bias add and activation run in the epilogue on the fp32
            accumulator, so z = x @ W.T + b never makes a round trip through memory unless the
            derivative needs it (``SAVE_Z``, see ``activations.saves_input``).
- dgrad     dX = dZ @ W: tiles (M, K), loops N. dZ = dY * act'(s) is formed tile by tile from
            dY and the saved s (y or z) inside the loop: no separate elementwise pass over dY.
- wgrad     dW = dZ.T @ X: tiles (N, K), loops M, forming dZ the same way; the programs of the
            first K-block also sum dZ over M for db (bias gradient folded in, no extra pass).
            Big problems form dZ once in an elementwise pass instead (see ``DZ_PASS_MIN_ELEMENTS``).

All accumulation is fp32. fp16/bf16 tiles go to tensor cores as they are; fp32 tiles use
``PRECISION`` ("ieee" or "tf32", see ``tinydl.set_float32_matmul_precision``). Row offsets are
int64: M * K can pass 2**31 elements for big batches.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tinydl import _runtime

from . import elementwise as _ew
from ._common import (
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
def _grouped_tile(pid, num_a, num_b, GROUP: tl.constexpr):
    # Walk tiles in groups of GROUP rows so neighbouring programs share operand tiles in L2.
    per_group = GROUP * num_b
    first_a = (pid // per_group) * GROUP
    size_a = tl.minimum(num_a - first_a, GROUP)
    pid_a = first_a + (pid % per_group) % size_a
    pid_b = (pid % per_group) // size_a
    return pid_a, pid_b


@triton.jit
def linear_fwd_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, z_ptr,
    M, N, K,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_ym, stride_yn,
    alpha,
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, SAVE_Z: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    EPILOGUE_HALVES: tl.constexpr,
):
    pid_m, pid_n = _grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    x_ptrs = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm + offs_k[None, :] * stride_xk
    # W tile read as (BLOCK_K, BLOCK_N), i.e. W.T, straight from the (N, K) layout.
    w_ptrs = w_ptr + offs_n[None, :].to(tl.int64) * stride_wn + offs_k[:, None] * stride_wk

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K  # the last K-block is partial: masked lanes load 0 and add nothing
        a = tl.load(x_ptrs, mask=mask_m[:, None] & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(w_ptrs, mask=(offs_k[:, None] < k_left) & mask_n[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk

    if EPILOGUE_HALVES:
        # A 128x256 fp32 accumulator is 128 registers a thread; gelu's erf on all of it at once
        # spills on sm_90. Finishing the tile one 128x128 half at a time keeps it in registers.
        halves = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))
        offs_h = pid_n * BLOCK_N + tl.arange(0, BLOCK_N // 2)
        _fwd_epilogue(halves[0], offs_m, offs_h, b_ptr, y_ptr, z_ptr, M, N, stride_ym, stride_yn, alpha,
                      ACT, HAS_BIAS, SAVE_Z)
        _fwd_epilogue(halves[1], offs_m, offs_h + BLOCK_N // 2, b_ptr, y_ptr, z_ptr, M, N, stride_ym, stride_yn,
                      alpha, ACT, HAS_BIAS, SAVE_Z)
    else:
        _fwd_epilogue(acc, offs_m, offs_n, b_ptr, y_ptr, z_ptr, M, N, stride_ym, stride_yn, alpha,
                      ACT, HAS_BIAS, SAVE_Z)


@triton.jit
def _fwd_epilogue(acc, offs_m, offs_n, b_ptr, y_ptr, z_ptr, M, N, stride_ym, stride_yn, alpha,
                  ACT: tl.constexpr, HAS_BIAS: tl.constexpr, SAVE_Z: tl.constexpr):
    """Bias, activation and the stores of one output tile (or part of one)."""
    mask_n = offs_n < N
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    out_offs = offs_m[:, None].to(tl.int64) * stride_ym + offs_n[None, :] * stride_yn
    mask = (offs_m < M)[:, None] & mask_n[None, :]
    if SAVE_Z:  # the derivative needs the pre-activation: one extra write of M*N elements
        tl.store(z_ptr + out_offs, acc.to(z_ptr.dtype.element_ty), mask=mask)
    y = act_fwd(acc, ACT, alpha)
    tl.store(y_ptr + out_offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dz_tile(dy_ptr, s_ptr, offs_m, offs_n, mask, stride_dym, stride_dyn, stride_sm, stride_sn,
             alpha, ACT: tl.constexpr):
    """dZ = dY * act'(s) for one (BLOCK_M, BLOCK_N) tile, in fp32."""
    dy = tl.load(dy_ptr + offs_m[:, None].to(tl.int64) * stride_dym + offs_n[None, :] * stride_dyn,
                 mask=mask, other=0.0).to(tl.float32)
    if ACT != 0:
        s = tl.load(s_ptr + offs_m[:, None].to(tl.int64) * stride_sm + offs_n[None, :] * stride_sn,
                    mask=mask, other=0.0).to(tl.float32)
        # where(): masked lanes must stay exactly 0 even if act'(0) is not finite-safe
        dy = tl.where(mask, dy * act_bwd(s, ACT, alpha), 0.0)
    return dy


@triton.jit
def linear_bwd_dx_kernel(
    dy_ptr, s_ptr, w_ptr, dx_ptr,
    M, N, K,
    stride_dym, stride_dyn, stride_sm, stride_sn, stride_wn, stride_wk, stride_dxm, stride_dxk,
    alpha,
    ACT: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_k = _grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(K, BLOCK_K), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_k = offs_k < K
    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for n in range(0, tl.cdiv(N, BLOCK_N)):
        offs_n = n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        dz = _dz_tile(dy_ptr, s_ptr, offs_m, offs_n, mask_m[:, None] & mask_n[None, :],
                      stride_dym, stride_dyn, stride_sm, stride_sn, alpha, ACT)
        w = tl.load(w_ptr + offs_n[:, None].to(tl.int64) * stride_wn + offs_k[None, :] * stride_wk,
                    mask=mask_n[:, None] & mask_k[None, :], other=0.0)
        if not UPCAST:  # tensor cores take dZ in the operands' dtype, as PyTorch rounds it
            dz = dz.to(w.dtype)
        else:
            w = w.to(tl.float32)
        acc = tl.dot(dz, w, acc, input_precision=PRECISION)
    tl.store(dx_ptr + offs_m[:, None].to(tl.int64) * stride_dxm + offs_k[None, :] * stride_dxk,
             acc.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_k[None, :])


@triton.jit
def linear_bwd_dw_kernel(
    dy_ptr, s_ptr, x_ptr, dw_ptr, db_ptr,
    M, N, K,
    stride_dym, stride_dyn, stride_sm, stride_sn, stride_xm, stride_xk, stride_dwn, stride_dwk,
    alpha,
    ACT: tl.constexpr, HAS_DW: tl.constexpr, HAS_DB: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_N: tl.constexpr,
):
    pid_n, pid_k = _grouped_tile(tl.program_id(0), tl.cdiv(N, BLOCK_N), tl.cdiv(K, BLOCK_K), GROUP_N)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_n = offs_n < N
    mask_k = offs_k < K
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    db = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for m in range(0, tl.cdiv(M, BLOCK_M)):
        offs_m = m * BLOCK_M + tl.arange(0, BLOCK_M)
        mask_m = offs_m < M
        dz = _dz_tile(dy_ptr, s_ptr, offs_m, offs_n, mask_m[:, None] & mask_n[None, :],
                      stride_dym, stride_dyn, stride_sm, stride_sn, alpha, ACT)
        if HAS_DB:
            db += tl.sum(dz, axis=0)
        if HAS_DW:
            x = tl.load(x_ptr + offs_m[:, None].to(tl.int64) * stride_xm + offs_k[None, :] * stride_xk,
                        mask=mask_m[:, None] & mask_k[None, :], other=0.0)
            if UPCAST:
                x = x.to(tl.float32)
            else:
                dz = dz.to(x.dtype)
            acc = tl.dot(tl.trans(dz), x, acc, input_precision=PRECISION)
    if HAS_DW:
        tl.store(dw_ptr + offs_n[:, None].to(tl.int64) * stride_dwn + offs_k[None, :] * stride_dwk,
                 acc.to(dw_ptr.dtype.element_ty), mask=mask_n[:, None] & mask_k[None, :])
    if HAS_DB:
        if pid_k == 0:  # every K-block computed the same sum; the first one writes it
            tl.store(db_ptr + offs_n, db.to(db_ptr.dtype.element_ty), mask=mask_n)


# ----------------------------------------------------------------------------------------------
# Launch configurations
#
# GPU: (BLOCK_a, BLOCK_b, BLOCK_loop, GROUP, num_warps, num_stages), chosen by a small heuristic
# per problem size and dtype (the same table is what the AOT test compiles for sm_80/sm_90).
# Interpreter: one program per up-to-256x1024 output tile and the longest loop chunk we can, since
# each program instance costs interpreter time while the numpy dot inside it is cheap.
# ----------------------------------------------------------------------------------------------

GPU_CONFIGS = {
    # name: (tile_a, tile_b, loop, group, warps, stages)
    "small": (64, 64, 32, 8, 4, 4),
    "fp32": (128, 128, 32, 8, 8, 3),
    "tf32": (128, 128, 32, 8, 8, 3),  # fp32 tiles are twice the bytes: half the K-step
    "mma": (128, 128, 64, 8, 8, 3),
    "mma_big": (128, 256, 64, 8, 8, 3),
}


def _gpu_config(a: int, b: int, dtype: torch.dtype):
    """Pick a GPU tile for an (a x b) output: small tiles when big ones would leave SMs idle."""
    if cdiv(a, 128) * cdiv(b, 128) < 100:
        return GPU_CONFIGS["small"]
    if dtype == torch.float32 and _runtime.dot_precision() == "ieee":
        return GPU_CONFIGS["fp32"]  # no tensor cores: FMA throughput bound, smaller K-step
    if dtype == torch.float32:
        return GPU_CONFIGS["tf32"]
    if a >= 2048 and b >= 2048:
        return GPU_CONFIGS["mma_big"]
    return GPU_CONFIGS["mma"]


def _interp_config(a: int, b: int, loop: int):
    # As few programs as possible: an output tile up to 256 x 1024 (numpy does the work inside one
    # program; what costs is the Python executing each program's ~30 Triton ops).
    ta = min(256, max(16, next_pow2(a)))
    tb = min(1024, max(16, next_pow2(b)))
    return ta, tb, min(1024, max(16, next_pow2(loop))), 8, 1, 1


def _config(a: int, b: int, loop: int, dtype: torch.dtype):
    return _interp_config(a, b, loop) if INTERPRET else _gpu_config(a, b, dtype)


#: Forming dZ = dY * act'(s) inside the backward GEMM loops (the fused path) evaluates it once per
#: column block of dX and once per K-block of dW: about 2 * K / 256 times per element, and reads s
#: as often. While launches dominate (MNIST sizes) that is free and saves a kernel; at 4096^3 it is
#: 32 evaluations of gelu' (erf + exp) per element, more CUDA-core work than the GEMMs' own time on
#: an H100. From DZ_PASS_MIN_ELEMENTS outputs and K >= DZ_PASS_MIN_K, one elementwise pass writes dZ
#: (in dY's dtype, as PyTorch rounds it) and both GEMMs read it as a plain operand. The thresholds
#: are estimates until a GPU run of ``tools/bench.py --family linear`` tunes them. The interpreter
#: never takes the pass: its cost is per program, not per element.
DZ_PASS_MIN_ELEMENTS = 1 << 62 if INTERPRET else 1 << 20
DZ_PASS_MIN_K = 512


def _epilogue_halves(block_n: int, act: int) -> bool:
    """Finish a 256-wide output tile in two halves: sigmoid and up spill on sm_90 otherwise, while
    none/relu/leaky_relu fit whole (see the forward kernel)."""
    return block_n >= 256 and act >= ACTIVATIONS["sigmoid"]


def _dz_pass(M: int, N: int, K: int, act: int) -> bool:
    return act != ACTIVATIONS["none"] and M * N >= DZ_PASS_MIN_ELEMENTS and K >= DZ_PASS_MIN_K


def _grid(a: int, b: int, ta: int, tb: int):
    return (cdiv(a, ta) * cdiv(b, tb),)


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------

def linear_fwd(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, activation: str = "none",
               alpha: float = 0.01, save_z: bool = False):
    """y = act(x @ w.T + b) for 2-D x (M, K). Returns (y, z) with z the pre-activation or None.

    Inputs are assumed validated (``tinydl.functional.linear`` does that); any strides work.
    """
    act = activation_code(activation)
    M, K = x.shape
    N = w.shape[0]
    y = torch.empty((M, N), device=x.device, dtype=x.dtype)
    z = torch.empty_like(y) if save_z else None
    if M == 0 or N == 0:
        return y, z
    bm, bn, bk, group, warps, stages = _config(M, N, K, x.dtype)
    linear_fwd_kernel[_grid(M, N, bm, bn)](
        x, w, b.contiguous() if b is not None else y, y, z if z is not None else y,
        M, N, K,
        x.stride(0), x.stride(1), w.stride(0), w.stride(1), y.stride(0), y.stride(1),
        float(alpha),
        ACT=act, HAS_BIAS=b is not None, SAVE_Z=save_z,
        PRECISION=dot_input_precision(x.dtype), UPCAST=low_precision_dot_upcast(x.dtype),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=group,
        EPILOGUE_HALVES=_epilogue_halves(bn, act),
        num_warps=warps, num_stages=stages,
    )
    return y, z


def linear_bwd(dy: torch.Tensor, saved: torch.Tensor | None, x: torch.Tensor | None, w: torch.Tensor,
               activation: str = "none", alpha: float = 0.01,
               need_dx: bool = True, need_dw: bool = True, need_db: bool = False):
    """Gradients of ``y = act(x @ w.T + b)``.

    ``saved`` is y or z (whichever ``activations.saves_input`` names; unused for "none");
    ``x`` is needed only for dW. Returns (dx, dw, db), None where not asked for.
    """
    act = activation_code(activation)
    M, N = dy.shape
    K = w.shape[1]
    s = saved if act != ACTIVATIONS["none"] else dy
    if (need_dx or need_dw) and _dz_pass(M, N, K, act):
        dy = _ew.activation_bwd(dy, s, activation, alpha)  # dZ; the GEMMs below see no activation
        act, s = ACTIVATIONS["none"], dy
    dx = dw = db = None
    prec, upcast = dot_input_precision(w.dtype), low_precision_dot_upcast(w.dtype)
    if need_dx:
        dx = torch.empty((M, K), device=dy.device, dtype=dy.dtype)
        if M and K:
            bm, bk, bn, group, warps, stages = _config(M, K, N, w.dtype)
            linear_bwd_dx_kernel[_grid(M, K, bm, bk)](
                dy, s, w, dx, M, N, K,
                dy.stride(0), dy.stride(1), s.stride(0), s.stride(1), w.stride(0), w.stride(1),
                dx.stride(0), dx.stride(1), float(alpha),
                ACT=act, PRECISION=prec, UPCAST=upcast,
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=group, num_warps=warps, num_stages=stages,
            )
    if need_dw or need_db:
        # An empty batch contributes nothing: the gradients are zeros, as in PyTorch.
        alloc = torch.zeros if M == 0 else torch.empty
        dw = alloc((N, K), device=dy.device, dtype=w.dtype) if need_dw else None
        db = alloc((N,), device=dy.device, dtype=w.dtype) if need_db else None
        run_dw = need_dw and K > 0
        if M and N and (run_dw or need_db):
            bn, bk, bm, group, warps, stages = _config(N, max(K, 1), M, w.dtype)
            kblocks = cdiv(K, bk) if run_dw else 1  # db alone: one program per N-block
            xx, dd = (x, dw) if run_dw else (dy, dy)  # placeholders are never dereferenced
            linear_bwd_dw_kernel[(cdiv(N, bn) * kblocks,)](
                dy, s, xx, dd, db if need_db else dy, M, N, K if run_dw else 1,
                dy.stride(0), dy.stride(1), s.stride(0), s.stride(1), xx.stride(0), xx.stride(1),
                dd.stride(0), dd.stride(1), float(alpha),
                ACT=act, HAS_DW=run_dw, HAS_DB=need_db, PRECISION=prec, UPCAST=upcast,
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_N=group, num_warps=warps, num_stages=stages,
            )
    return dx, dw, db


# ----------------------------------------------------------------------------------------------
# Configurations for the ahead-of-time GPU compile check
# ----------------------------------------------------------------------------------------------

def _aot_specs():
    specs = []

    def add(kernel, name, types, consts, cfg, archs):
        ta, tb, loop, group, warps, stages = cfg
        specs.append(AotSpec(name, kernel, signature(kernel, types, consts), consts, warps, stages,
                             archs=archs))

    # Every tile config the GPU heuristic can pick, per dtype, with gelu (the heaviest epilogue)
    # for sm_90; sm_80 gets the small tiles and one tensor-core config per dtype. The other
    # activations are the same code path (compiled through the elementwise kernels), except that
    # mma_big finishes none/relu/leaky_relu in one piece: bf16 mma_big also compiles with none.
    for dtype, prec, cfgs in (("fp32", "ieee", ["small", "fp32"]), ("fp32", "tf32", ["small", "tf32"]),
                              ("bf16", "tf32", ["small", "mma", "mma_big"]),
                              ("fp16", "tf32", ["mma", "mma_big"])):
        p = f"*{dtype}"
        for cname in cfgs:
            cfg = GPU_CONFIGS[cname]
            ta, tb, loop, group, _, _ = cfg
            archs = (90, 80) if cname in ("small", "mma") else (90,)
            acts = [0, 6] if (cname == "small" and prec == "ieee") or (cname == "mma_big" and dtype == "bf16") else [6]
            for act in acts:
                tag = f"{dtype}/{prec}/{cname}/act{act}"
                add(linear_fwd_kernel, f"linear_fwd_kernel[{tag}]",
                    {"x_ptr": p, "w_ptr": p, "b_ptr": p, "y_ptr": p, "z_ptr": p, "M": "i32", "N": "i32",
                     "K": "i32", "stride_xm": "i32", "stride_xk": "i32", "stride_wn": "i32",
                     "stride_wk": "i32", "stride_ym": "i32", "stride_yn": "i32", "alpha": "fp32"},
                    dict(ACT=act, HAS_BIAS=True, SAVE_Z=True, PRECISION=prec, UPCAST=False,
                         BLOCK_M=ta, BLOCK_N=tb, BLOCK_K=loop, GROUP_M=group,
                         EPILOGUE_HALVES=_epilogue_halves(tb, act)),
                    cfg, archs)
                add(linear_bwd_dx_kernel, f"linear_bwd_dx_kernel[{tag}]",
                    {"dy_ptr": p, "s_ptr": p, "w_ptr": p, "dx_ptr": p, "M": "i32", "N": "i32", "K": "i32",
                     "stride_dym": "i32", "stride_dyn": "i32", "stride_sm": "i32", "stride_sn": "i32",
                     "stride_wn": "i32", "stride_wk": "i32", "stride_dxm": "i32", "stride_dxk": "i32",
                     "alpha": "fp32"},
                    dict(ACT=act, PRECISION=prec, UPCAST=False,
                         BLOCK_M=ta, BLOCK_N=loop, BLOCK_K=tb, GROUP_M=group), cfg, archs)
                add(linear_bwd_dw_kernel, f"linear_bwd_dw_kernel[{tag}]",
                    {"dy_ptr": p, "s_ptr": p, "x_ptr": p, "dw_ptr": p, "db_ptr": p, "M": "i32", "N": "i32",
                     "K": "i32", "stride_dym": "i32", "stride_dyn": "i32", "stride_sm": "i32",
                     "stride_sn": "i32", "stride_xm": "i32", "stride_xk": "i32", "stride_dwn": "i32",
                     "stride_dwk": "i32", "alpha": "fp32"},
                    dict(ACT=act, HAS_DW=True, HAS_DB=True, PRECISION=prec, UPCAST=False,
                         BLOCK_M=loop, BLOCK_N=ta, BLOCK_K=tb, GROUP_N=group), cfg, archs)
    return specs


AOT_SPECS = _aot_specs()
