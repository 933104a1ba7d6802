"""tinydl.nn: modules with PyTorch's names, layouts and initialisation."""

from . import conv as _conv
from . import init, utils  # noqa: F401 (tinydl.nn.init, tinydl.nn.utils)
from . import loss as _loss
from . import misc as _misc
from .activation import ELU, GELU, LeakyReLU, ReLU, Sigmoid, SiLU, Tanh
from .conv import *  # noqa: F401, F403
from .linear import Identity, Linear
from .loss import *  # noqa: F401, F403
from .misc import *  # noqa: F401, F403
from .module import Module, Parameter, Sequential

__all__ = ["Module", "Parameter", "Sequential", "Linear", "Identity",
           "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "ELU", "GELU", "SiLU"]
__all__ += _conv.__all__ + _loss.__all__ + _misc.__all__
