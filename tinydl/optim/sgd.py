"""SGD with momentum, dampening, nesterov, weight decay and maximize (PyTorch's algorithm), one
kernel launch per parameter group and step (see ``optimizer.py``)."""

from __future__ import annotations

from typing import Any

from tinydl.kernels import optim as _k

from .optimizer import Optimizer, _Bucket, _num


class SGD(Optimizer):
    """``torch.optim.SGD``: with g = grad (negated if ``maximize``) + weight_decay * p,
    buf = momentum * buf + (1 - dampening) * g (buf = g on the first step),
    g = g + momentum * buf (nesterov) or buf, then p -= lr * g.

    ``state[p]["momentum_buffer"]`` exists (once p has had a gradient) only when momentum != 0.
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        self._validate_group(defaults)
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        lr, momentum = _num("learning rate", group["lr"]), _num("momentum value", group["momentum"])
        wd, damp = _num("weight_decay value", group["weight_decay"]), _num("dampening", group["dampening"])
        if lr < 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if wd < 0:
            raise ValueError(f"Invalid weight_decay value: {wd}")
        if group["nesterov"] and (momentum <= 0 or damp != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _state_names(self, group):
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _run_key(self, group, state):
        # a new momentum buffer starts as the gradient itself: those params launch separately
        return "momentum_buffer" in state

    def _update(self, group, b: _Bucket, lo: int, hi: int, key) -> None:
        sl = b.span(lo, hi)
        buf = b.states["momentum_buffer"][sl] if group["momentum"] != 0 else None
        _k.sgd_step(b.data[sl], b.grad[sl], group["lr"], buf, weight_decay=group["weight_decay"],
                    momentum=group["momentum"], dampening=group["dampening"], nesterov=group["nesterov"],
                    maximize=group["maximize"], first=not key)

    def _after_update(self, group, b: _Bucket, i: int) -> None:
        if group["momentum"] != 0:
            self.state[b.params[i]]["momentum_buffer"] = b.state_view("momentum_buffer", i)
