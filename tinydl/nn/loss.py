"""nn modules: losses (CrossEntropyLoss, MSELoss, L1Loss, BCEWithLogitsLoss) and Softmax/LogSoftmax.

Thin wrappers over ``tinydl.functional``; constructor arguments are PyTorch's and are validated
when the module is built, so a bad reduction fails at construction, not in the training loop.
"""

from __future__ import annotations

from tinydl.ops import loss as _F

from .module import Module

__all__ = ["CrossEntropyLoss", "MSELoss", "L1Loss", "BCEWithLogitsLoss", "Softmax", "LogSoftmax"]


class _Loss(Module):
    def __init__(self, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__()
        self.reduction = _F._reduction(type(self).__name__, reduction, size_average, reduce)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""


class CrossEntropyLoss(_Loss):
    """``F.cross_entropy`` of (N, C) logits and (N,) class indices; ``weight`` is not supported."""

    def __init__(self, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                 reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__(size_average, reduce, reduction)
        _F._not_implemented("CrossEntropyLoss", weight=weight)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise TypeError(f"CrossEntropyLoss: ignore_index must be an int, got {ignore_index!r}")
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
                or not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing={label_smoothing!r} is not valid: "
                             "it must be a float in [0.0, 1.0]")
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)

    def forward(self, input, target):
        return _F.cross_entropy(input, target, ignore_index=self.ignore_index, reduction=self.reduction,
                                label_smoothing=self.label_smoothing)


class MSELoss(_Loss):
    def forward(self, input, target):
        return _F.mse_loss(input, target, reduction=self.reduction)


class L1Loss(_Loss):
    def forward(self, input, target):
        return _F.l1_loss(input, target, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    """``F.binary_cross_entropy_with_logits``; ``weight`` and ``pos_weight`` are not supported."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction: str = "mean", pos_weight=None):
        super().__init__(size_average, reduce, reduction)
        _F._not_implemented("BCEWithLogitsLoss", weight=weight, pos_weight=pos_weight)

    def forward(self, input, target):
        return _F.binary_cross_entropy_with_logits(input, target, reduction=self.reduction)


class Softmax(Module):
    """Softmax along ``dim`` (tinydl's default is the last dim; PyTorch's ``dim=None`` guess is not
    reproduced)."""

    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, x):
        return _F.softmax(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    def forward(self, x):
        return _F.log_softmax(x, self.dim)
