"""``nn.Module``, ``nn.Parameter`` and ``nn.Sequential``, with PyTorch's names and semantics."""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterator

import torch

from tinydl.autograd import Tensor


class Parameter(Tensor):
    """A leaf Tensor that a Module registers as a parameter (requires_grad by default)."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class: attributes that are Parameters or Modules are registered automatically."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # --- registration --------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning {name!r}")
        for d in (self._parameters, self._modules, self._buffers):
            d.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        for key in ("_parameters", "_modules", "_buffers"):
            if key in d and name in d[key]:
                return d[key][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for d in (self._parameters, self._modules, self._buffers):
            if name in d:
                del d[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is None:
            self._parameters[name] = None
        else:
            setattr(self, name, param)

    def register_buffer(self, name: str, tensor: torch.Tensor | None) -> None:
        """A non-trainable tensor that is part of the state_dict (e.g. running statistics)."""
        self._buffers[name] = tensor

    def add_module(self, name: str, module: Module | None) -> None:
        self._modules[name] = module

    # --- traversal -----------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        stack = [(prefix, self)]
        seen = set()
        while stack:
            name, m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            yield name, m
            children = [(f"{name}.{n}" if name else n, c) for n, c in m._modules.items() if c is not None]
            stack.extend(reversed(children))

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def children(self) -> Iterator[Module]:
        for m in self._modules.values():
            if m is not None:
                yield m

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        seen = set()
        for mname, m in self.named_modules(prefix):
            for pname, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self) -> Iterator[tuple[str, torch.Tensor]]:
        for mname, m in self.named_modules():
            for bname, b in m._buffers.items():
                if b is not None:
                    yield (f"{mname}.{bname}" if mname else bname), b

    # --- modes and grads -----------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()  # in place, as in PyTorch: references to the grad see the zeros

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def to(self, device=None, dtype=None) -> Module:
        """Move parameters and buffers (in place, like PyTorch) to ``device``/``dtype``;
        ``to(torch.float16)`` works as in PyTorch."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        for m in self.modules():
            for _name, p in m._parameters.items():
                if p is not None:
                    p.data = p.data.to(device=device, dtype=dtype if p.data.is_floating_point() else None)
                    if p.grad is not None:  # kept and converted, as in PyTorch
                        p.grad = p.grad.to(device=p.data.device, dtype=p.data.dtype)
            for name, b in m._buffers.items():
                if b is not None:
                    m._buffers[name] = b.to(device=device, dtype=dtype if b.is_floating_point() else None)
        return self

    # --- state ---------------------------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, torch.Tensor]:
        """Name -> torch tensor (detached, sharing storage), PyTorch's naming: ``0.weight`` etc."""
        out = OrderedDict()
        for name, p in self.named_parameters():
            out[name] = p.data.detach()
        for name, b in self.named_buffers():
            out[name] = b.detach()
        return out

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy tensors into this module's parameters/buffers (PyTorch or tinydl state_dict).

        Everything is checked first (missing/unexpected keys with strict, shape mismatches always)
        and nothing changes unless all checks pass. Returns (missing_keys, unexpected_keys).
        """
        own = OrderedDict(self.named_parameters())
        own.update(self.named_buffers())
        given = {k: (v.data if isinstance(v, Tensor) else v) for k, v in state_dict.items()}
        missing = [k for k in own if k not in given]
        unexpected = [k for k in given if k not in own]
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        for k, target in own.items():
            if k not in given:
                continue
            v = given[k]
            if not isinstance(v, torch.Tensor):
                problems.append(f"{k}: expected a tensor, got {type(v).__name__}")
            elif tuple(v.shape) != tuple((target.data if isinstance(target, Tensor) else target).shape):
                tshape = tuple((target.data if isinstance(target, Tensor) else target).shape)
                problems.append(f"size mismatch for {k}: checkpoint has {tuple(v.shape)}, model has {tshape}")
        if problems:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n  "
                               + "\n  ".join(problems))
        with torch.no_grad():  # a copy into storage, not a computation to differentiate
            for k, target in own.items():
                if k in given:
                    dst = target.data if isinstance(target, Tensor) else target
                    dst.copy_(given[k].to(device=dst.device, dtype=dst.dtype))
        return missing, unexpected

    # --- calling -------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"({n}): " + repr(m).replace("\n", "\n  ") for n, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + (")" if not lines else "\n  " + "\n  ".join(lines) + "\n)")


class Sequential(Module):
    """Modules applied in order. A Linear/Conv2d (activation "none") followed by an activation
    module runs as one fused kernel: the pair's output is bit-for-bit what the fused layer gives."""

    def __init__(self, *modules: Module):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                if not isinstance(m, Module):
                    raise TypeError(f"Sequential: argument {i} is a {type(m).__name__}, not a Module")
                self.add_module(str(i), m)

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, i):
        mods = list(self._modules.values())
        if isinstance(i, slice):
            return Sequential(*mods[i])
        return mods[i]

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module: Module) -> Sequential:
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x):
        mods = list(self._modules.values())
        i = 0
        while i < len(mods):
            m = mods[i]
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            fused = getattr(nxt, "fused_activation", None)
            if fused is not None and getattr(m, "fuses_activation", False) and m.activation == "none":
                x = m(x, activation=fused[0], negative_slope=fused[1])
                i += 2
            else:
                x = m(x)
                i += 1
        return x
