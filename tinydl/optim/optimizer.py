"""The ``Optimizer`` base class, PyTorch's shape: ``param_groups``, ``state``, ``zero_grad``,
``step``, ``state_dict``/``load_state_dict``.

One launch per step for a whole parameter group
-----------------------------------------------
On its first ``step`` the optimizer packs the parameters of each group into one flat buffer per
(dtype, device) -- a *bucket* -- and re-points every ``param.data`` to a view of it; each state
(momentum buffer, exp_avg, ...) is a flat buffer of the same layout whose views are what
``optimizer.state[p]`` holds. The gradients are gathered into a flat gradient buffer (a plain
copy -- one ``torch.cat`` for the whole bucket in the usual case -- skipped when ``p.grad`` already
is that buffer's view, which ``zero_grad(set_to_none=False)`` arranges), and a single elementwise
kernel then updates every parameter and state of the bucket.

We chose flat buffers over a pointer table because the update is then an ordinary contiguous
elementwise kernel (coalesced, vectorised, int64 offsets, no indirection, the same code in the
interpreter and on the GPU) and a group of many small tensors costs one launch instead of one
per tensor. The price: ``param.data`` is a new tensor after the first step (a reference to the
old one taken earlier goes stale), and one gradient copy per step unless gradients accumulate
in place. ``nn.Module`` reads ``p.data`` at each use, so modules and ``state_dict`` see the
update; if something re-points ``p.data`` (``Module.to``), the bucket is rebuilt on the next step.

Parameters whose ``grad`` is None are skipped (not updated, their state untouched), as in
PyTorch: the bucket is then updated in a few launches, one per run of consecutive parameters
that have a gradient and share the same step count.

Non-finite gradients are not checked: like ``torch.optim``, a NaN/inf gradient propagates into
the parameter (and its states) elementwise. To refuse them, call
``tinydl.nn.utils.clip_grad_norm_(..., error_if_nonfinite=True)`` before ``step()``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable

import torch

from tinydl.autograd import Tensor
from tinydl.kernels._common import cdiv
from tinydl.ops._validate import check_device

#: Every parameter starts 16-byte aligned in its bucket. The forward and backward kernels read the
#: parameters through these views from the second step on, and Triton vectorises loads only from
#: pointers it knows are 16-byte aligned (LeNet's bf16 conv2 weight would start at byte 312).
ALIGN_BYTES = 16


class _Bucket:
    """The parameters of one group with one (dtype, device), packed into flat buffers: parameter i
    is ``[starts[i], ends[i])``, the gaps between (alignment padding) stay 0 in every buffer."""

    def __init__(self, params: list[Tensor], state_names: tuple[str, ...], opt_state: dict):
        self.params = params
        first = params[0].data
        align = max(1, ALIGN_BYTES // first.element_size())
        self.starts, self.ends = [], []
        pos = 0
        for p in params:
            pos = cdiv(pos, align) * align
            self.starts.append(pos)
            pos += p.data.numel()
            self.ends.append(pos)
        total = pos
        self.data = torch.zeros(total, dtype=first.dtype, device=first.device)
        self.grad = torch.zeros(total, dtype=first.dtype, device=first.device)
        self.pad = torch.zeros(align, dtype=first.dtype, device=first.device)  # gradient gathers' gap filler
        self.states = {name: torch.zeros(total, dtype=first.dtype, device=first.device) for name in state_names}
        self.views, self.grad_views = [], []
        for i, p in enumerate(params):
            sl = self.piece(i)
            view = self.data[sl].view(p.data.shape)
            view.copy_(p.data)
            p.data = view
            self.views.append(view)
            self.grad_views.append(self.grad[sl].view(p.data.shape))
            st = opt_state.get(p)
            if st:
                for name in state_names:
                    old = st.get(name)
                    if isinstance(old, torch.Tensor):
                        new = self.states[name][sl].view(p.data.shape)
                        new.copy_(old)
                        st[name] = new

    def piece(self, i: int) -> slice:
        """Parameter i in the flat buffers."""
        return slice(self.starts[i], self.ends[i])

    def span(self, lo: int, hi: int) -> slice:
        """Parameters lo..hi-1 and the padding between them: what one update kernel runs over
        (padding is 0 in data, grad and states, and every update maps 0 to 0)."""
        return slice(self.starts[lo], self.ends[hi - 1])

    def state_view(self, name: str, i: int) -> torch.Tensor:
        return self.states[name][self.piece(i)].view(self.views[i].shape)

    def stale(self) -> bool:
        """Something re-pointed a parameter's data (Module.to, a user assignment)."""
        return any(p.data is not v for p, v in zip(self.params, self.views))


class Optimizer:
    """Base class. Subclasses set ``_state_names(group)`` and ``_update(group, bucket, lo, hi, key)``."""

    def __init__(self, params: Iterable, defaults: dict[str, Any]):
        self.defaults = dict(defaults)
        self.state: dict[Tensor, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        self._buckets: dict[int, list[_Bucket]] = {}
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            "but got a Tensor")
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for g in groups:
            self.add_param_group(g)

    def __repr__(self) -> str:
        lines = [type(self).__name__ + " ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines + [")"])

    # --- groups --------------------------------------------------------------------------------
    def _validate_group(self, group: dict[str, Any]) -> None:
        """Raise ValueError for invalid hyperparameters (subclasses)."""

    def add_param_group(self, group: dict[str, Any]) -> None:
        if not isinstance(group, dict):
            raise TypeError(f"param group must be a dict, got {type(group).__name__}")
        group = dict(group)
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize tinydl Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
            if p.dtype not in (torch.float32, torch.float16, torch.bfloat16):
                # the update kernels compute in fp32: a float64 parameter would be silently rounded
                raise TypeError(f"optimizer: a parameter has dtype {p.dtype}; supported: float32, float16, bfloat16")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        group["params"] = params
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self._validate_group(group)
        self.param_groups.append(group)

    # --- grads ---------------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """``set_to_none=False`` zeroes the gradients in place; once the optimizer has packed a
        group, the gradients become views of its flat gradient buffer, so the next backward
        accumulates straight into it and ``step`` needs no gather."""
        for gi, g in enumerate(self.param_groups):
            if set_to_none:
                for p in g["params"]:
                    p.grad = None
                continue
            packed = set()
            for b in self._buckets.get(gi, []):
                if b.stale():
                    continue
                b.grad.zero_()
                for p, gv in zip(b.params, b.grad_views):
                    if p.grad is not None:
                        p.grad = gv
                    packed.add(id(p))
            for p in g["params"]:
                if id(p) not in packed and p.grad is not None:
                    p.grad.zero_()

    # --- step ----------------------------------------------------------------------------------
    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        raise NotImplementedError

    def _run_key(self, group: dict[str, Any], state: dict[str, Any]):
        """What must be equal for parameters to share one launch (e.g. the step count)."""
        return None

    def _update(self, group: dict[str, Any], bucket: _Bucket, lo: int, hi: int, key) -> None:
        raise NotImplementedError

    def _buckets_for(self, gi: int, group: dict[str, Any]) -> list[_Bucket]:
        names = self._state_names(group)
        buckets = self._buckets.get(gi)
        packed = [id(p) for b in buckets for p in b.params] if buckets is not None else None
        if buckets is None or any(b.stale() or tuple(b.states) != names for b in buckets) \
                or sorted(packed) != sorted(id(p) for p in group["params"]):  # a param replaced/added/removed
            by_kind: dict[tuple, list[Tensor]] = {}
            for i, p in enumerate(group["params"]):
                check_device(type(self).__name__, f"parameter {i} of group {gi}", p.data)
                by_kind.setdefault((p.data.dtype, p.data.device), []).append(p)
            buckets = [_Bucket(ps, names, self.state) for ps in by_kind.values()]
            self._buckets[gi] = buckets
        return buckets

    def step(self, closure=None):
        """One update of every parameter that has a gradient. Returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            from tinydl.autograd import enable_grad

            with enable_grad():
                loss = closure()
        for gi, group in enumerate(self.param_groups):
            for b in self._buckets_for(gi, group):
                self._step_bucket(group, b)
        return loss

    def _step_bucket(self, group: dict[str, Any], b: _Bucket) -> None:
        runs: list[list] = []  # [lo, hi, key] over consecutive params with a grad and one key
        fresh: list[tuple[int, torch.Tensor]] = []  # gradients that are not yet the bucket's views
        for i, p in enumerate(b.params):
            g = p.grad
            if g is None:
                continue
            if g is not b.grad_views[i]:
                if tuple(g.shape) != tuple(p.data.shape):
                    raise RuntimeError(f"parameter {i} of a group has shape {tuple(p.data.shape)} but its grad "
                                       f"has shape {tuple(g.shape)}")
                fresh.append((i, g))
            key = self._run_key(group, self.state.get(p, {}))
            if runs and runs[-1][1] == i and runs[-1][2] == key:
                runs[-1][1] = i + 1
            else:
                runs.append([i, i + 1, key])
        _gather_grads(b, fresh)
        for lo, hi, key in runs:
            self._update(group, b, lo, hi, key)
            for i in range(lo, hi):
                self._after_update(group, b, i)

    def _after_update(self, group: dict[str, Any], b: _Bucket, i: int) -> None:
        """Expose parameter i's states (views of the bucket) in ``self.state``."""

    # --- state_dict ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """PyTorch's format: ``state`` keyed by the parameter's index (over all groups, in order),
        ``param_groups`` with ``params`` as lists of those indices. Tensors are references, except the
        ``step`` counts (copies)."""
        index: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            ids = []
            for p in g["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            packed = {k: v for k, v in g.items() if k != "params"}
            packed["params"] = ids
            groups.append(packed)
        # step counts are copied: a capturable Adam's parameters share one device count, and a loader
        # that increments each parameter's step in place (torch.optim) must not see them aliased
        state = {index[id(p)]: {k: v.clone() if k == "step" and isinstance(v, torch.Tensor) else v
                                for k, v in s.items()}
                 for p, s in self.state.items() if id(p) in index and s}
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore state and hyperparameters from ``state_dict()`` (tinydl's or torch.optim's).

        Checked first, changed only if everything fits: same number of groups and of
        parameters per group, state tensors of the parameter's size."""
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("optimizer state_dict must be a dict with 'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups, the optimizer has "
                             f"{len(self.param_groups)}")
        id_map: dict[int, Tensor] = {}
        for sg, g in zip(saved_groups, self.param_groups):
            if len(sg["params"]) != len(g["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                                 f"optimizer's group ({len(sg['params'])} vs {len(g['params'])} parameters)")
            for k, p in zip(sg["params"], g["params"]):
                id_map[int(k)] = p
        new_state: dict[Tensor, dict[str, Any]] = defaultdict(dict)
        for k, st in state_dict["state"].items():
            p = id_map.get(int(k))
            if p is None:
                raise ValueError(f"loaded optimizer state has an entry for parameter {k}, which no group lists")
            entry = {}
            for name, v in st.items():
                if isinstance(v, Tensor):
                    v = v.data
                if isinstance(v, torch.Tensor):
                    if name == "step":
                        v = v.detach().to(device="cpu", dtype=torch.float32).clone()
                    else:
                        if v.numel() != p.data.numel():
                            raise ValueError(f"loaded optimizer state {name!r} of parameter {k} has shape "
                                             f"{tuple(v.shape)}, the parameter has {tuple(p.data.shape)}")
                        v = v.detach().to(device=p.data.device, dtype=p.data.dtype).reshape(p.data.shape).clone()
                elif name == "step" and isinstance(v, (int, float)):
                    v = torch.tensor(float(v), device="cpu")
                entry[name] = v
            new_state[p] = entry
        groups = []
        for sg, g in zip(saved_groups, self.param_groups):
            ng = {k: v for k, v in sg.items() if k != "params"}
            if "betas" in ng and isinstance(ng["betas"], list):
                ng["betas"] = tuple(ng["betas"])
            ng["params"] = g["params"]
            groups.append(ng)
        self.state = new_state
        self.param_groups = groups
        self._buckets = {}  # rebuilt on the next step, from these states


def _gather_grads(b: _Bucket, fresh: list[tuple[int, torch.Tensor]]) -> None:
    """Copy the gradients into the bucket's flat gradient buffer. When every parameter has a new,
    contiguous gradient of the bucket's dtype (backward after ``zero_grad()``, the usual step), one
    ``torch.cat`` writes them all: one kernel instead of a copy kernel per parameter."""
    base = b.grad.untyped_storage().data_ptr()
    if len(fresh) == len(b.params) > 1 and all(
            g.is_contiguous() and g.dtype == b.grad.dtype and g.device == b.grad.device
            and g.untyped_storage().data_ptr() != base for _, g in fresh):
        pieces, end = [], 0
        for i, g in fresh:
            if b.starts[i] > end:  # the alignment gap: zeros
                pieces.append(b.pad[:b.starts[i] - end])
            pieces.append(g.reshape(-1))
            end = b.ends[i]
        torch.cat(pieces, out=b.grad)
        return
    for i, g in fresh:
        b.grad_views[i].copy_(g)


def _num(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    if math.isnan(v):
        raise ValueError(f"Invalid {name}: {v}")
    return float(v)
