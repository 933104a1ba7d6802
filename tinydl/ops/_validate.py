"""Host-side argument checks shared by every op: clear errors before any kernel launches."""

from __future__ import annotations

import torch

from tinydl import _runtime
from tinydl.autograd import Tensor
from tinydl.kernels._common import FLOAT_DTYPES
from tinydl.kernels.activations import activation_code


def as_tensor(x, name: str) -> Tensor:
    """Accept a tinydl Tensor (or a bare torch tensor, treated as a constant)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, torch.Tensor):
        return Tensor(x)
    raise TypeError(f"{name} must be a tinydl.Tensor, got {type(x).__name__}")


def check_device(op: str, name: str, t: torch.Tensor | Tensor) -> None:
    """``t`` is where tinydl's kernels run: the GPU natively, the CPU in the interpreter."""
    if _runtime.AOT:
        return
    want = "cpu" if _runtime.INTERPRET else "cuda"
    if t.device.type != want:
        raise ValueError(f"{op}: {name} is on {t.device}, but tinydl runs its kernels on {want} "
                         f"({_runtime.mode()} mode); move it there first, e.g. x.to({_runtime.device()!r})")


def check_float(op: str, **tensors: Tensor | None) -> None:
    """All given tensors: a float dtype tinydl computes in, one dtype, on tinydl's device."""
    first = None
    for name, t in tensors.items():
        if t is None:
            continue
        check_device(op, name, t)
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: {name} has dtype {t.dtype}; supported: float32, float16, bfloat16")
        if first is None:
            first = (name, t)
            continue
        fname, f = first
        if t.dtype != f.dtype:
            raise TypeError(f"{op}: {name} is {t.dtype} but {fname} is {f.dtype}; use one dtype")
        if t.device != f.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {fname} is on {f.device}")


def check_activation(activation: str) -> None:
    activation_code(activation)  # raises ValueError naming the valid ones


