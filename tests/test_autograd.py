"""Tensor and the autograd engine: accumulation, shared subgraphs, deep graphs, no_grad, freeing."""

import gc
import weakref

import numpy as np
import pytest
import torch

import tinydl as td
from tinydl import functional as F
from tinydl.autograd import Function


class Scale(Function):
    """y = c * x (a test Function: torch compute is fine in tests)."""

    @staticmethod
    def forward(ctx, x, c):
        ctx.c = c
        return x * c

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.c, None


class Pair(Function):
    """y = x + z, returning the *same* tensor as both gradients (aliasing trap)."""

    @staticmethod
    def forward(ctx, x, z):
        return x + z

    @staticmethod
    def backward(ctx, grad):
        return grad, grad


def test_tensor_basics():
    t = td.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    assert t.shape == (2, 2) and t.dtype == torch.float32 and t.ndim == 2 and t.numel() == 4
    assert t.device.type == td.device() and t.is_leaf and t.requires_grad
    assert td.tensor(np.arange(3.0)).dtype == torch.float64  # numpy keeps its dtype, like torch
    assert td.tensor(np.arange(3)).numpy().tolist() == [0, 1, 2]
    assert td.tensor(2.5).item() == 2.5
    with pytest.raises(RuntimeError, match="requires grad"):
        t.numpy()
    assert t.detach().numpy().shape == (2, 2)
    d = t.detach()
    assert not d.requires_grad and d.data.data_ptr() == t.data.data_ptr()
    src = torch.ones(3)
    c = td.tensor(src)
    src.add_(1)
    assert c.data.tolist() == [1.0, 1.0, 1.0]  # td.tensor copies
    with pytest.raises(RuntimeError, match="floating point"):
        td.tensor([1, 2], requires_grad=True)
    with pytest.raises(TypeError, match="torch.Tensor"):
        td.Tensor([1.0])
    assert "requires_grad=True" in repr(t)


def test_backward_accumulates_across_calls():
    x = td.Tensor(torch.randn(3, 4), requires_grad=True)
    w = td.Tensor(torch.randn(2, 4), requires_grad=True)
    g = torch.randn(3, 2)
    F.linear(x, w).backward(g)
    first = w.grad.clone()
    F.linear(x, w).backward(g)
    torch.testing.assert_close(w.grad, 2 * first)


def test_shared_subgraph_and_reused_tensor():
    # h is used twice; x feeds both branches: gradients from every path must add up
    x = torch.randn(5, 6)
    w1, w2 = torch.randn(4, 6), torch.randn(3, 4)
    tx, t1, t2 = (td.Tensor(v, requires_grad=True) for v in (x, w1, w2))
    h = F.linear(tx, t1, activation="tanh")
    out = Pair.apply(F.linear(h, t2), F.linear(h, t2, activation="relu"))
    out2 = Pair.apply(out, out)  # the same tensor twice
    g = torch.randn(5, 3)
    out2.backward(g)

    rx, r1, r2 = (v.clone().requires_grad_() for v in (x, w1, w2))
    rh = torch.tanh(rx @ r1.T)
    rout = rh @ r2.T + torch.relu(rh @ r2.T)
    (rout + rout).backward(g)
    for a, b in ((tx, rx), (t1, r1), (t2, r2)):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)


def test_same_gradient_object_is_not_aliased_between_leaves():
    a = td.Tensor(torch.zeros(3), requires_grad=True)
    b = td.Tensor(torch.zeros(3), requires_grad=True)
    Pair.apply(a, b).backward(torch.ones(3))
    assert a.grad.data_ptr() != b.grad.data_ptr()
    Pair.apply(a, b).backward(torch.ones(3))
    assert a.grad.tolist() == [2.0, 2.0, 2.0] and b.grad.tolist() == [2.0, 2.0, 2.0]


def test_seed_gradient_is_not_modified():
    a = td.Tensor(torch.zeros(3), requires_grad=True)
    seed = torch.ones(3)
    Pair.apply(a, td.Tensor(torch.zeros(3))).backward(seed)
    Pair.apply(a, td.Tensor(torch.zeros(3))).backward(seed)
    assert seed.tolist() == [1.0, 1.0, 1.0] and a.grad.tolist() == [2.0, 2.0, 2.0]


def test_deep_chain_iterative_sort():
    x = td.Tensor(torch.ones(2), requires_grad=True)
    y = x
    for _ in range(10_000):  # recursion would overflow Python's stack long before this
        y = Scale.apply(y, 1.0)
    y.backward(torch.ones(2))
    assert x.grad.tolist() == [1.0, 1.0]


def test_linear_chain_deep():
    # 2,000+ layers of the engine alone are covered above; through real kernels 200 keep CI fast
    # (each interpreted launch costs ~10 ms)
    w = td.Tensor(torch.eye(4), requires_grad=True)
    x = td.Tensor(torch.randn(3, 4), requires_grad=True)
    y = x
    for _ in range(200):
        y = F.linear(y, w)
    y.backward(torch.ones(3, 4))
    torch.testing.assert_close(x.grad, torch.ones(3, 4))
    assert w.grad.shape == (4, 4)


def test_graph_is_freed_after_backward():
    x = td.Tensor(torch.randn(4, 3), requires_grad=True)
    w = td.Tensor(torch.randn(5, 3), requires_grad=True)
    h = F.linear(x, w, activation="gelu")
    ctx_ref = weakref.ref(h._ctx)
    y = F.linear(h, td.Tensor(torch.randn(2, 5)))
    y.backward(torch.ones(4, 2))
    assert h._ctx is None and y._ctx is None
    gc.collect()
    assert ctx_ref() is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        td.Tensor(torch.ones(1)).backward()


def test_retain_graph_allows_second_backward():
    x = td.Tensor(torch.randn(4, 3), requires_grad=True)
    w = td.Tensor(torch.randn(5, 3))
    y = F.linear(x, w, activation="sigmoid")
    y.backward(torch.ones(4, 5), retain_graph=True)
    g1 = x.grad.clone()
    y.backward(torch.ones(4, 5))
    torch.testing.assert_close(x.grad, 2 * g1)


def test_no_grad_records_and_saves_nothing():
    x = td.Tensor(torch.randn(4, 3), requires_grad=True)
    w = td.Tensor(torch.randn(5, 3), requires_grad=True)
    with td.no_grad():
        y = F.linear(x, w, activation="gelu")
    assert not y.requires_grad and y._ctx is None
    assert td.is_grad_enabled()

    @td.no_grad()
    def infer(a):
        assert not td.is_grad_enabled()
        return F.linear(a, w)

    assert not infer(x).requires_grad and td.is_grad_enabled()

    seen = []
    orig = F.Linear.forward

    def spy(ctx, *a, **k):
        out = orig(ctx, *a, **k)
        seen.append(ctx.saved_tensors)
        return out

    F.Linear.forward = staticmethod(spy)
    try:
        with td.no_grad():
            F.linear(x, w, activation="gelu")
    finally:
        F.Linear.forward = staticmethod(orig)
    assert seen == [()]


def test_backward_argument_errors():
    x = td.Tensor(torch.randn(2, 3), requires_grad=True)
    y = F.linear(x, td.Tensor(torch.randn(4, 3)))
    with pytest.raises(RuntimeError, match="only for scalar outputs"):
        y.backward()
    with pytest.raises(RuntimeError, match=r"grad has shape \(4, 2\)"):
        y.backward(torch.ones(4, 2))
    y.backward(td.Tensor(torch.ones(2, 4)))  # a tinydl Tensor works as grad too
    assert x.grad.shape == (2, 3)


def test_scalar_backward_default_grad():
    x = td.Tensor(torch.randn(1, 3), requires_grad=True)
    w = td.Tensor(torch.randn(1, 3))
    F.linear(x, w).backward()
    torch.testing.assert_close(x.grad, w.data)
