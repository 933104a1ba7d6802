"""tinydl.optim: optimizers whose updates are Triton kernels."""

from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD"]
