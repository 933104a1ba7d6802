"""Shared launch plumbing: mode, block sizes, dtype names, and the AOT spec record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from tinydl import _runtime

INTERPRET: bool = _runtime.INTERPRET

# The interpreter runs each program instance as numpy ops on whole blocks, so its cost is per
# program, not per element: elementwise kernels get one huge block there, 1024 lanes on a GPU.
ELEMENTWISE_BLOCK = 1 << 18 if INTERPRET else 1024

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# Host-side integer helpers. triton.cdiv / triton.next_power_of_2 are constexpr functions since
# Triton 3.7: ~3 us a call from Python (constexpr unwrapping) against ~0.1 us here, and a LeNet
# training step makes ~65 such calls.
def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(n: int) -> int:
    return 1 << (max(1, int(n)) - 1).bit_length()


def elementwise_grid(n: int, block: int = ELEMENTWISE_BLOCK):
    return (cdiv(n, block),)


def dot_input_precision(dtype: torch.dtype) -> str:
    """``input_precision`` for ``tl.dot``: it only matters for fp32 operands (IEEE or tf32, see
    ``tinydl.set_float32_matmul_precision``); 16-bit tiles use tensor cores regardless."""
    return _runtime.dot_precision() if dtype == torch.float32 else "tf32"


#: The interpreter checks every int32 add/mul of a tile for overflow (a cast to int64, the op and
#: two compares: ~5 extra numpy passes) but skips int64 ones, so kernels with heavy index math
#: take ``IDX64=INTERP_IDX64`` and keep it in int64 there. On a GPU int32 index math is cheaper
#: and the offsets that can pass 2**31 are widened explicitly.
INTERP_IDX64: bool = INTERPRET


def low_precision_dot_upcast(dtype: torch.dtype) -> bool:
    """The interpreter's ``tl.dot`` on bf16 returns garbage: upcast tiles to fp32 there."""
    return INTERPRET and dtype != torch.float32


@dataclass
class AotSpec:
    """One kernel configuration the GPU may launch, for the ahead-of-time compile check."""

    name: str
    kernel: Any
    signature: dict[str, str]
    constexprs: dict[str, Any] = field(default_factory=dict)
    num_warps: int = 4
    num_stages: int = 3
    #: SM versions to compile for; a variant that only changes a constexpr need not do both
    archs: tuple[int, ...] = (90, 80)
    #: ``tt.divisibility`` hints, ``{(arg index,): [["tt.divisibility", 16]]}``: what Triton's JIT
    #: adds for 16-byte-aligned pointers and ints that are multiples of 16. The hand-written specs
    #: have none (odd shapes, the worst case); traced ones (``_aot.trace``) have the real launch's.
    attrs: dict = field(default_factory=dict)
    #: "static" (hand-written, every config a launcher can pick) or the benchmark launches it was
    #: traced from; the no-spill rule applies to traced ones, which carry the real specialisation
    source: str = "static"


#: the most shared memory one program may use per SM version (bytes, opt-in maximum)
SHARED_LIMIT = {80: 166912, 90: 232448}


def signature(kernel, types: dict[str, str], constexprs: dict[str, Any]) -> dict[str, str]:
    """Full AOT signature for ``kernel``: every argument typed, constexprs marked as such."""
    names = kernel.arg_names
    sig = {}
    for n in names:
        if n in constexprs:
            sig[n] = "constexpr"
        elif n in types:
            sig[n] = types[n]
        else:
            raise KeyError(f"{kernel.__name__}: no AOT type for argument {n!r}")
    return sig
