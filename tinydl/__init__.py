"""tinydl: a Triton-accelerated training-and-inference microframework.

    import tinydl as td
    from tinydl import nn, optim, functional as F
"""

# _runtime first: it sets TRITON_INTERPRET on CPU-only machines before any kernel is defined.
from . import _runtime  # noqa: F401, I001
from ._runtime import device, get_float32_matmul_precision, manual_seed, set_float32_matmul_precision
from .autograd import Function, Tensor, enable_grad, is_grad_enabled, no_grad, tensor
from . import functional, nn, optim
from .serialization import load, save  # noqa: F401 (td.save / td.load)

__version__ = "0.1.0"

__all__ = ["Tensor", "Function", "tensor", "no_grad", "enable_grad", "is_grad_enabled", "device",
           "manual_seed", "set_float32_matmul_precision", "get_float32_matmul_precision",
           "functional", "nn", "optim", "__version__"]
