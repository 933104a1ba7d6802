"""Plain SGD: p -= lr * grad, one kernel launch per parameter."""

from __future__ import annotations

from tinydl.kernels import optim as _k

from .optimizer import Optimizer


class SGD(Optimizer):
    def __init__(self, params, lr: float = 1e-3):
        if not isinstance(lr, (int, float)) or lr < 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        super().__init__(params, dict(lr=float(lr)))

    def step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    _k.sgd_step(p.data, p.grad, group["lr"])
