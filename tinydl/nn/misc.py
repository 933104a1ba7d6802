"""nn modules: Dropout."""

from __future__ import annotations

from tinydl.ops import elementwise as _ew

from .module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """Zeroes each element with probability p in training (scaling the rest by 1/(1-p));
    the identity in eval mode. The mask is regenerated in backward from a seed, not stored."""

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        _ew._check_p(p)
        if inplace:
            raise ValueError("Dropout: inplace=True is not supported by tinydl (the mask is recomputed from "
                             "the input's seed in backward); use inplace=False")
        self.p = float(p)
        self.inplace = inplace

    def forward(self, x):
        return _ew.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"
