"""Tensor, Function and reverse-mode autodiff, in the spirit of micrograd and tinygrad.

A ``Tensor`` wraps a ``torch.Tensor`` (``.data``) used purely as storage. Every computation is a
``Function`` whose ``forward(ctx, *args)`` takes and returns torch tensors (it launches Triton
kernels) and whose ``backward(ctx, grad)`` returns one gradient per forward argument. Calling
``Fn.apply(...)`` records the node on the output; ``loss.backward()`` walks the recorded graph in
reverse topological order (sorted iteratively, so 10,000-layer chains are fine), accumulates
gradients, and frees the graph as it goes.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from tinydl import _runtime
from tinydl.kernels import elementwise as _ew

# ------------------------------------------------------------------------------------------------
# Grad mode
# ------------------------------------------------------------------------------------------------

_grad_enabled = True


def is_grad_enabled() -> bool:
    return _grad_enabled


class _GradMode:
    """Context manager and decorator that sets grad mode, restoring the previous one on exit."""

    enabled: bool

    def __enter__(self):
        global _grad_enabled
        self._prev, _grad_enabled = _grad_enabled, self.enabled

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._prev
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradMode):
    """Inference mode: no graph is recorded and no Function saves anything for backward."""

    enabled = False


class enable_grad(_GradMode):
    enabled = True


# ------------------------------------------------------------------------------------------------
# Function
# ------------------------------------------------------------------------------------------------

class Context:
    """What a Function's forward leaves for its backward.

    ``needs_input_grad[i]`` tells whether forward argument ``i`` needs a gradient; when none does
    (or grad mode is off) ``save_for_backward`` stores nothing.
    """

    def __init__(self, needs_input_grad: tuple[bool, ...]):
        self.needs_input_grad = needs_input_grad
        self.requires_grad = any(needs_input_grad)
        self.saved_tensors: tuple = ()

    def save_for_backward(self, *tensors):
        if self.requires_grad:
            self.saved_tensors = tensors


class Function:
    """Subclass with static ``forward(ctx, *args, **kwargs)`` and ``backward(ctx, grad)``."""

    @staticmethod
    def forward(ctx: Context, *args, **kwargs) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, grad: torch.Tensor):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs) -> Tensor:
        needs = tuple(isinstance(a, Tensor) and a.requires_grad and _grad_enabled for a in args)
        ctx = Context(needs)
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        out = cls.forward(ctx, *raw, **kwargs)
        result = Tensor(out, requires_grad=ctx.requires_grad)
        if ctx.requires_grad:
            ctx.fn = cls
            ctx.parents = tuple(a if n else None for a, n in zip(args, needs))
            result._ctx = ctx
        return result


# ------------------------------------------------------------------------------------------------
# Tensor
# ------------------------------------------------------------------------------------------------

def _as_torch(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, Tensor):
        return x.data
    if isinstance(x, torch.Tensor):
        return x
    raise TypeError(f"{what} must be a tinydl.Tensor or torch.Tensor, got {type(x).__name__}")


class Tensor:
    """A torch tensor (``.data``) plus what autograd needs: ``requires_grad``, ``grad``, ``_ctx``."""

    __slots__ = ("data", "requires_grad", "grad", "_ctx", "__weakref__")
    # numpy must defer to our operators, not broadcast over us
    __array_priority__ = 1000

    def __init__(self, data: torch.Tensor, requires_grad: bool = False):
        if isinstance(data, Tensor):
            data = data.data
        if not isinstance(data, torch.Tensor):
            raise TypeError(f"Tensor(data): data must be a torch.Tensor, got {type(data).__name__}; "
                            "use tinydl.tensor(...) to build one from lists or numpy arrays")
        if requires_grad and not (data.is_floating_point() or data.is_complex()):
            raise RuntimeError(f"only floating point tensors can require gradients, got dtype {data.dtype}")
        self.data = data
        self.requires_grad = bool(requires_grad)
        self.grad: torch.Tensor | None = None
        self._ctx: Context | None = None

    # --- torch-like attributes -----------------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    def size(self, dim: int | None = None):
        return self.data.size() if dim is None else self.data.size(dim)

    def dim(self) -> int:
        return self.data.dim()

    def numel(self) -> int:
        return self.data.numel()

    def __len__(self) -> int:
        return len(self.data)

    def item(self):
        return self.data.item()

    def numpy(self) -> np.ndarray:
        if self.requires_grad:
            raise RuntimeError("can't call numpy() on a Tensor that requires grad: use .detach().numpy()")
        return self.data.detach().cpu().numpy()

    def tolist(self):
        return self.data.tolist()

    def detach(self) -> Tensor:
        """A new leaf sharing storage, cut from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if not self.is_leaf:
            raise RuntimeError("requires_grad_ can only be changed on leaf tensors")
        Tensor.__init__(self, self.data, requires_grad)
        return self

    def __repr__(self) -> str:
        extra = ", requires_grad=True" if self.requires_grad else ""
        body = repr(self.data).replace("tensor(", "", 1)[:-1] if self.data.numel() else str(list(self.shape))
        return f"tinydl.Tensor({body}{extra})"

    # --- arithmetic, reductions and views (tinydl.ops.elementwise; differentiable) --------------
    def __add__(self, other):
        return _ops().add(self, other)

    def __radd__(self, other):
        return _ops().add(other, self)

    def __sub__(self, other):
        return _ops().sub(self, other)

    def __rsub__(self, other):
        return _ops().sub(other, self)

    def __mul__(self, other):
        return _ops().mul(self, other)

    def __rmul__(self, other):
        return _ops().mul(other, self)

    def __truediv__(self, other):
        return _ops().div(self, other)

    def __rtruediv__(self, other):
        return _ops().div(other, self)

    def __neg__(self):
        return _ops().neg(self)

    def sum(self, dim=None, keepdim: bool = False) -> Tensor:
        return _ops().sum(self, dim, keepdim)

    def mean(self, dim=None, keepdim: bool = False) -> Tensor:
        return _ops().mean(self, dim, keepdim)

    def reshape(self, *shape) -> Tensor:
        return _ops().reshape(self, _ops()._shape_arg(shape))

    def view(self, *shape) -> Tensor:
        return _ops().view(self, _ops()._shape_arg(shape))

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        return _ops().flatten(self, start_dim, end_dim)

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        return _ops().transpose(self, dim0, dim1)

    def permute(self, *dims) -> Tensor:
        return _ops().permute(self, _ops()._shape_arg(dims))

    def t(self) -> Tensor:
        if self.ndim > 2:
            raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {self.ndim}D")
        return self if self.ndim < 2 else self.transpose(0, 1)

    @property
    def T(self) -> Tensor:  # noqa: N802 (PyTorch's name)
        return self.permute(*reversed(range(self.ndim)))

    def relu(self) -> Tensor:
        from tinydl import functional

        return functional.relu(self)

    def sigmoid(self) -> Tensor:
        from tinydl import functional

        return functional.sigmoid(self)

    def tanh(self) -> Tensor:
        from tinydl import functional

        return functional.tanh(self)

    # --- autograd ------------------------------------------------------------------------------
    def backward(self, grad: torch.Tensor | Tensor | None = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) * grad into every leaf's ``.grad`` that requires it.

        ``grad`` may be omitted only for a one-element tensor (it is then 1). The graph is freed
        as it is walked unless ``retain_graph`` is True.
        """
        if not self.requires_grad:
            raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
        if grad is None:
            if self.numel() != 1:
                raise RuntimeError(f"grad can be implicitly created only for scalar outputs; this "
                                   f"tensor has shape {tuple(self.shape)}: pass grad=")
            grad = torch.ones_like(self.data)
        else:
            grad = _as_torch(grad, "grad")
            if grad.shape != self.shape:
                raise RuntimeError(f"grad has shape {tuple(grad.shape)} but the tensor has shape "
                                   f"{tuple(self.shape)}")
            if grad.dtype != self.dtype or grad.device != self.device:
                raise RuntimeError(f"grad is {grad.dtype} on {grad.device}, the tensor is {self.dtype} "
                                   f"on {self.device}")
        _run_backward(self, grad, retain_graph)


def _ops():
    """tinydl.ops.elementwise, imported on first use (it imports this module)."""
    from tinydl.ops import elementwise

    return elementwise


def _topo_order(root: Tensor) -> list[Tensor]:
    """Nodes reachable from root through recorded ops, each after everything it depends on.

    Iterative post-order DFS: recursion would overflow on deep graphs.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node._ctx is not None:
            for p in node._ctx.parents:
                if p is not None and id(p) not in visited:
                    stack.append((p, False))
    return order


def _run_backward(root: Tensor, grad: torch.Tensor, retain_graph: bool) -> None:
    order = _topo_order(root)
    grads: dict[int, torch.Tensor] = {id(root): grad}
    # Tensors we may not write into: the caller's seed gradient and anything already handed out
    # as some leaf's .grad (a backward may return one tensor for two inputs, or a view of grad).
    handed_out: set[int] = {id(grad)}
    for node in reversed(order):
        g = grads.pop(id(node), None)
        if g is None:
            continue
        ctx = node._ctx
        if ctx is None:  # a leaf
            if node.requires_grad:
                _accumulate_leaf(node, g, handed_out)
            continue
        with no_grad():
            in_grads = ctx.fn.backward(ctx, g)
        if not isinstance(in_grads, tuple):
            in_grads = (in_grads,)
        if len(in_grads) < len(ctx.parents):
            raise RuntimeError(f"{ctx.fn.__name__}.backward returned {len(in_grads)} gradients, "
                               f"expected {len(ctx.parents)}")
        for parent, pg in zip(ctx.parents, in_grads):
            if parent is None or pg is None:
                continue
            if pg.shape != parent.shape:
                raise RuntimeError(f"{ctx.fn.__name__}.backward returned a gradient of shape "
                                   f"{tuple(pg.shape)} for an input of shape {tuple(parent.shape)}")
            prev = grads.get(id(parent))
            # out-of-place: pg may alias a tensor that another node also received
            grads[id(parent)] = pg if prev is None else _ew.add(prev, pg)
        if not retain_graph:  # free the graph: saved tensors and links to parents
            node._ctx = None
            ctx.saved_tensors = ()
            ctx.parents = ()


def _accumulate_leaf(leaf: Tensor, g: torch.Tensor, handed_out: set[int]) -> None:
    if leaf.grad is None:
        if id(g) in handed_out or g._base is not None or not g.is_contiguous():
            g = g.clone(memory_format=torch.contiguous_format)
        leaf.grad = g
        handed_out.add(id(g))
    else:
        if not leaf.grad.is_contiguous():
            leaf.grad = leaf.grad.contiguous()
        _ew.add(leaf.grad, g, out=leaf.grad)


# ------------------------------------------------------------------------------------------------
# Construction
# ------------------------------------------------------------------------------------------------

def tensor(data: Any, requires_grad: bool = False, dtype: torch.dtype | None = None,
           device: str | torch.device | None = None) -> Tensor:
    """A new leaf Tensor holding a copy of ``data`` (torch tensor, numpy array, list or number).

    It goes on ``device`` or, by default, ``tinydl.device()``. Like ``torch.tensor``, dtype is
    inferred (Python floats -> float32).
    """
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, torch.Tensor):
        t = data.detach().clone()
    else:
        t = torch.tensor(data)  # copies; Python floats become float32, numpy keeps its dtype
    t = t.to(device=device or _runtime.device(), dtype=dtype or t.dtype)
    return Tensor(t, requires_grad=requires_grad)
