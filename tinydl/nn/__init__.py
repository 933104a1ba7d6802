"""tinydl.nn: modules with PyTorch's names, layouts and initialisation."""

from .activation import ELU, GELU, LeakyReLU, ReLU, Sigmoid, SiLU, Tanh
from .linear import Identity, Linear
from .module import Module, Parameter, Sequential

__all__ = ["Module", "Parameter", "Sequential", "Linear", "Identity",
           "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "ELU", "GELU", "SiLU"]
