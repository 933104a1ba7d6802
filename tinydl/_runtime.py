"""Where kernels run. Imported first by ``tinydl/__init__.py``, before any kernel is defined.

- CUDA available: kernels compile and run natively.
- No CUDA: ``TRITON_INTERPRET=1`` is set so the same ``@triton.jit`` kernels run through Triton's
  interpreter on the CPU (Triton reads the variable when a kernel is *defined*, hence "first").
- ``TINYDL_DEVICE=cpu|cuda`` overrides the choice; asking for cuda without one is an error.
- ``TINYDL_AOT=1`` (used only by the GPU-compile check) leaves the interpreter off on a machine
  without a GPU, so kernels stay real ``JITFunction`` objects that ``triton.compile`` can lower
  for sm_80/sm_90. Nothing can be launched in that mode.
"""

import os
import warnings

import torch

_VALID = ("cpu", "cuda")


def _select_device() -> str:
    want = os.environ.get("TINYDL_DEVICE", "").strip().lower()
    if want and want not in _VALID:
        raise ValueError(f"TINYDL_DEVICE={want!r} is not valid: use one of {', '.join(_VALID)}")
    has_cuda = torch.cuda.is_available()
    if want == "cuda" and not has_cuda:
        raise RuntimeError(
            "TINYDL_DEVICE=cuda was asked for, but torch.cuda.is_available() is False "
            "(no GPU, or a CPU-only torch build). Unset TINYDL_DEVICE or set it to cpu."
        )
    device = want or ("cuda" if has_cuda else "cpu")
    if device == "cpu" and os.environ.get("TINYDL_AOT") != "1":
        os.environ["TRITON_INTERPRET"] = "1"
    return device


# Triton 3.9 warns until this is set; "1" is its current default (fused multiply-add allowed).
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
DEVICE: str = _select_device()
#: True when kernels run through Triton's interpreter (CPU); launch configs differ per mode.
INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"
if INTERPRET:
    # The interpreter evaluates both sides of every tl.where with numpy, so an exp() that overflows
    # in the branch not taken warns; the result is right, the warning is noise.
    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"triton\.runtime\.interpreter")
    # The interpreter's tl.dot is a numpy matmul on one tile: small, and issued thousands of times.
    # A multi-threaded BLAS spins up its threads for each one and, when the cores are busy, waits
    # for them (seen: 0.3 ms single-threaded vs 210 ms threaded for a 16x8192 @ 8192x32 tile).
    # TINYDL_BLAS_THREADS overrides.
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(os.environ.get("TINYDL_BLAS_THREADS", "1")), user_api="blas")


def _fix_interpreter_index() -> None:
    """Let Triton 3.6's interpreter use a scalar kernel argument as a ``range`` bound with numpy >= 2.4.

    The interpreter keeps a scalar argument as a numpy array of shape (1,) and converts it for
    ``range(0, K, BLOCK_K)`` with ``int(array)``, which numpy 2.4 refuses ("only 0-dimensional
    arrays can be converted"); later Triton versions squeeze the array first. Every K loop of
    tinydl's GEMM-shaped kernels has such a bound, so on Triton 3.6 the whole CPU path needs this.
    Only the interpreter is touched; compiled kernels never call ``__index__``.
    """
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_tinydl_squeezes", False):
        return

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patch_lang_tensor._tinydl_squeezes = True
    interpreter._patch_lang_tensor = patch_lang_tensor


if INTERPRET:
    _fix_interpreter_index()
#: True only for the ahead-of-time compile check (no launches possible).
AOT: bool = os.environ.get("TINYDL_AOT") == "1"

# fp32 matmul precision, named like torch.set_float32_matmul_precision:
# "highest" = IEEE fp32 (default, as in PyTorch); "high"/"medium" = TF32 tensor cores on GPU.
_FP32_PRECISION = "highest"


def set_float32_matmul_precision(precision: str) -> None:
    global _FP32_PRECISION
    if precision not in ("highest", "high", "medium"):
        raise ValueError(
            f"precision={precision!r} is not valid: use 'highest' (IEEE fp32), 'high' or 'medium' (TF32)"
        )
    _FP32_PRECISION = precision


def get_float32_matmul_precision() -> str:
    return _FP32_PRECISION


def dot_precision() -> str:
    """The ``input_precision`` for fp32 ``tl.dot``. The interpreter is always exact IEEE."""
    if INTERPRET or _FP32_PRECISION == "highest":
        return "ieee"
    return "tf32"


def mode() -> str:
    return "interpreter" if INTERPRET else ("aot" if AOT else "native")


def device() -> str:
    """The device tinydl puts new tensors on: ``"cuda"`` or ``"cpu"``."""
    return DEVICE


def manual_seed(seed: int) -> None:
    """Seed every random source tinydl uses (init, dropout, data shuffling)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    torch.manual_seed(seed)
