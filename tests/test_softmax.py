"""F.softmax / F.log_softmax / nn.Softmax / nn.LogSoftmax against PyTorch (float64 reference), forward
and gradient: row lengths from 1 to 50,257, other dims, non-contiguous inputs, edge values, errors."""

import pytest
import torch

import tinydl as td
from tinydl import functional as F
from tinydl import nn

from .helpers import check_op, noncontiguous

FNS = {"softmax": (F.softmax, torch.softmax), "log_softmax": (F.log_softmax, torch.log_softmax)}


def pair(name, dim=-1):
    f, rf = FNS[name]
    return (lambda x: f(x, dim)), (lambda x: rf(x, dim))


@pytest.mark.parametrize("name", list(FNS))
@pytest.mark.parametrize("N,C", [(1, 1), (7, 2), (33, 10), (13, 63), (13, 65), (5, 101), (5, 255), (5, 257),
                                 (3, 1000), (3, 1023), (3, 1025), (2, 4095), (2, 4097), (2, 50257), (1500, 37)])
def test_sizes(name, N, C):
    check_op(*pair(name), [torch.randn(N, C) * 3])


@pytest.mark.parametrize("name", list(FNS))
@pytest.mark.parametrize("dim", [0, 1, -1, -3])
def test_other_dims(name, dim):
    check_op(*pair(name, dim), [torch.randn(4, 5, 6)])


@pytest.mark.parametrize("name", list(FNS))
def test_noncontiguous_input_and_grad(name):
    x = noncontiguous(torch.randn(11, 17))
    check_op(*pair(name), [x], grad_out=noncontiguous(torch.randn(11, 17)))
    check_op(*pair(name, 0), [torch.randn(9, 6).t()])


@pytest.mark.parametrize("name", list(FNS))
def test_scalar_and_1d(name):
    check_op(*pair(name, 0), [torch.randn(19)])
    check_op(*pair(name, 0), [torch.tensor(2.5)])


@pytest.mark.parametrize("name", list(FNS))
def test_edge_values(name):
    inf, nan = float("inf"), float("nan")
    x = torch.tensor([[1e4, -1e4, 0.0, 1e4 - 2], [3e38, -3e38, 1.0, 3e38], [-inf, 0.0, 1.0, -inf],
                      [-inf, -inf, -inf, -inf], [1.0, nan, 2.0, 3.0], [0.5, 0.25, 0.0, -0.5]])
    f, rf = FNS[name]
    a = td.Tensor(x, requires_grad=True)
    y = f(a, -1)
    g = torch.randn(6, 4)
    y.backward(g)
    r = x.clone().requires_grad_()
    ry = rf(r, -1)
    ry.backward(g)
    torch.testing.assert_close(y.data, ry, equal_nan=True, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a.grad, r.grad, equal_nan=True, rtol=1e-5, atol=1e-5)
    # NaN only in the all -inf row and the NaN row, nowhere else
    assert torch.isnan(y.data[3]).all() and torch.isnan(y.data[4]).all()
    assert not torch.isnan(y.data[[0, 1, 2, 5]]).any()
    # finite rows against float64
    keep = [0, 2, 5]
    check_op(*pair(name), [x[keep]])


def test_log_softmax_keeps_tiny_log_probabilities():
    # the max entry's log-probability is -log1p(tiny): must not round to 0 relative to float64
    # (exact reference: PyTorch's float64 log_softmax itself rounds it to 0 past a margin of ~40)
    x = torch.tensor([[20.0, 0.0, -1.0], [60.0, 1.0, 2.0], [15.0, 15.0, 0.0]])
    y = F.log_softmax(td.Tensor(x)).data
    xd = x.double()
    ref_max = -torch.log1p((xd[:, 1:] - xd[:, :1]).exp().sum(1))
    torch.testing.assert_close(y[:, 0].double(), ref_max, rtol=1e-6, atol=0)
    torch.testing.assert_close(y.double(), torch.log_softmax(xd, -1), rtol=1e-6, atol=1e-15)


@pytest.mark.parametrize("name", list(FNS))
def test_fp16(name):
    out, _ = check_op(*pair(name), [torch.randn(23, 37).half()])
    assert out.dtype == torch.float16


def test_empty():
    for shape in [(0, 5), (3, 0)]:
        for name in FNS:
            out, _ = check_op(*pair(name), [torch.randn(*shape)])
            assert out.shape == shape


def test_modules():
    x = torch.randn(6, 5)
    check_op(lambda a: nn.Softmax(dim=1)(a), lambda a: torch.nn.Softmax(dim=1)(a), [x])
    check_op(lambda a: nn.LogSoftmax(dim=0)(a), lambda a: torch.nn.LogSoftmax(dim=0)(a), [x])
    check_op(lambda a: nn.Softmax()(a), lambda a: torch.softmax(a, -1), [x])
    assert "dim=1" in repr(nn.Softmax(dim=1))


def test_bad_arguments():
    x = td.Tensor(torch.randn(3, 4))
    with pytest.raises(ValueError, match="dim=2 is out of range"):
        F.softmax(x, 2)
    with pytest.raises(ValueError, match="dim=-3 is out of range"):
        F.log_softmax(x, -3)
    with pytest.raises(TypeError, match="dim must be an int"):
        F.softmax(x, 1.0)
    with pytest.raises(TypeError, match="input has dtype torch.int64"):
        F.softmax(td.Tensor(torch.zeros(3, dtype=torch.long)))
    with pytest.raises(NotImplementedError, match="dtype"):
        F.softmax(x, -1, dtype=torch.float64)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", list(FNS))
def test_low_precision_on_gpu(dtype, name):
    check_op(*pair(name), [torch.randn(300, 5000, device="cuda").to(dtype)])
