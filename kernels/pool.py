"""2-D max and average pooling, forward and backward, PyTorch semantics.

Shapes: x (N, C, H, W) with any strides, y (N, C, OH, OW) contiguous. One program handles a
block of output (forward) or input (backward) elements and loops over the kH*kW window taps.

- max forward records the argmax of every window as its flat position h*W + w in the plane
  (int32). A tap replaces the running max when it is larger, or NaN (so a NaN wins and stays,
  as in PyTorch: ``tl.maximum`` would drop it), or when it is the window's first valid tap
  (so an all -inf window still points at a real element). Ties keep the first maximum.
- max backward gathers: each input element visits the windows that contain it (at most
  kH*kW of them, found by exact division by the stride) and sums dy of those whose argmax is
  itself. Deterministic, no atomics.
- avg forward/backward: the same window walk; the divisor follows PyTorch (count_include_pad,
  ceil-mode windows clipped to the padded input, divisor_override).

Offsets along N*C are int64: N*C*H*W can pass 2**31 elements.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import INTERP_IDX64, INTERPRET, AotSpec, cdiv, signature

# The interpreter runs one program as numpy ops on whole blocks: one big block; 512 lanes on GPU.
POOL_BLOCK = 1 << 17 if INTERPRET else 512
#: launch options of every pool kernel, the same ones the AOT check compiles (no tl.dot: nothing
#: for a software pipeline to overlap, so one stage). Two lanes a thread: with 4 warps (four) the
#: kH*kW-tap backward spilled on sm_90 for the 3x3/stride-2 ResNet stem.
POOL_LAUNCH = dict(num_warps=8, num_stages=1)
#: Max-pool backward over disjoint windows (LeNet's 2x2/stride 2) as a scatter of dy to the argmax:
#: ~4x fewer elements and far fewer ops than the kH*kW-tap gather, which matters in the
#: interpreter. A GPU keeps the gather (no zero-fill pass; the extra taps are cache hits).
_SCATTER_BWD = INTERPRET


@triton.jit
def max_pool2d_fwd_kernel(
    x_ptr, y_ptr, idx_ptr,
    total, C, H, W, OH, OW,
    stride_xn, stride_xc, stride_xh, stride_xw,
    KH, KW, str_h, str_w, pad_h, pad_w, dil_h, dil_w,
    SAVE_IDX: tl.constexpr, IDX64: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    ohw = OH * OW
    nc = offs // ohw
    rem = offs - nc * ohw
    if not IDX64:  # see _common.INTERP_IDX64
        rem = rem.to(tl.int32)
    oh = rem // OW
    ow = rem - oh * OW
    n = nc // C
    base = x_ptr + n * stride_xn + (nc - n * C) * stride_xc
    best = tl.full((BLOCK,), float("-inf"), tl.float32)
    arg = tl.full((BLOCK,), -1, tl.int64 if IDX64 else tl.int32)
    for r in range(0, KH):
        h = oh * str_h - pad_h + r * dil_h
        ok_h = mask & (h >= 0) & (h < H)
        for s in range(0, KW):
            w = ow * str_w - pad_w + s * dil_w
            ok = ok_h & (w >= 0) & (w < W)
            v = tl.load(base + h * stride_xh + w * stride_xw, mask=ok, other=float("-inf")).to(tl.float32)
            take = ok & ((v > best) | (v != v) | (arg < 0))
            best = tl.where(take, v, best)
            arg = tl.where(take, h * W + w, arg)
    tl.store(y_ptr + offs, best.to(y_ptr.dtype.element_ty), mask=mask)
    if SAVE_IDX:
        tl.store(idx_ptr + offs, arg.to(tl.int32), mask=mask)


@triton.jit
def max_pool2d_bwd_kernel(
    dy_ptr, idx_ptr, dx_ptr,
    total, C, H, W, OH, OW,
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    KH, KW, str_h, str_w, pad_h, pad_w, dil_h, dil_w,
    IDX64: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # dx elements (contiguous)
    mask = offs < total
    hw = H * W
    nc = offs // hw
    pos = offs - nc * hw  # h*W + w: what the argmax records
    if not IDX64:  # see _common.INTERP_IDX64
        pos = pos.to(tl.int32)
    h = pos // W
    w = pos - h * W
    n = nc // C
    dy_base = dy_ptr + n * stride_dyn + (nc - n * C) * stride_dyc
    idx_base = idx_ptr + nc * (OH * OW)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for r in range(0, KH):
        th = h + pad_h - r * dil_h
        oh = th // str_h
        ok_h = mask & (th >= 0) & (oh * str_h == th) & (oh < OH)
        for s in range(0, KW):
            tw = w + pad_w - s * dil_w
            ow = tw // str_w
            ok = ok_h & (tw >= 0) & (ow * str_w == tw) & (ow < OW)
            chosen = tl.load(idx_base + oh * OW + ow, mask=ok, other=-1)
            ok = ok & (chosen == pos)
            acc += tl.load(dy_base + oh * stride_dyh + ow * stride_dyw, mask=ok, other=0.0).to(tl.float32)
    tl.store(dx_ptr + offs, acc.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def max_pool2d_bwd_scatter_kernel(
    dy_ptr, idx_ptr, dx_ptr,
    total, C, HW, OH, OW,
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    IDX64: tl.constexpr, BLOCK: tl.constexpr,
):
    """dx[argmax of each window] = dy, into a zeroed contiguous dx, for windows that don't overlap:
    then no input element is the argmax of two windows, so plain stores are exact and deterministic.
    One pass over dy instead of kH*kW gathers per dx element (the interpreter's cost is per element
    and per op)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # dy elements, idx's layout
    mask = offs < total
    ohw = OH * OW
    nc = offs // ohw
    rem = offs - nc * ohw
    if not IDX64:  # see _common.INTERP_IDX64
        rem = rem.to(tl.int32)
    oh = rem // OW
    ow = rem - oh * OW
    n = nc // C
    g = tl.load(dy_ptr + n * stride_dyn + (nc - n * C) * stride_dyc + oh * stride_dyh + ow * stride_dyw, mask=mask)
    pos = tl.load(idx_ptr + offs, mask=mask, other=-1)
    tl.store(dx_ptr + nc * HW + pos, g, mask=mask & (pos >= 0))  # -1: a window with no valid tap


@triton.jit
def _avg_divisor(oh, ow, H, W, KH, KW, str_h, str_w, pad_h, pad_w, COUNT_PAD: tl.constexpr, divisor):
    """PyTorch's avg-pool divisor for window (oh, ow), as fp32."""
    hs = oh * str_h - pad_h
    ws = ow * str_w - pad_w
    he = tl.minimum(hs + KH, H + pad_h)
    we = tl.minimum(ws + KW, W + pad_w)
    if COUNT_PAD:
        d = ((he - hs) * (we - ws)).to(tl.float32)
    else:
        d = ((tl.minimum(he, H) - tl.maximum(hs, 0)) * (tl.minimum(we, W) - tl.maximum(ws, 0))).to(tl.float32)
    # tl.cast, not divisor.to(): divisor_override=1 reaches the kernel as a constexpr (Triton
    # specialises int arguments equal to 1), and a plain int has no .to()
    d = tl.where(divisor != 0, tl.cast(divisor, tl.float32), d)
    return d


@triton.jit
def avg_pool2d_fwd_kernel(
    x_ptr, y_ptr,
    total, C, H, W, OH, OW,
    stride_xn, stride_xc, stride_xh, stride_xw,
    KH, KW, str_h, str_w, pad_h, pad_w, divisor,
    COUNT_PAD: tl.constexpr, IDX64: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    ohw = OH * OW
    nc = offs // ohw
    rem = offs - nc * ohw
    if not IDX64:  # see _common.INTERP_IDX64
        rem = rem.to(tl.int32)
    oh = rem // OW
    ow = rem - oh * OW
    n = nc // C
    base = x_ptr + n * stride_xn + (nc - n * C) * stride_xc
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for r in range(0, KH):
        h = oh * str_h - pad_h + r
        ok_h = mask & (h >= 0) & (h < H)
        for s in range(0, KW):
            w = ow * str_w - pad_w + s
            ok = ok_h & (w >= 0) & (w < W)
            acc += tl.load(base + h * stride_xh + w * stride_xw, mask=ok, other=0.0).to(tl.float32)
    d = _avg_divisor(oh, ow, H, W, KH, KW, str_h, str_w, pad_h, pad_w, COUNT_PAD, divisor)
    tl.store(y_ptr + offs, (acc / d).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def avg_pool2d_bwd_kernel(
    dy_ptr, dx_ptr,
    total, C, H, W, OH, OW,
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    KH, KW, str_h, str_w, pad_h, pad_w, divisor,
    COUNT_PAD: tl.constexpr, IDX64: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    hw = H * W
    nc = offs // hw
    pos = offs - nc * hw
    if not IDX64:
        pos = pos.to(tl.int32)
    h = pos // W
    w = pos - h * W
    n = nc // C
    dy_base = dy_ptr + n * stride_dyn + (nc - n * C) * stride_dyc
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for r in range(0, KH):
        th = h + pad_h - r
        oh = th // str_h
        ok_h = mask & (th >= 0) & (oh * str_h == th) & (oh < OH)
        for s in range(0, KW):
            tw = w + pad_w - s
            ow = tw // str_w
            ok = ok_h & (tw >= 0) & (ow * str_w == tw) & (ow < OW)
            g = tl.load(dy_base + oh * stride_dyh + ow * stride_dyw, mask=ok, other=0.0).to(tl.float32)
            d = _avg_divisor(oh, ow, H, W, KH, KW, str_h, str_w, pad_h, pad_w, COUNT_PAD, divisor)
            acc += tl.where(ok, g / d, 0.0)
    tl.store(dx_ptr + offs, acc.to(dx_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Launchers (inputs are assumed validated by tinydl.ops.conv; any strides work)
# ----------------------------------------------------------------------------------------------

def pool_out_size(size: int, kernel: int, stride: int, pad: int, dil: int, ceil_mode: bool) -> int:
    """PyTorch's pooling_output_shape: in ceil mode the last window must start inside the input
    or its left padding."""
    span = size + 2 * pad - dil * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _grid(total: int):
    return (cdiv(total, POOL_BLOCK),)


def max_pool2d_fwd(x: torch.Tensor, kernel, stride, padding, dilation, ceil_mode: bool, save_idx: bool = True):
    """Returns (y, argmax) with argmax int32 (N, C, OH, OW) flat h*W + w, or None."""
    N, C, H, W = x.shape
    OH, OW = (pool_out_size(n, k, s, p, d, ceil_mode)
              for n, k, s, p, d in zip((H, W), kernel, stride, padding, dilation))
    y = torch.empty((N, C, OH, OW), device=x.device, dtype=x.dtype)
    idx = torch.empty((N, C, OH, OW), device=x.device, dtype=torch.int32) if save_idx else None
    total = y.numel()
    if total:
        max_pool2d_fwd_kernel[_grid(total)](
            x, y, idx if save_idx else y, total, C, H, W, OH, OW, *x.stride(),
            kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
            SAVE_IDX=save_idx, IDX64=INTERP_IDX64, BLOCK=POOL_BLOCK, **POOL_LAUNCH,
        )
    return y, idx


def max_pool2d_bwd(dy: torch.Tensor, idx: torch.Tensor, x_shape, kernel, stride, padding, dilation):
    N, C, H, W = x_shape
    _, _, OH, OW = dy.shape
    # windows don't overlap when each spans no more than the stride (on both axes)
    disjoint = all((k - 1) * d + 1 <= s for k, s, d in zip(kernel, stride, dilation))
    if _SCATTER_BWD and disjoint:
        dx = torch.zeros(x_shape, device=dy.device, dtype=dy.dtype)
        total = dy.numel()
        if total and dx.numel():
            max_pool2d_bwd_scatter_kernel[_grid(total)](
                dy, idx, dx, total, C, H * W, OH, OW, *dy.stride(), IDX64=INTERP_IDX64, BLOCK=POOL_BLOCK, **POOL_LAUNCH)
        return dx
    dx = torch.empty(x_shape, device=dy.device, dtype=dy.dtype)
    total = dx.numel()
    if total:
        max_pool2d_bwd_kernel[_grid(total)](
            dy, idx, dx, total, C, H, W, OH, OW, *dy.stride(),
            kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
            IDX64=INTERP_IDX64, BLOCK=POOL_BLOCK, **POOL_LAUNCH,
        )
    return dx


def avg_pool2d_fwd(x: torch.Tensor, kernel, stride, padding, ceil_mode: bool, count_include_pad: bool = True,
                   divisor_override: int | None = None):
    N, C, H, W = x.shape
    OH, OW = (pool_out_size(n, k, s, p, 1, ceil_mode) for n, k, s, p in zip((H, W), kernel, stride, padding))
    y = torch.empty((N, C, OH, OW), device=x.device, dtype=x.dtype)
    total = y.numel()
    if total:
        avg_pool2d_fwd_kernel[_grid(total)](
            x, y, total, C, H, W, OH, OW, *x.stride(),
            kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], int(divisor_override or 0),
            COUNT_PAD=bool(count_include_pad), IDX64=INTERP_IDX64, BLOCK=POOL_BLOCK, **POOL_LAUNCH,
        )
    return y


def avg_pool2d_bwd(dy: torch.Tensor, x_shape, kernel, stride, padding, count_include_pad: bool = True,
                   divisor_override: int | None = None):
    N, C, H, W = x_shape
    _, _, OH, OW = dy.shape
    dx = torch.empty(x_shape, device=dy.device, dtype=dy.dtype)
    total = dx.numel()
    if total:
        avg_pool2d_bwd_kernel[_grid(total)](
            dy, dx, total, C, H, W, OH, OW, *dy.stride(),
            kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], int(divisor_override or 0),
            COUNT_PAD=bool(count_include_pad), IDX64=INTERP_IDX64, BLOCK=POOL_BLOCK, **POOL_LAUNCH,
        )
    return dx


# ----------------------------------------------------------------------------------------------
# Configurations for the ahead-of-time GPU compile check
# ----------------------------------------------------------------------------------------------

def _aot_specs():
    specs = []
    ints = ("total", "C", "H", "W", "HW", "OH", "OW", "KH", "KW", "str_h", "str_w", "pad_h", "pad_w",
            "dil_h", "dil_w", "divisor")
    for dtype in ("fp32", "bf16", "fp16"):
        archs = (90, 80) if dtype == "fp32" else (90,)
        for kernel, consts_list in (
                (max_pool2d_fwd_kernel, [dict(SAVE_IDX=True), dict(SAVE_IDX=False)]),
                (max_pool2d_bwd_kernel, [{}]),
                (max_pool2d_bwd_scatter_kernel, [{}]),
                (avg_pool2d_fwd_kernel, [dict(COUNT_PAD=True), dict(COUNT_PAD=False)]),
                (avg_pool2d_bwd_kernel, [dict(COUNT_PAD=True), dict(COUNT_PAD=False)])):
            for i, consts in enumerate(consts_list):
                c = dict(consts, IDX64=False, BLOCK=512)
                types = {a: ("i32" if a in ints or a.startswith("stride_") else
                             "*i32" if a == "idx_ptr" else f"*{dtype}")
                         for a in kernel.arg_names if a not in c}
                tag = "/".join([dtype] + [f"{k}{int(v)}" for k, v in consts.items()])
                # the scatter backward runs only in the interpreter: it just has to compile
                first = i == 0 and kernel is not max_pool2d_bwd_scatter_kernel
                specs.append(AotSpec(f"{kernel.__name__}[{tag}]", kernel, signature(kernel, types, c), c,
                                     **POOL_LAUNCH, archs=archs if first else (90,)))
        for kernel in (avg_pool2d_fwd_kernel, avg_pool2d_bwd_kernel):
            # divisor_override=1: Triton specialises an int argument equal to 1 into a constexpr
            c = dict(COUNT_PAD=True, IDX64=False, BLOCK=512, divisor=1)
            types = {a: ("i32" if a in ints or a.startswith("stride_") else f"*{dtype}")
                     for a in kernel.arg_names if a not in c}
            specs.append(AotSpec(f"{kernel.__name__}[{dtype}/divisor=1]", kernel, signature(kernel, types, c), c,
                                 **POOL_LAUNCH, archs=(90,)))
    return specs


AOT_SPECS = _aot_specs()
