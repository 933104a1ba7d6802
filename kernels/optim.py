"""Optimizer update kernels (SGD with momentum/nesterov, Adam/AdamW with amsgrad) and the two
kernels of ``clip_grad_norm_`` (a partial-norm reduction and an in-place scale).

Every hyperparameter is a runtime scalar: a scheduler changing lr (or the host-side bias
corrections changing every step) never triggers a recompile; only the structural options
(momentum on/off, nesterov, decoupled decay, amsgrad) are constexprs. The optimizers hand these
kernels flat buffers (all parameters of a group, and each state, as one contiguous tensor), so
one launch updates every parameter of the group.

Arithmetic is fp32 whatever the storage dtype, in PyTorch's order of operations (``lerp`` for
the first moment, ``addcmul`` for the second, ``addcdiv`` for the update), with IEEE-rounded
sqrt/div so the GPU follows ``torch.optim`` as closely as the CPU does.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import ELEMENTWISE_BLOCK, INTERPRET, AotSpec, cdiv, elementwise_grid, next_pow2, signature


@triton.jit
def sgd_kernel(p_ptr, g_ptr, buf_ptr, n, lr, grad_sign, weight_decay, momentum, buf_decay, grad_weight,
               MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, BLOCK: tl.constexpr):
    # int64 offsets: a group's flat buffer can pass 2**31 elements.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    p = tl.load(p_ptr + offs, mask=mask).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask).to(tl.float32) * grad_sign  # -1 when maximizing (exact)
    g = g + weight_decay * p
    if MOMENTUM:
        # buf_decay/grad_weight are (momentum, 1 - dampening), or (0, 1) on a parameter's first
        # step where PyTorch starts the buffer as a copy of the gradient.
        buf = tl.load(buf_ptr + offs, mask=mask).to(tl.float32)
        buf = buf * buf_decay + grad_weight * g
        tl.store(buf_ptr + offs, buf.to(buf_ptr.dtype.element_ty), mask=mask)
        if NESTEROV:
            g = g + momentum * buf
        else:
            g = buf
    tl.store(p_ptr + offs, (p - lr * g).to(p_ptr.dtype.element_ty), mask=mask)


@triton.jit
def adam_count_step_kernel(step_ptr):
    # capturable Adam: the step count lives on the device, so a replayed CUDA graph advances it.
    # One program, launched before adam_kernel: incrementing inside adam_kernel would race with
    # the other programs reading it.
    tl.store(step_ptr, tl.load(step_ptr) + 1.0)


@triton.jit
def adam_kernel(p_ptr, g_ptr, m_ptr, v_ptr, vmax_ptr, step_ptr, n, grad_sign, p_decay, weight_decay, m_weight,
                one_minus_beta2, beta2, eps, neg_step_size, bc2_sqrt, neg_lr, beta1,
                AMSGRAD: tl.constexpr, STEP_ON_DEVICE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    if STEP_ON_DEVICE:
        # the bias corrections of the step the device holds (after adam_count_step_kernel), in
        # float64 like the host path: -lr / (1 - beta1^t) and sqrt(1 - beta2^t), beta^t = e^(t ln beta)
        t = tl.load(step_ptr).to(tl.float64)
        bc1 = 1.0 - tl.exp(t * tl.log(tl.cast(beta1, tl.float64)))
        neg_step_size = (tl.cast(neg_lr, tl.float64) / bc1).to(tl.float32)
        bc2_sqrt = tl.sqrt(1.0 - tl.exp(t * tl.log(tl.cast(beta2, tl.float64)))).to(tl.float32)
    p = tl.load(p_ptr + offs, mask=mask).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask).to(tl.float32) * grad_sign
    # AdamW decays the parameter (p_decay = 1 - lr*wd, weight_decay = 0); Adam adds wd*p to the
    # gradient (p_decay = 1). Either factor is exact when unused.
    p = p * p_decay
    g = g + weight_decay * p
    m = tl.load(m_ptr + offs, mask=mask).to(tl.float32)
    # torch.lerp's two-sided formula (m_weight = 1 - beta1), for the same rounding as PyTorch
    if m_weight < 0.5:
        m = m + m_weight * (g - m)
    else:
        m = g - (g - m) * (1.0 - m_weight)
    v = tl.load(v_ptr + offs, mask=mask).to(tl.float32)
    v = v * beta2 + one_minus_beta2 * g * g
    tl.store(m_ptr + offs, m.to(m_ptr.dtype.element_ty), mask=mask)
    tl.store(v_ptr + offs, v.to(v_ptr.dtype.element_ty), mask=mask)
    if AMSGRAD:
        vmax = tl.load(vmax_ptr + offs, mask=mask).to(tl.float32)
        # torch.maximum propagates NaN; tl.maximum would drop it
        vmax = tl.where((vmax > v) | (vmax != vmax), vmax, v)
        tl.store(vmax_ptr + offs, vmax.to(vmax_ptr.dtype.element_ty), mask=mask)
        v = vmax
    denom = tl.div_rn(tl.sqrt_rn(v), bc2_sqrt) + eps
    p = p + neg_step_size * tl.div_rn(m, denom)
    tl.store(p_ptr + offs, p.to(p_ptr.dtype.element_ty), mask=mask)


def _check_flat(*ts: torch.Tensor | None) -> int:
    n = ts[0].numel()
    for t in ts:
        if t is not None and (not t.is_contiguous() or t.numel() != n):
            raise ValueError("optimizer kernels take contiguous tensors of one size")
    return n


def sgd_step(p: torch.Tensor, g: torch.Tensor, lr: float, buf: torch.Tensor | None = None, *,
             weight_decay: float = 0.0, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
             maximize: bool = False, first: bool = False) -> None:
    """In place, PyTorch's SGD on contiguous tensors: p (and buf when momentum != 0) updated.

    ``first``: the momentum buffer is new (it becomes the gradient, as in PyTorch)."""
    g = g.contiguous()
    has_mom = momentum != 0
    if has_mom and buf is None:
        raise ValueError("sgd_step: momentum needs a buffer")
    n = _check_flat(p, g, buf if has_mom else None)
    if not n:
        return
    buf_decay, grad_weight = (0.0, 1.0) if first else (float(momentum), 1.0 - float(dampening))
    sgd_kernel[elementwise_grid(n)](p, g, buf if has_mom else p, n, float(lr), -1.0 if maximize else 1.0,
                                    float(weight_decay), float(momentum), buf_decay, grad_weight,
                                    MOMENTUM=has_mom, NESTEROV=bool(nesterov and has_mom), BLOCK=ELEMENTWISE_BLOCK)


def adam_step(p: torch.Tensor, g: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
              max_exp_avg_sq: torch.Tensor | None, step: int | torch.Tensor, *, lr: float, beta1: float,
              beta2: float, eps: float, weight_decay: float = 0.0, decoupled: bool = False, amsgrad: bool = False,
              maximize: bool = False) -> None:
    """In place, PyTorch's Adam (``decoupled``: AdamW).

    ``step``: an int, the step being taken (1-based): the bias corrections are computed here on
    the host in float64, like PyTorch, and passed as scalars. Or a one-element float32 tensor on
    ``p``'s device holding the steps taken so far (capturable Adam): it is incremented by a
    one-program kernel and the bias corrections are computed on the device, so a CUDA graph that
    replays this update keeps counting."""
    g = g.contiguous()
    if amsgrad and max_exp_avg_sq is None:
        raise ValueError("adam_step: amsgrad needs max_exp_avg_sq")
    n = _check_flat(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad else None)
    on_device = isinstance(step, torch.Tensor)
    if on_device and (step.numel() != 1 or step.dtype != torch.float32 or step.device != p.device):
        raise ValueError(f"adam_step: a step tensor must be one float32 element on {p.device}, got "
                         f"{step.dtype} {tuple(step.shape)} on {step.device}")
    if not n:
        return
    if on_device:
        adam_count_step_kernel[(1,)](step, num_warps=1)  # as in its AOT spec
        neg_step_size, bc2_sqrt = 0.0, 1.0  # computed by the kernel
    else:
        neg_step_size, bc2_sqrt = -(lr / (1 - beta1 ** step)), (1 - beta2 ** step) ** 0.5
    p_decay = 1 - lr * weight_decay if decoupled else 1.0
    wd = 0.0 if decoupled else float(weight_decay)
    adam_kernel[elementwise_grid(n)](p, g, exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad else exp_avg_sq,
                                     step if on_device else p, n, -1.0 if maximize else 1.0, p_decay, wd, 1 - beta1,
                                     1 - beta2, float(beta2), float(eps), neg_step_size, bc2_sqrt, -float(lr),
                                     float(beta1), AMSGRAD=bool(amsgrad), STEP_ON_DEVICE=on_device,
                                     BLOCK=ELEMENTWISE_BLOCK)


# ---------------------------------------------------------------------------------------------
# clip_grad_norm_: partial norms per block -> one program combines them -> in-place scale
# ---------------------------------------------------------------------------------------------

#: norm kinds (constexpr): sum of squares, sum of |g|, max |g|, sum of |g|^p
NORM_L2, NORM_L1, NORM_INF, NORM_P = range(4)


@triton.jit
def grad_norm_partial_kernel(g_ptr, part_ptr, n, p, KIND: tl.constexpr, BLOCK: tl.constexpr):
    # One partial per program: sum of |g|^p (max |g| for inf) over its block, NaN kept.
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = tl.abs(tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32))
    if KIND == 0:
        r = tl.sum(a * a, axis=0)
    elif KIND == 1:
        r = tl.sum(a, axis=0)
    elif KIND == 2:
        # tl.max drops NaN; a NaN anywhere must make the norm NaN, as in PyTorch
        nan_count = tl.sum((a != a).to(tl.int32), axis=0)
        r = tl.max(a, axis=0)
        r = tl.where(nan_count > 0, float("nan"), r)
    else:
        # |g|^p = exp(p log|g|): log 0 = -inf gives 0 for p > 0
        r = tl.sum(tl.where(a > 0, tl.exp(p * tl.log(a)), 0.0), axis=0)
    tl.store(part_ptr + pid, r)


@triton.jit
def grad_norm_total_kernel(part_ptr, out_ptr, n_parts, p, max_norm, KIND: tl.constexpr, BLOCK: tl.constexpr):
    # out[0] = total norm, out[1] = min(max_norm / (total + 1e-6), 1): the scale, left on the device
    # so clipping needs no host synchronisation.
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    nan_count = tl.zeros([BLOCK], dtype=tl.int32)
    for start in range(0, n_parts, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = tl.load(part_ptr + offs, mask=offs < n_parts, other=0.0)
        nan_count += (x != x).to(tl.int32)
        if KIND == 2:
            acc = tl.maximum(acc, x)
        else:
            acc += x
    if KIND == 2:
        total = tl.max(acc, axis=0)
    else:
        total = tl.sum(acc, axis=0)
    if KIND == 0:
        total = tl.sqrt_rn(total)
    elif KIND == 3:
        total = tl.where(total > 0, tl.exp(tl.log(total) / p), 0.0)
    total = tl.where(tl.sum(nan_count, axis=0) > 0, float("nan"), total)
    coef = tl.div_rn(max_norm, total + 1e-6)
    coef = tl.where(coef < 1.0, coef, 1.0)
    coef = tl.where(total != total, float("nan"), coef)
    tl.store(out_ptr, total)
    tl.store(out_ptr + 1, coef)


@triton.jit
def grad_scale_kernel(g_ptr, coef_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    coef = tl.load(coef_ptr + 1)
    g = tl.load(g_ptr + offs, mask=mask).to(tl.float32)
    tl.store(g_ptr + offs, (g * coef).to(g_ptr.dtype.element_ty), mask=mask)


_TOTAL_BLOCK = 1 << 12 if INTERPRET else 1024


def grad_norm(grads: list[torch.Tensor], norm_type: float, max_norm: float) -> torch.Tensor:
    """fp32 tensor [total norm, clip coefficient] on the grads' device (grads contiguous)."""
    kind = NORM_L2 if norm_type == 2 else NORM_L1 if norm_type == 1 else NORM_INF if norm_type == float("inf") \
        else NORM_P
    device = grads[0].device
    counts = [cdiv(g.numel(), ELEMENTWISE_BLOCK) for g in grads]
    parts = torch.zeros(max(1, sum(counts)), dtype=torch.float32, device=device)
    start = 0
    for g, c in zip(grads, counts):
        if c:
            grad_norm_partial_kernel[(c,)](g, parts[start:], g.numel(), float(norm_type), KIND=kind,
                                           BLOCK=ELEMENTWISE_BLOCK)
        start += c
    out = torch.empty(2, dtype=torch.float32, device=device)
    grad_norm_total_kernel[(1,)](parts, out, parts.numel(), float(norm_type), float(max_norm), KIND=kind,
                                 BLOCK=min(_TOTAL_BLOCK, next_pow2(parts.numel())))
    return out


def grad_scale_(g: torch.Tensor, norm_and_coef: torch.Tensor) -> None:
    """In place: g *= norm_and_coef[1] (g contiguous)."""
    if g.numel():
        grad_scale_kernel[elementwise_grid(g.numel())](g, norm_and_coef, g.numel(), BLOCK=ELEMENTWISE_BLOCK)


def _specs():
    specs = []
    for dt in ("fp32", "bf16"):
        archs = (90, 80) if dt == "fp32" else (90,)
        ptr = f"*{dt}"
        for mom, nest in ((False, False), (True, False), (True, True)):
            c = {"MOMENTUM": mom, "NESTEROV": nest, "BLOCK": 1024}
            types = {"p_ptr": ptr, "g_ptr": ptr, "buf_ptr": ptr, "n": "i64", "lr": "fp32", "grad_sign": "fp32",
                     "weight_decay": "fp32", "momentum": "fp32", "buf_decay": "fp32", "grad_weight": "fp32"}
            specs.append(AotSpec(f"sgd_kernel[{dt}/mom{int(mom)}/nest{int(nest)}]", sgd_kernel,
                                 signature(sgd_kernel, types, c), c, archs=archs if mom and not nest else (90,)))
        for ams, dev in ((False, False), (True, False), (False, True)):
            c = {"AMSGRAD": ams, "STEP_ON_DEVICE": dev, "BLOCK": 1024}
            types = {"p_ptr": ptr, "g_ptr": ptr, "m_ptr": ptr, "v_ptr": ptr, "vmax_ptr": ptr,
                     "step_ptr": "*fp32" if dev else ptr, "n": "i64"}
            types.update({k: "fp32" for k in ("grad_sign", "p_decay", "weight_decay", "m_weight", "one_minus_beta2",
                                              "beta2", "eps", "neg_step_size", "bc2_sqrt", "neg_lr", "beta1")})
            specs.append(AotSpec(f"adam_kernel[{dt}/amsgrad{int(ams)}/step_on_device{int(dev)}]", adam_kernel,
                                 signature(adam_kernel, types, c), c, archs=archs if not ams else (90,)))
        c = {"BLOCK": 1024}
        specs.append(AotSpec(f"grad_scale_kernel[{dt}]", grad_scale_kernel,
                             signature(grad_scale_kernel, {"g_ptr": ptr, "coef_ptr": "*fp32", "n": "i64"}, c), c,
                             archs=archs))
        for kind in range(4):
            c = {"KIND": kind, "BLOCK": 1024}
            specs.append(AotSpec(f"grad_norm_partial_kernel[{dt}/kind{kind}]", grad_norm_partial_kernel,
                                 signature(grad_norm_partial_kernel, {"g_ptr": ptr, "part_ptr": "*fp32", "n": "i64",
                                                                      "p": "fp32"}, c), c,
                                 archs=archs if kind == 0 else (90,)))
    specs.append(AotSpec("adam_count_step_kernel", adam_count_step_kernel,
                         signature(adam_count_step_kernel, {"step_ptr": "*fp32"}, {}), {}, num_warps=1))
    for kind in range(4):
        c = {"KIND": kind, "BLOCK": 1024}
        specs.append(AotSpec(f"grad_norm_total_kernel[kind{kind}]", grad_norm_total_kernel,
                             signature(grad_norm_total_kernel, {"part_ptr": "*fp32", "out_ptr": "*fp32",
                                                                "n_parts": "i32", "p": "fp32", "max_norm": "fp32"}, c),
                             c,
                             archs=(90, 80) if kind == 0 else (90,)))
    return specs


AOT_SPECS = _specs()
