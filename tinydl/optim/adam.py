"""Adam and AdamW (PyTorch's algorithms, amsgrad included), one kernel launch per parameter
group and step (see ``optimizer.py``). The bias corrections depend on the step, so they are
computed on the host in float64 and passed to the kernel as scalars -- except with
``capturable=True``, where the step count lives on the device and the kernel computes them, so
that a CUDA graph replaying ``step()`` keeps counting (one extra one-program launch per step)."""

from __future__ import annotations

from typing import Any

import torch

from tinydl.kernels import optim as _k

from .optimizer import Optimizer, _Bucket, _num


class Adam(Optimizer):
    """``torch.optim.Adam``. ``state[p]``: ``step`` (a float32 scalar tensor, on the CPU as in
    PyTorch), ``exp_avg``, ``exp_avg_sq`` and, with amsgrad, ``max_exp_avg_sq``.

    ``capturable=True`` (for :class:`tinydl.cuda_graph.CudaGraphStep`): ``step`` is a float32
    tensor on the parameters' device, one per parameter group and dtype, shared by its parameters'
    states; every parameter of the group must then have a gradient at every ``step()`` (a
    parameter without one would need its own count: use ``zero_grad(set_to_none=False)`` to keep
    zero gradients, or ``capturable=False``). The learning rate is still a host scalar: a graph
    that replays ``step()`` must be captured again after ``lr`` changes.
    """

    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, maximize: bool = False,
                 capturable: bool = False):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                        weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize, capturable=bool(capturable))
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
        if group.get("capturable"):
            return "device"  # one count per bucket, never read on the host (no sync)
        step = state.get("step")
        return 0 if step is None else int(step.item()) if isinstance(step, torch.Tensor) else int(step)

    def _device_step(self, group, b: _Bucket, lo: int, hi: int) -> torch.Tensor:
        """The bucket's step count on the device (created from the parameters' saved counts)."""
        if lo != 0 or hi != len(b.params):
            missing = next(i for i, p in enumerate(b.params) if p.grad is None)
            raise RuntimeError(
                f"Adam(capturable=True): parameter {missing} of a group (shape {tuple(b.params[missing].shape)}) has "
                "no gradient in this step, but a capturable Adam keeps one step count per group on the device. "
                "Give every parameter a gradient (zero_grad(set_to_none=False) keeps zeros) or use capturable=False")
        count = getattr(b, "device_step", None)
        if count is None:
            saved = {float(s) for p in b.params if isinstance(s := self.state.get(p, {}).get("step"),
                                                                  (torch.Tensor, int, float))}
            if len(saved) > 1:
                raise RuntimeError(f"Adam(capturable=True): the parameters of a group have different step counts "
                                   f"{sorted(saved)} (from a state_dict); a capturable Adam needs one per group")
            start = saved.pop() if saved else 0.0
            count = b.device_step = torch.full((1,), start, dtype=torch.float32, device=b.data.device)
        return count

    def _update(self, group, b: _Bucket, lo: int, hi: int, key) -> None:
        sl = b.span(lo, hi)
        beta1, beta2 = group["betas"]
        ams = b.states["max_exp_avg_sq"][sl] if group["amsgrad"] else None
        step = self._device_step(group, b, lo, hi) if key == "device" else key + 1
        _k.adam_step(b.data[sl], b.grad[sl], b.states["exp_avg"][sl], b.states["exp_avg_sq"][sl], ams, step,
                     lr=float(group["lr"]), beta1=float(beta1), beta2=float(beta2), eps=float(group["eps"]),
                     weight_decay=float(group["weight_decay"]), decoupled=self._decoupled,
                     amsgrad=group["amsgrad"], maximize=group["maximize"])

    def _after_update(self, group, b: _Bucket, i: int) -> None:
        st = self.state[b.params[i]]
        if group.get("capturable"):
            st["step"] = b.device_step.view(())  # updated in place by the kernel, also under a graph
        else:
            st["step"] = torch.tensor(float(self._run_key(group, st) + 1), device="cpu")
        for name in self._state_names(group):
            st[name] = b.state_view(name, i)


class AdamW(Adam):
    """``torch.optim.AdamW``: Adam with decoupled weight decay (p *= 1 - lr * weight_decay before
    the update); weight_decay defaults to 1e-2 as in PyTorch."""

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 capturable: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize, capturable=capturable)
