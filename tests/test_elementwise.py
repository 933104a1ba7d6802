"""Broadcasting add/sub/mul/div/neg, sum/mean, dropout, view ops and Tensor operators vs PyTorch."""

import pytest
import torch

import tinydl as td
from tinydl import functional as F
from tinydl import nn

from .helpers import check_op, noncontiguous

BROADCAST = [((7, 13), (7, 13)), ((7, 13), (13,)), ((3, 1, 5), (4, 1)), ((1,), (2, 3, 1, 5, 1)),
             ((129,), (1,)), ((2, 1, 3, 1, 5, 1), (1, 4, 1, 2, 1, 3))]  # the last: > 4 dims after merging


@pytest.mark.parametrize("sa,sb", BROADCAST)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_binary_broadcast(op, sa, sb):
    a, b = torch.randn(sa), torch.randn(sb)
    if op == "div":
        b = b.sign() * (b.abs() + 0.5)  # away from 0
    ref = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}[op]
    check_op(getattr(F, op), ref, [a, b])


def test_alpha_scalars_and_operators():
    a, b = torch.randn(5, 3), torch.randn(3)
    check_op(lambda x, y: F.add(x, y, alpha=2.5), lambda x, y: torch.add(x, y, alpha=2.5), [a, b])
    check_op(lambda x, y: F.sub(x, y, alpha=-0.5), lambda x, y: torch.sub(x, y, alpha=-0.5), [a, b])
    check_op(lambda x, y: (x + y) * x - y / (x * x + 1) + 2.0 - x / 3, lambda x, y: (x + y) * x - y / (x * x + 1) + 2.0
             - x / 3, [a, b])
    check_op(lambda x: 1.0 - x, lambda x: 1.0 - x, [a])
    check_op(lambda x: 2.0 / (x * x + 1), lambda x: 2.0 / (x * x + 1), [a])
    check_op(lambda x: 3 * -x, lambda x: 3 * -x, [a])
    check_op(F.neg, torch.neg, [a])


def test_noncontiguous_and_residual():
    x = noncontiguous(torch.randn(9, 11))
    w = torch.randn(11, 9).t()
    check_op(lambda a, b: F.add(a, b), torch.add, [x, w])
    check_op(lambda a, b: a * b, lambda a, b: a * b, [x, w], grad_out=torch.randn(11, 9).t())
    # residual block: y = x + f(x), gradient through both paths
    W = torch.randn(9, 9) * 0.3
    check_op(lambda a, w_: a + F.linear(a, w_, activation="tanh"),
             lambda a, w_: a + torch.tanh(a @ w_.T), [torch.randn(4, 9), W])


def test_division_by_zero_and_nan():
    a = torch.tensor([1.0, -1.0, 0.0, float("nan")])
    b = torch.zeros(4)
    out = F.div(td.Tensor(a), td.Tensor(b))
    torch.testing.assert_close(out.data, a / b, equal_nan=True)


@pytest.mark.parametrize("shape,dim,keepdim", [
    ((7, 13), None, False), ((7, 13), 0, False), ((7, 13), 1, True), ((7, 13), -1, False),
    ((3, 4, 5, 2), (0, 2), False), ((3, 4, 5, 2), (1, 2), True), ((3, 4, 5, 2), (0, 1, 3), False),
    ((1,), 0, False), ((257,), None, True), ((2, 0, 3), 1, False),
])
@pytest.mark.parametrize("op", ["sum", "mean"])
def test_reductions(op, shape, dim, keepdim):
    x = torch.randn(shape)
    if op == "mean" and x.numel() == 0:  # nan, as in PyTorch
        torch.testing.assert_close(F.mean(td.Tensor(x), dim, keepdim).data, torch.mean(x, dim, keepdim), equal_nan=True)
        return
    check_op(lambda t: getattr(F, op)(t, dim, keepdim), lambda t: getattr(torch, op)(t, dim, keepdim) if dim is not None
             else getattr(torch, op)(t).reshape([1] * t.ndim if keepdim else []), [x])
    # and the Tensor methods
    check_op(lambda t: getattr(t, op)(dim=dim, keepdim=keepdim), lambda t: getattr(torch, op)(t, dim, keepdim)
             if dim is not None else getattr(torch, op)(t).reshape([1] * t.ndim if keepdim else []), [x])


def test_reduction_edges():
    x = torch.randn(2, 0, 3)
    out = F.mean(td.Tensor(x), 1)
    assert torch.isnan(out.data).all() and out.shape == (2, 3)
    check_op(lambda t: F.sum(t, (0, 1)), lambda t: t.sum((0, 1)),
             [noncontiguous(torch.randn(5, 6))])
    with pytest.raises(IndexError, match="out of range"):
        F.sum(td.Tensor(torch.randn(2, 3)), 2)
    with pytest.raises(ValueError, match="multiple times"):
        F.sum(td.Tensor(torch.randn(2, 3)), (1, -1))
    with pytest.raises(TypeError, match="dim must be"):
        F.mean(td.Tensor(torch.randn(2, 3)), "x")


def test_dropout_mask_regenerated_and_scaled():
    x = torch.randn(64, 33)
    xt = td.Tensor(x, requires_grad=True)
    td.manual_seed(5)
    y = F.dropout(xt, p=0.3)
    kept = y.data != 0
    assert 0.6 < kept.float().mean().item() < 0.8
    torch.testing.assert_close(y.data[kept], x[kept] / 0.7)
    g = torch.randn(64, 33)
    y.backward(g)
    torch.testing.assert_close(xt.grad, torch.where(kept, g / 0.7, torch.zeros(())))
    # seeded: the same seed gives the same mask, a new call a new one
    td.manual_seed(5)
    y2 = F.dropout(td.Tensor(x), p=0.3)
    assert torch.equal(y2.data, y.data)
    assert not torch.equal(F.dropout(td.Tensor(x), p=0.3).data, y.data)


def test_dropout_propagates_nan_like_torch():
    # PyTorch multiplies by the scaled mask: a dropped NaN or inf is NaN, a dropped -2 is -0.0
    x = torch.tensor([float("nan"), float("inf"), -2.0, 3.0]).repeat(50)
    td.manual_seed(3)
    finite = F.dropout(td.Tensor(torch.ones(200)), p=0.5).data
    td.manual_seed(3)
    y = F.dropout(td.Tensor(x), p=0.5).data
    kept = finite != 0
    assert 0 < kept.sum() < 200
    torch.testing.assert_close(y, x * torch.where(kept, 2.0, 0.0), equal_nan=True)
    dropped_neg = ~kept & (x == -2.0)
    assert dropped_neg.any() and torch.signbit(y[dropped_neg]).all()
    assert torch.isnan(F.dropout(td.Tensor(x), p=1.0).data[0::4]).all()


def test_dropout_modes_and_errors():
    x = td.Tensor(noncontiguous(torch.randn(10, 7)), requires_grad=True)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    y = F.dropout(x, 1.0)
    assert torch.equal(y.data, torch.zeros(10, 7))
    for p in (-0.1, 1.5, "a"):
        with pytest.raises(ValueError, match="between 0 and 1"):
            F.dropout(x, p)
    m = nn.Dropout(0.4)
    m.eval()
    assert m(x) is x
    m.train()
    assert (m(x).data == 0).any()
    assert "p=0.4" in repr(m)
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(2.0)


def test_view_ops_and_gradients():
    x = torch.randn(2, 3, 4)
    check_op(lambda t: t.reshape(4, 6) * 2.0, lambda t: t.reshape(4, 6) * 2.0, [x])
    check_op(lambda t: t.view(-1, 4) * 2.0, lambda t: t.view(-1, 4) * 2.0, [x])
    check_op(lambda t: t.flatten(1) * 2.0, lambda t: t.flatten(1) * 2.0, [x])
    check_op(lambda t: F.flatten(t, 0, 1) * 2.0, lambda t: t.flatten(0, 1) * 2.0, [x])
    check_op(lambda t: t.transpose(0, 2) * 2.0, lambda t: t.transpose(0, 2) * 2.0, [x])
    check_op(lambda t: t.permute(2, 0, 1).sum(0), lambda t: t.permute(2, 0, 1).sum(0), [x])
    check_op(lambda t: t.T * 1.5, lambda t: t.permute(2, 1, 0) * 1.5, [x])
    m = torch.randn(5, 3)
    check_op(lambda t: F.linear(t.t(), t.t()), lambda t: torch.nn.functional.linear(t.t(), t.t()), [m])
    t = td.Tensor(torch.randn(3, 4)).t()
    with pytest.raises(RuntimeError, match="view size"):
        t.view(12)
    with pytest.raises(ValueError, match="reshape"):
        td.Tensor(x).reshape(5, 5)
    with pytest.raises(ValueError, match="permutation"):
        td.Tensor(x).permute(0, 1)
    with pytest.raises(IndexError):
        td.Tensor(x).transpose(0, 3)


def test_errors():
    a = td.Tensor(torch.randn(3, 4))
    with pytest.raises(ValueError, match="do not broadcast"):
        a + td.Tensor(torch.randn(5))
    with pytest.raises(TypeError, match="dtype"):
        F.add(a, td.Tensor(torch.ones(3, 4, dtype=torch.float64)))
    with pytest.raises(TypeError, match="int64"):
        F.mul(td.Tensor(torch.ones(3, dtype=torch.int64)), 2.0)
    with pytest.raises(TypeError, match="two numbers"):
        F.add(1.0, 2.0)
    with pytest.raises(ValueError, match="rounding_mode"):
        F.div(a, a, rounding_mode="floor")
    with pytest.raises(TypeError, match="Tensor"):
        F.add(a, "x")


def test_bf16_broadcast_and_sum():
    a, b = torch.randn(6, 5).bfloat16(), torch.randn(5).bfloat16()
    check_op(F.mul, torch.mul, [a, b])
    check_op(lambda t: F.sum(t, 0), lambda t: t.sum(0), [a])


def test_empty_dim_tuple_reduces_everything():
    x = torch.randn(3, 4)
    check_op(lambda t: t.sum(dim=()), lambda t: t.sum(dim=()), [x])
    check_op(lambda t: t.mean(dim=[]), lambda t: t.mean(dim=[]), [x])
