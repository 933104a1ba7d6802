"""Elementwise kernels: ``add`` (gradient accumulation in autograd), standalone activations,
broadcasting binary ops, sum/mean reductions and dropout."""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._common import ELEMENTWISE_BLOCK, INTERPRET, AotSpec, cdiv, elementwise_grid, next_pow2, signature
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


# ---------------------------------------------------------------------------------------------
# Broadcasting binary ops: out = a OP b over up to 4 (coalesced) dims with per-operand strides,
# so a broadcast operand (stride 0) or a transposed one is read in place, never materialised.
# ---------------------------------------------------------------------------------------------

OP_ADD, OP_MUL, OP_DIV, OP_DIV_BWD_B = range(4)
_MAX_DIMS = 4
# Sizes and strides change with every shape; specialising on them (==1, %16) would compile a
# variant per layout for no gain in an elementwise kernel.
_BINARY_NOSPEC = ["S1", "S2", "S3"] + [f"s{o}{i}" for o in "abc" for i in range(4)]


@triton.jit(do_not_specialize=_BINARY_NOSPEC)
def binary_fwd_kernel(a_ptr, b_ptr, c_ptr, out_ptr, n, S1, S2, S3,
                      sa0, sa1, sa2, sa3, sb0, sb1, sb2, sb3, sc0, sc1, sc2, sc3, alpha,
                      OP: tl.constexpr, BLOCK: tl.constexpr):
    # OP: 0 a + alpha*b (add/sub), 1 a*b, 2 a/b, 3 -(a*b)/(c*c) (d(x/y)/dy with a = grad).
    # out is contiguous over (S0, S1, S2, S3); int64 offsets for large outputs.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    i3 = offs % S3
    t = offs // S3
    i2 = t % S2
    t = t // S2
    i1 = t % S1
    i0 = t // S1
    a = tl.load(a_ptr + i0 * sa0 + i1 * sa1 + i2 * sa2 + i3 * sa3, mask=mask).to(tl.float32)
    # other=1: masked lanes divide by 1, not 0
    b = tl.load(b_ptr + i0 * sb0 + i1 * sb1 + i2 * sb2 + i3 * sb3, mask=mask, other=1.0).to(tl.float32)
    if OP == 0:
        r = a + alpha * b
    elif OP == 1:
        r = a * b
    elif OP == 2:
        r = tl.div_rn(a, b)  # IEEE division, as PyTorch (the GPU default is approximate)
    else:
        c = tl.load(c_ptr + i0 * sc0 + i1 * sc1 + i2 * sc2 + i3 * sc3, mask=mask, other=1.0).to(tl.float32)
        r = tl.div_rn(-(a * b), c * c)
    tl.store(out_ptr + offs, r.to(out_ptr.dtype.element_ty), mask=mask)


def _coalesce(shape, strides_list):
    """Drop size-1 dims and merge dims that are contiguous in every operand."""
    dims: list[tuple[int, list[int]]] = []
    for i, s in enumerate(shape):
        if s == 1:
            continue
        sts = [st[i] for st in strides_list]
        if dims and all(p == q * s for p, q in zip(dims[-1][1], sts)):
            dims[-1] = (dims[-1][0] * s, sts)
        else:
            dims.append((s, sts))
    return dims


def binary(a: torch.Tensor, b: torch.Tensor, op: int, alpha: float = 1.0, c: torch.Tensor | None = None,
           out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """out = a OP b (see ``binary_fwd_kernel``) with PyTorch broadcasting; any strides."""
    ops = [a, b] + ([c] if c is not None else [])
    shape = torch.broadcast_shapes(*(t.shape for t in ops))
    out = torch.empty(shape, dtype=out_dtype or a.dtype, device=a.device)
    n = out.numel()
    if not n:
        return out
    ops = [t.expand(shape) for t in ops]
    dims = _coalesce(shape, [t.stride() for t in ops])
    if len(dims) > _MAX_DIMS:  # rare: > 4 dims no layout merges; copy the operands once
        ops = [t.contiguous() for t in ops]
        dims = _coalesce(shape, [t.stride() for t in ops])
    dims = [(1, [0] * len(ops))] * (_MAX_DIMS - len(dims)) + dims
    sizes = [d[0] for d in dims]
    st = [[d[1][k] for d in dims] for k in range(len(ops))]
    if c is None:
        ops.append(ops[0])
        st.append([0] * _MAX_DIMS)
    binary_fwd_kernel[elementwise_grid(n)](ops[0], ops[1], ops[2], out, n, sizes[1], sizes[2], sizes[3],
                                           *st[0], *st[1], *st[2], float(alpha), OP=op, BLOCK=ELEMENTWISE_BLOCK)
    return out


# ---------------------------------------------------------------------------------------------
# Sum / mean over the middle dim of an (M, R, N) strided view: out[m, n] = scale * sum_r x / div
# ---------------------------------------------------------------------------------------------

@triton.jit(do_not_specialize=["R", "N", "stride_m", "stride_r", "stride_n"])
def sum_fwd_kernel(x_ptr, out_ptr, n_out, R, N, stride_m, stride_r, stride_n, scale, divisor,
                   BLOCK_O: tl.constexpr, BLOCK_R: tl.constexpr):
    # Each program owns BLOCK_O outputs (flat over M*N) and walks R in BLOCK_R chunks, fp32 acc.
    o = tl.program_id(0).to(tl.int64) * BLOCK_O + tl.arange(0, BLOCK_O)
    omask = o < n_out
    base = (o // N) * stride_m + (o % N) * stride_n
    acc = tl.zeros([BLOCK_O, BLOCK_R], dtype=tl.float32)
    for r0 in range(0, R, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R).to(tl.int64)
        mask = omask[:, None] & (r < R)[None, :]
        acc += tl.load(x_ptr + base[:, None] + r[None, :] * stride_r, mask=mask, other=0.0).to(tl.float32)
    s = tl.div_rn(tl.sum(acc, axis=1) * scale, divisor)
    tl.store(out_ptr + o, s.to(out_ptr.dtype.element_ty), mask=omask)


# interpreter: one big [BLOCK_O, BLOCK_R] tile per program (numpy does the work)
_SUM_TILE = 1 << 16


def _sum_config(n_out: int, R: int, N: int) -> tuple[int, int, int]:
    if INTERPRET:
        block_r = min(next_pow2(R), 1 << 12)
        block_o = max(1, min(next_pow2(n_out), _SUM_TILE // block_r))
        return block_o, block_r, 4
    if N == 1:  # reducing the innermost dim: lanes run along r (coalesced)
        return 16, 128, 4
    return 128, 16, 4  # lanes along the outputs, which are contiguous in n


def sum_mrn(x: torch.Tensor, M: int, R: int, N: int, strides: tuple[int, int, int], scale: float = 1.0,
            divisor: float = 1.0, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """(M, N) contiguous: scale * sum over r of x[m, r, n] / divisor (x addressed by ``strides``)."""
    out = torch.empty((M, N), dtype=out_dtype or x.dtype, device=x.device)
    n_out = M * N
    if n_out:
        bo, br, warps = _sum_config(n_out, R, N)
        sum_fwd_kernel[(cdiv(n_out, bo),)](x, out, n_out, R, N, *strides, float(scale), float(divisor),
                                                  BLOCK_O=bo, BLOCK_R=br, num_warps=warps)
    return out


def sum_dims(x: torch.Tensor, dims: tuple[int, ...], keepdim: bool = False, scale: float = 1.0,
             divisor: float = 1.0) -> torch.Tensor:
    """PyTorch's ``x.sum(dims, keepdim) * scale / divisor`` (dims normalised, sorted, unique)."""
    shape = list(x.shape)
    if not dims:  # nothing reduced: still one pass for the scale (and a fresh tensor)
        return sum_mrn(x.contiguous(), x.numel(), 1, 1, (1, 1, 1), scale, divisor).reshape(x.shape)
    x = x.contiguous()
    # groups of consecutive reduced dims, reduced innermost group first (fp32 in between)
    groups: list[list[int]] = []
    for d in dims:
        if groups and groups[-1][-1] == d - 1:
            groups[-1].append(d)
        else:
            groups.append([d])
    cur = x
    for gi, grp in enumerate(reversed(groups)):
        last = gi == len(groups) - 1
        d0, d1 = grp[0], grp[-1]
        M, R, N = math.prod(shape[:d0]), math.prod(shape[d0:d1 + 1]), math.prod(shape[d1 + 1:])
        cur = sum_mrn(cur, M, R, N, (R * N, N, 1), scale if last else 1.0, divisor if last else 1.0,
                      out_dtype=x.dtype if last else torch.float32)
        shape = shape[:d0] + [1] * (d1 - d0 + 1) + shape[d1 + 1:]
        cur = cur.reshape(shape)
    if not keepdim:
        cur = cur.reshape([s for i, s in enumerate(shape) if i not in dims])
    return cur


def sum_to(g: torch.Tensor, shape: tuple[int, ...], scale: float = 1.0) -> torch.Tensor:
    """Reduce a broadcast gradient back to ``shape`` (sum over broadcast dims), times ``scale``."""
    shape = tuple(shape)
    lead = g.ndim - len(shape)
    dims = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape) if s == 1 and g.shape[lead + i] != 1)
    if not dims and scale == 1.0:
        return g
    return sum_dims(g, dims, keepdim=False, scale=scale).reshape(shape)


# ---------------------------------------------------------------------------------------------
# Dropout: the mask is tl.rand(seed, offset) >= p, regenerated in backward from the same seed
# ---------------------------------------------------------------------------------------------

@triton.jit
def dropout_fwd_kernel(x_ptr, y_ptr, n, p, scale, seed, BLOCK: tl.constexpr):
    # Also the backward (x = dy, y = dx): the same (seed, offset) pairs give the same mask.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask).to(tl.float32)
    keep = tl.rand(seed, offs) >= p  # uniform in [0, 1): kept with probability 1 - p
    # x * (0 or scale), as PyTorch: a dropped NaN or inf stays NaN, a dropped negative is -0.0
    tl.store(y_ptr + offs, (x * tl.where(keep, scale, 0.0)).to(y_ptr.dtype.element_ty), mask=mask)


def dropout_fwd(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """y = x * mask / (1 - p), mask from (seed, element index); x made contiguous."""
    x = x.contiguous()
    y = torch.empty_like(x)
    if x.numel():
        scale = 0.0 if p >= 1 else 1.0 / (1.0 - p)
        dropout_fwd_kernel[elementwise_grid(x.numel())](x, y, x.numel(), float(p), scale, int(seed),
                                                        BLOCK=ELEMENTWISE_BLOCK)
    return y


def dropout_bwd(dy: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """dx = dy * mask / (1 - p) with the forward's mask, regenerated from its seed."""
    return dropout_fwd(dy, p, seed)


def _more_specs():
    specs = []
    for dt in ("fp32", "bf16"):
        ptr = f"*{dt}"
        for op in range(4):
            c = {"OP": op, "BLOCK": 1024}
            types = {"a_ptr": ptr, "b_ptr": ptr, "c_ptr": ptr, "out_ptr": ptr, "n": "i64", "alpha": "fp32"}
            types.update({k: "i64" for k in _BINARY_NOSPEC})
            specs.append(AotSpec(f"binary_fwd_kernel[{dt}/op{op}]", binary_fwd_kernel,
                                 signature(binary_fwd_kernel, types, c), c,
                                 archs=(90, 80) if dt == "fp32" and op == 0 else (90,)))
        for bo, br in ((16, 128), (128, 16)):
            for out_dt in {dt, "fp32"}:
                c = {"BLOCK_O": bo, "BLOCK_R": br}
                types = {"x_ptr": ptr, "out_ptr": f"*{out_dt}", "n_out": "i64", "R": "i64", "N": "i64",
                         "stride_m": "i64", "stride_r": "i64", "stride_n": "i64", "scale": "fp32", "divisor": "fp32"}
                specs.append(AotSpec(f"sum_fwd_kernel[{dt}->{out_dt}/{bo}x{br}]", sum_fwd_kernel,
                                     signature(sum_fwd_kernel, types, c), c,
                                     archs=(90, 80) if dt == "fp32" and bo == 16 else (90,)))
        c = {"BLOCK": 1024}
        specs.append(AotSpec(f"dropout_fwd_kernel[{dt}]", dropout_fwd_kernel,
                             signature(dropout_fwd_kernel, {"x_ptr": ptr, "y_ptr": ptr, "n": "i64", "p": "fp32",
                                                            "scale": "fp32", "seed": "i32"}, c), c,
                             archs=(90, 80) if dt == "fp32" else (90,)))
    return specs


AOT_SPECS += _more_specs()
