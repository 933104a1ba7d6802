"""Adam and AdamW (PyTorch's algorithms, amsgrad included), one kernel launch per parameter
group and step (see ``optimizer.py``). The bias corrections depend on the step, so they are
computed on the host in float64 and passed to the kernel as scalars."""

from __future__ import annotations

from typing import Any

import torch

from tinydl.kernels import optim as _k

from .optimizer import Optimizer, _Bucket, _num


class Adam(Optimizer):
    """``torch.optim.Adam``. ``state[p]``: ``step`` (a float32 CPU scalar tensor, as in PyTorch),
    ``exp_avg``, ``exp_avg_sq`` and, with amsgrad, ``max_exp_avg_sq``."""

    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, maximize: bool = False):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                        weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)
        self._validate_group(defaults)
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        lr, eps, wd = (_num("learning rate", group["lr"]), _num("epsilon value", group["eps"]),
                       _num("weight_decay value", group["weight_decay"]))
        if lr < 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps < 0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        for i, beta in enumerate(betas):
            beta = _num(f"beta parameter at index {i}", beta)
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        if wd < 0:
            raise ValueError(f"Invalid weight_decay value: {wd}")

    def _state_names(self, group):
        names = ("exp_avg", "exp_avg_sq")
        return names + ("max_exp_avg_sq",) if group["amsgrad"] else names

    def _run_key(self, group, state):
        step = state.get("step")
        return 0 if step is None else int(step.item()) if isinstance(step, torch.Tensor) else int(step)

    def _update(self, group, b: _Bucket, lo: int, hi: int, key) -> None:
        sl = slice(b.offsets[lo], b.offsets[hi])
        beta1, beta2 = group["betas"]
        ams = b.states["max_exp_avg_sq"][sl] if group["amsgrad"] else None
        _k.adam_step(b.data[sl], b.grad[sl], b.states["exp_avg"][sl], b.states["exp_avg_sq"][sl], ams, key + 1,
                     lr=float(group["lr"]), beta1=float(beta1), beta2=float(beta2), eps=float(group["eps"]),
                     weight_decay=float(group["weight_decay"]), decoupled=self._decoupled,
                     amsgrad=group["amsgrad"], maximize=group["maximize"])

    def _after_update(self, group, b: _Bucket, i: int) -> None:
        st = self.state[b.params[i]]
        st["step"] = torch.tensor(float(self._run_key(group, st) + 1))
        for name in self._state_names(group):
            st[name] = b.state_view(name, i)


class AdamW(Adam):
    """``torch.optim.AdamW``: Adam with decoupled weight decay (p *= 1 - lr * weight_decay before
    the update); weight_decay defaults to 1e-2 as in PyTorch."""

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)
