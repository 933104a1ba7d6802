"""Activation functions and their derivatives as Triton device functions.

Shared by the fused linear/conv epilogues and the standalone elementwise kernels. An activation
is a compile-time integer code (``ACT: tl.constexpr``), so each fused kernel is specialised and
the unused branches cost nothing.

Backward needs either the activation's output ``y`` or its input ``z``; we keep whichever the
derivative can be computed from *exactly*:

- from y: relu (y > 0), sigmoid (y(1-y)), tanh (1-y^2), leaky_relu with slope > 0 (y > 0 <=> z > 0)
- from z: gelu, silu, elu (exp(z) is exact, y + alpha would cancel), leaky_relu with slope <= 0

Saving ``y`` is free when the next layer keeps its input anyway; saving ``z`` costs one extra
write of the pre-activation.
"""

import triton
import triton.language as tl

NONE, RELU, LEAKY_RELU, SIGMOID, TANH, ELU, GELU, SILU = range(8)

ACTIVATIONS = {"none": NONE, "relu": RELU, "leaky_relu": LEAKY_RELU, "sigmoid": SIGMOID,
               "tanh": TANH, "elu": ELU, "gelu": GELU, "silu": SILU}

_FROM_Y = {"relu", "sigmoid", "tanh"}


def activation_code(name: str) -> int:
    """The constexpr code for an activation name, or a ValueError listing the valid ones."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is not valid: use one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def saves_input(name: str, alpha: float = 0.01) -> bool:
    """True when the derivative of ``name`` needs the pre-activation z rather than the output y."""
    if name == "none":
        return False
    if name == "leaky_relu":
        return alpha <= 0
    return name not in _FROM_Y


@triton.jit
def _sigmoid(z):
    # 1 / (1 + e^-z): e^-z overflows to inf for z < -88 and the result is 0, as it should be.
    return 1.0 / (1.0 + tl.exp(-z))


@triton.jit
def _tanh(z):
    # tl has no tanh the interpreter understands. For |z| >= 0.1 use (1-e)/(1+e), e = e^(-2|z|):
    # 1-e >= 0.18 so the subtraction costs < 3 bits. Below 0.1 that cancellation would be
    # catastrophic, so use the odd Taylor series to z^7 (next term < 1e-10 relative).
    a = tl.abs(z)
    e = tl.exp(-2.0 * a)
    big = (1.0 - e) / (1.0 + e)
    z2 = z * z
    small = a * (1.0 + z2 * (-1.0 / 3.0 + z2 * (2.0 / 15.0 + z2 * (-17.0 / 315.0))))
    t = tl.where(a < 0.1, small, big)
    return tl.where(z < 0, -t, t)


@triton.jit
def _expm1(z):
    # e^z - 1 without the cancellation near 0 (|z| < 0.1: Taylor to z^5, error < 2e-8 relative).
    small = z * (1.0 + z * 0.5 * (1.0 + z / 3.0 * (1.0 + z * 0.25 * (1.0 + z * 0.2))))
    return tl.where(tl.abs(z) < 0.1, small, tl.exp(z) - 1.0)


@triton.jit
def act_fwd(z, ACT: tl.constexpr, alpha):
    """y = act(z) in fp32. alpha is leaky_relu's negative_slope or elu's alpha.

    NaN must pass through like PyTorch: ``tl.where(z < 0, ...)`` keeps a NaN z (the compare is
    false), whereas ``tl.maximum(z, 0)`` would drop it.
    """
    if ACT == 1:  # relu
        return tl.where(z < 0, 0.0, z)
    elif ACT == 2:  # leaky_relu
        return tl.where(z < 0, z * alpha, z)
    elif ACT == 3:  # sigmoid
        return _sigmoid(z)
    elif ACT == 4:  # tanh
        return _tanh(z)
    elif ACT == 5:  # elu
        return tl.where(z > 0, z, alpha * _expm1(z))  # no tl.minimum: it would drop a NaN
    elif ACT == 6:  # gelu, exact erf form (PyTorch's default approximate="none")
        return 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))
    elif ACT == 7:  # silu
        return z * _sigmoid(z)
    else:
        return z


@triton.jit
def act_bwd(s, ACT: tl.constexpr, alpha):
    """d act / dz, evaluated from the saved value ``s`` (y or z, see the module docstring)."""
    if ACT == 1:  # relu, s = y: PyTorch's threshold_backward uses y > 0
        return tl.where(s > 0, 1.0, 0.0)
    elif ACT == 2:  # leaky_relu, s = y (slope > 0) or z (slope <= 0): same sign test either way
        return tl.where(s > 0, 1.0, alpha)
    elif ACT == 3:  # sigmoid, s = y
        return s * (1.0 - s)
    elif ACT == 4:  # tanh, s = y
        return 1.0 - s * s
    elif ACT == 5:  # elu, s = z
        return tl.where(s > 0, 1.0, alpha * tl.exp(s))
    elif ACT == 6:  # gelu, s = z: Phi(z) + z * phi(z)
        cdf = 0.5 * (1.0 + tl.math.erf(s * 0.7071067811865476))
        pdf = 0.3989422804014327 * tl.exp(-0.5 * s * s)
        return cdf + s * pdf
    elif ACT == 7:  # silu, s = z: sig(z) * (1 + z * (1 - sig(z)))
        sg = _sigmoid(s)
        return sg * (1.0 + s * (1.0 - sg))
    else:
        return tl.full(s.shape, 1.0, tl.float32)
