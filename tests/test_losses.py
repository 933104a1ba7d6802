"""F.mse_loss / F.l1_loss / F.binary_cross_entropy_with_logits and their modules against PyTorch
(float64 reference): every reduction, gradients of input and target, odd sizes, non-contiguous
inputs, extreme logits for BCE, empty inputs, bad arguments."""

import pytest
import torch
import torch.nn.functional as TF

import tinydl as td
from tinydl import functional as F
from tinydl import nn

from .helpers import check_op, noncontiguous

LOSSES = {
    "mse_loss": (F.mse_loss, TF.mse_loss, nn.MSELoss, torch.nn.MSELoss),
    "l1_loss": (F.l1_loss, TF.l1_loss, nn.L1Loss, torch.nn.L1Loss),
    "bce": (F.binary_cross_entropy_with_logits, TF.binary_cross_entropy_with_logits, nn.BCEWithLogitsLoss,
            torch.nn.BCEWithLogitsLoss),
}


def inputs(name, *shape):
    x = torch.randn(*shape) * 3
    y = torch.rand(*shape) if name == "bce" else torch.randn(*shape)
    return x, y


def pair(name, **kw):
    f, rf = LOSSES[name][:2]
    return (lambda x, y: f(x, y, **kw)), (lambda x, y: rf(x, y, **kw))


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(1,), (7, 13), (3, 5, 17), (1025,), (70001,)])
def test_reductions_and_sizes(name, reduction, shape):
    check_op(*pair(name, reduction=reduction), list(inputs(name, *shape)))


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("mask", [(True, False), (False, True)])
def test_grad_subset(name, mask):
    check_op(*pair(name), list(inputs(name, 9, 4)), requires_grad=list(mask))


@pytest.mark.parametrize("name", list(LOSSES))
def test_noncontiguous(name):
    x, y = inputs(name, 11, 8)
    check_op(*pair(name, reduction="none"), [noncontiguous(x), y.t().contiguous().t()],
             grad_out=noncontiguous(torch.randn(11, 8)))
    check_op(*pair(name), [x.t(), noncontiguous(y.t().contiguous())])


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty(name, reduction):
    x, y = torch.randn(0, 3), torch.rand(0, 3)
    out = LOSSES[name][0](td.Tensor(x), td.Tensor(y), reduction=reduction).data
    ref = LOSSES[name][1](x, y, reduction=reduction)
    torch.testing.assert_close(out, ref, equal_nan=True)


@pytest.mark.parametrize("name", list(LOSSES))
def test_fp16(name):
    x, y = inputs(name, 33, 7)
    out, _ = check_op(*pair(name, reduction="mean"), [x.half(), y.half()])
    assert out.dtype == torch.float16
    check_op(*pair(name, reduction="none"), [x.half(), y.half()])


def test_l1_gradient_at_ties_is_zero():
    x = torch.tensor([1.0, 2.0, -3.0, 0.0])
    y = torch.tensor([1.0, 1.0, -3.0, 0.5])
    check_op(*pair("l1_loss", reduction="sum"), [x, y])


def test_bce_extreme_logits_are_stable():
    # e^-|x| underflows or saturates: loss and gradients stay finite and exact where PyTorch's are
    x = torch.tensor([100.0, -100.0, 1e4, -1e4, 50.0, -50.0, 1e-7, 0.0, 20.0, -20.0, 3e38, -3e38])
    y = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0, 0.0])
    check_op(*pair("bce", reduction="none"), [x, y])
    # the tiny losses of confident, correct logits keep their relative precision (log1p, not log(1 + e))
    x = torch.tensor([20.0, 30.0, -25.0, 60.0])
    y = torch.tensor([1.0, 1.0, 0.0, 1.0])
    out = F.binary_cross_entropy_with_logits(td.Tensor(x), td.Tensor(y), reduction="none").data
    xd, yd = x.double(), y.double()
    exact = xd.clamp_min(0) - xd * yd + torch.log1p(torch.exp(-xd.abs()))  # PyTorch's float64 is ~1e-5 off here
    torch.testing.assert_close(out.double(), exact, rtol=1e-6, atol=0)


def test_nan_propagates():
    nan = float("nan")
    x, y = torch.tensor([1.0, nan, 0.5]), torch.tensor([0.0, 1.0, nan])
    for name in LOSSES:
        f, rf = LOSSES[name][:2]
        a, b = td.Tensor(x, requires_grad=True), td.Tensor(y, requires_grad=True)
        out = f(a, b, reduction="none")
        out.backward(torch.ones(3))
        ra, rb = x.clone().requires_grad_(), y.clone().requires_grad_()
        rout = rf(ra, rb, reduction="none")
        rout.backward(torch.ones(3))
        torch.testing.assert_close(out.data, rout, equal_nan=True, msg=name)
        torch.testing.assert_close(a.grad, ra.grad, equal_nan=True, msg=name)
        assert torch.isnan(f(td.Tensor(x), td.Tensor(y)).data), name


def test_deterministic_sum():
    x, y = torch.randn(300000), torch.randn(300000)
    a = F.mse_loss(td.Tensor(x), td.Tensor(y), reduction="sum").data
    b = F.mse_loss(td.Tensor(x), td.Tensor(y), reduction="sum").data
    assert torch.equal(a, b)
    torch.testing.assert_close(a.double(), TF.mse_loss(x.double(), y.double(), reduction="sum"), rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", list(LOSSES))
def test_modules(name):
    _, rf, mod, rmod = LOSSES[name]
    x, y = inputs(name, 6, 5)
    for r in ("mean", "sum", "none"):
        m = mod(reduction=r)
        check_op(lambda a, b, m=m: m(a, b), lambda a, b, r=r: rmod(reduction=r)(a, b), [x, y])
    assert "reduction='sum'" in repr(mod(reduction="sum"))
    with pytest.raises(ValueError, match="reduction='avg' is not valid"):
        mod(reduction="avg")
    # legacy flags map like PyTorch's
    check_op(lambda a, b: mod(size_average=False)(a, b), lambda a, b: rf(a, b, reduction="sum"), [x, y])


def test_bad_arguments():
    x, y = td.Tensor(torch.randn(4, 3)), td.Tensor(torch.randn(4, 3))
    for name in LOSSES:
        f = LOSSES[name][0]
        with pytest.raises(ValueError, match=r"target shape \(3, 4\) must equal input shape \(4, 3\)"):
            f(x, td.Tensor(torch.randn(3, 4)))
        with pytest.raises(ValueError, match="reduction='avg' is not valid"):
            f(x, y, reduction="avg")
        with pytest.raises(TypeError, match="float16 but input is torch.float32"):
            f(x, td.Tensor(torch.randn(4, 3).half()))
        with pytest.raises(TypeError, match="target has dtype torch.int64"):
            f(x, td.Tensor(torch.zeros(4, 3, dtype=torch.long)))
    with pytest.raises(NotImplementedError, match="pos_weight="):
        F.binary_cross_entropy_with_logits(x, y, pos_weight=torch.ones(3))
    with pytest.raises(NotImplementedError, match="weight="):
        nn.BCEWithLogitsLoss(weight=torch.ones(3))


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_on_gpu(name, dtype):
    x, y = inputs(name, 300, 1000)
    check_op(*pair(name), [x.cuda().to(dtype), y.cuda().to(dtype)])
