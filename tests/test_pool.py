"""F.max_pool2d / F.avg_pool2d / F.flatten and their modules against PyTorch, forward and gradients."""

import pytest
import torch
import torch.nn.functional as TF

import tinydl as td
from tinydl import functional as F
from tinydl import nn
from tinydl.functional import flatten

from .helpers import assert_close, check_op, noncontiguous

INF, NAN = float("inf"), float("nan")


def td_max(**kw):
    return lambda x: F.max_pool2d(x, **kw)


def ref_max(**kw):
    return lambda x: TF.max_pool2d(x, **kw)


def td_avg(**kw):
    return lambda x: F.avg_pool2d(x, **kw)


def ref_avg(**kw):
    return lambda x: TF.avg_pool2d(x, **kw)


# (x shape, options): stride > kernel, overlapping windows, kernel == input, odd sizes, padding on
# one axis only, ceil mode (windows running past the input), dilation (max only)
SWEEP = [
    ((1, 1, 1, 1), dict(kernel_size=1)),
    ((2, 3, 8, 8), dict(kernel_size=2)),
    ((2, 3, 7, 9), dict(kernel_size=2)),                                 # odd sizes: last row/col dropped
    ((2, 3, 9, 11), dict(kernel_size=2, stride=3)),                      # stride > kernel
    ((2, 2, 9, 8), dict(kernel_size=3, stride=1)),                       # heavily overlapping windows
    ((2, 2, 9, 8), dict(kernel_size=3, stride=2, padding=1)),
    ((3, 2, 5, 7), dict(kernel_size=(5, 7))),                            # kernel == input size
    ((2, 3, 8, 9), dict(kernel_size=3, stride=2, padding=(0, 1))),       # padding on one axis only
    ((2, 3, 8, 9), dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0))),
    ((2, 3, 9, 7), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ((2, 3, 10, 10), dict(kernel_size=3, stride=3, ceil_mode=True)),
    ((1, 2, 6, 5), dict(kernel_size=4, stride=3, padding=2, ceil_mode=True)),
    ((2, 3, 17, 13), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1))),
]
DILATED = [
    ((2, 3, 11, 9), dict(kernel_size=3, dilation=2)),
    ((2, 3, 11, 9), dict(kernel_size=3, stride=1, dilation=(2, 1), padding=1)),
    ((2, 3, 12, 10), dict(kernel_size=2, stride=2, dilation=2, ceil_mode=True)),
]


@pytest.mark.parametrize("shape,kw", SWEEP + DILATED, ids=[str(kw) for _, kw in SWEEP + DILATED])
def test_max_pool_sweep(shape, kw):
    check_op(td_max(**kw), ref_max(**kw), [torch.randn(*shape)])


@pytest.mark.parametrize("shape,kw", SWEEP + DILATED, ids=[str(kw) for _, kw in SWEEP + DILATED])
def test_max_pool_sweep_gather_backward(shape, kw, monkeypatch):
    # The interpreter runs the backward of disjoint windows as a scatter (pool._SCATTER_BWD); a GPU
    # gathers. Run the whole sweep (disjoint windows included) through the gather too.
    from tinydl.kernels import pool as kp

    monkeypatch.setattr(kp, "_SCATTER_BWD", False)
    check_op(td_max(**kw), ref_max(**kw), [torch.randn(*shape)])


def test_max_pool_scatter_backward_edge_windows():
    # disjoint windows with padding, ceil mode (clipped last window), dilation with gaps, NaN / -inf
    x = torch.randn(2, 3, 9, 11)
    x[0, 0, 0, 0] = NAN
    x[1, 2, 3:6, 0:3] = -INF
    for kw in (dict(kernel_size=2, padding=1), dict(kernel_size=3, ceil_mode=True),
               dict(kernel_size=(2, 3), stride=(3, 4), dilation=(2, 1), padding=1),
               dict(kernel_size=2, stride=(2, 5), ceil_mode=True)):
        out, ref = check_op(td_max(**kw), ref_max(**kw), [x])
        assert torch.equal(out.data.isnan(), ref.isnan())


@pytest.mark.parametrize("shape,kw", SWEEP, ids=[str(kw) for _, kw in SWEEP])
def test_avg_pool_sweep(shape, kw):
    check_op(td_avg(**kw), ref_avg(**kw), [torch.randn(*shape)])
    check_op(td_avg(count_include_pad=False, **kw), ref_avg(count_include_pad=False, **kw), [torch.randn(*shape)])


@pytest.mark.parametrize("divisor", [5, 1])  # 1: a constexpr on the GPU (see the AOT specs)
def test_avg_pool_divisor_override(divisor):
    x = torch.randn(2, 3, 7, 8)
    check_op(td_avg(kernel_size=3, stride=2, padding=1, divisor_override=divisor),
             ref_avg(kernel_size=3, stride=2, padding=1, divisor_override=divisor), [x])


def test_max_pool_nan_and_inf_in_windows():
    x = torch.randn(1, 2, 6, 6)
    x[0, 0, 0, 1] = NAN                     # one NaN: that window's output is NaN, grad goes to it
    x[0, 0, 2, 2] = NAN                     # two NaNs in one overlapping region
    x[0, 0, 3, 3] = NAN
    x[0, 1, 0:2, 0:2] = -INF                # a window of -inf: output -inf, grad to its first element
    x[0, 1, 4, 4] = INF
    x[0, 1, 2, 3] = -INF
    for kw in (dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=2, stride=1),
               dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)):
        out, ref = check_op(td_max(**kw), ref_max(**kw), [x])
        assert torch.equal(out.data.isnan(), ref.isnan())


def test_avg_pool_nan_and_inf():
    x = torch.randn(1, 2, 6, 6)
    x[0, 0, 1, 1] = NAN
    x[0, 1, 3, 3] = INF
    x[0, 1, 0, 0] = -INF
    check_op(td_avg(kernel_size=3, stride=2, padding=1), ref_avg(kernel_size=3, stride=2, padding=1), [x])


def test_max_pool_all_padding_rows_and_neg_inf_border():
    # every tap of the first window is padding except one -inf: that -inf must win, not the padding
    x = torch.full((1, 1, 3, 3), -INF)
    x[0, 0, 2, 2] = 1.0
    check_op(td_max(kernel_size=3, stride=2, padding=1), ref_max(kernel_size=3, stride=2, padding=1), [x])


def test_max_pool_ties_go_to_first_maximum():
    x = torch.zeros(1, 1, 4, 4)  # every window is a tie
    x[0, 0, 1, 1] = 0.0
    out, _ = check_op(td_max(kernel_size=2, stride=1), ref_max(kernel_size=2, stride=1), [x],
                      grad_out=torch.ones(1, 1, 3, 3))
    xt = td.Tensor(torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]]]), requires_grad=True)
    F.max_pool2d(xt, 2).backward(torch.ones(1, 1, 1, 1))
    assert torch.equal(xt.grad, torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]))


def test_max_pool_integer_valued_overlaps():
    # exact integer grads make any double counting or missed window visible
    x = torch.randperm(7 * 8).float().reshape(1, 1, 7, 8)
    g = torch.arange(1.0, 1 + 4 * 4).reshape(1, 1, 4, 4)
    check_op(td_max(kernel_size=3, stride=2, padding=1), ref_max(kernel_size=3, stride=2, padding=1), [x],
             grad_out=g)


def test_noncontiguous_inputs():
    x = noncontiguous(torch.randn(2, 3, 9, 8))
    g = torch.randn(2, 5, 4, 3).permute(0, 3, 1, 2)  # (2, 3, 5, 4), non-contiguous upstream grad
    check_op(td_max(kernel_size=3, stride=2, padding=1), ref_max(kernel_size=3, stride=2, padding=1), [x],
             grad_out=g)
    check_op(td_avg(kernel_size=3, stride=2, padding=1), ref_avg(kernel_size=3, stride=2, padding=1), [x],
             grad_out=g)
    xl = torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last)
    check_op(td_max(kernel_size=2), ref_max(kernel_size=2), [xl])


def test_unbatched_and_big_plane():
    check_op(td_max(kernel_size=2), ref_max(kernel_size=2), [torch.randn(3, 6, 7)])
    check_op(td_avg(kernel_size=2), ref_avg(kernel_size=2), [torch.randn(3, 6, 7)])
    # more elements than one interpreter block
    check_op(td_max(kernel_size=2), ref_max(kernel_size=2), [torch.randn(2, 3, 150, 160)])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision(dtype):
    x = torch.randn(2, 3, 7, 8).to(dtype)
    check_op(td_max(kernel_size=3, stride=2, padding=1), ref_max(kernel_size=3, stride=2, padding=1), [x])
    check_op(td_avg(kernel_size=2), ref_avg(kernel_size=2), [x])


def test_no_grad_saves_nothing():
    x = td.Tensor(torch.randn(1, 1, 4, 4))
    with td.no_grad():
        y = F.max_pool2d(x, 2)
    assert y._ctx is None and not y.requires_grad


# --- flatten --------------------------------------------------------------------------------------

@pytest.mark.parametrize("start,end", [(0, -1), (1, -1), (1, 2), (-2, -1), (2, 2)])
def test_flatten(start, end):
    x = torch.randn(2, 3, 4, 5)
    check_op(lambda t: flatten(t, start, end), lambda t: torch.flatten(t, start, end), [x])
    check_op(lambda t: flatten(t, start, end), lambda t: torch.flatten(t, start, end), [noncontiguous(x)])


def test_flatten_module_and_errors():
    x = torch.randn(2, 3, 4)
    check_op(nn.Flatten(), torch.nn.Flatten(), [x])
    assert nn.Flatten()(td.Tensor(x)).data.data_ptr() == x.data_ptr()  # a view, no copy
    with pytest.raises(IndexError, match=r"start_dim=3 is out of range for a tensor of 3 dims"):
        flatten(td.Tensor(x), 3)
    with pytest.raises(ValueError, match="cannot come after end_dim"):
        flatten(td.Tensor(x), 2, 1)


# --- modules --------------------------------------------------------------------------------------

def test_modules():
    x = torch.randn(2, 3, 9, 8)
    check_op(nn.MaxPool2d(3, 2, 1), torch.nn.MaxPool2d(3, 2, 1), [x])
    check_op(nn.MaxPool2d(2, ceil_mode=True), torch.nn.MaxPool2d(2, ceil_mode=True), [x])
    check_op(nn.AvgPool2d(3, 2, 1, count_include_pad=False), torch.nn.AvgPool2d(3, 2, 1, count_include_pad=False),
             [x])
    assert "kernel_size=3" in repr(nn.MaxPool2d(3))


# --- bad input ------------------------------------------------------------------------------------

def _t(*shape, dtype=torch.float32):
    return td.Tensor(torch.randn(*shape, dtype=dtype))


@pytest.mark.parametrize("fn", [F.max_pool2d, F.avg_pool2d])
def test_bad_input(fn):
    with pytest.raises(ValueError, match=r"Output size is too small"):
        fn(_t(1, 1, 2, 2), 3)
    with pytest.raises(ValueError, match=r"calculated output size \(1x0x2\)"):
        fn(_t(1, 1, 2, 5), (3, 2))
    with pytest.raises(ValueError, match=r"stride must be positive, got 0"):
        fn(_t(1, 1, 4, 4), 2, 0)
    with pytest.raises(ValueError, match=r"kernel_size must be positive"):
        fn(_t(1, 1, 4, 4), (0, 2))
    with pytest.raises(ValueError, match=r"pad should be at most half of effective kernel size"):
        fn(_t(1, 1, 6, 6), 2, 2, 2)
    with pytest.raises(ValueError, match=r"expected 3-D \(C, H, W\) or 4-D"):
        fn(_t(4, 4), 2)
    with pytest.raises(TypeError, match="supported: float32"):
        fn(_t(1, 1, 4, 4, dtype=torch.float64), 2)
    with pytest.raises(TypeError, match="must be an int or a pair of ints"):
        fn(_t(1, 1, 4, 4), 2.0)
    with pytest.raises(ValueError, match="has 0 channels"):
        fn(_t(1, 0, 4, 4), 2)


def test_empty_batch():
    x = td.Tensor(torch.randn(0, 2, 6, 6), requires_grad=True)
    for fn in (F.max_pool2d, F.avg_pool2d):
        y = fn(x, 2)
        assert y.shape == (0, 2, 3, 3)
        y.backward(torch.empty(0, 2, 3, 3))
        assert x.grad.shape == (0, 2, 6, 6)


def test_max_pool_bad_dilation():
    with pytest.raises(ValueError, match="dilation must be positive"):
        F.max_pool2d(_t(1, 1, 6, 6), 2, dilation=0)
    with pytest.raises(ValueError, match="Output size is too small"):
        F.max_pool2d(_t(1, 1, 4, 4), 3, dilation=2)


def test_error_before_any_launch(monkeypatch):
    from tinydl.kernels import pool as kp

    monkeypatch.setattr(kp, "max_pool2d_fwd", lambda *a, **k: pytest.fail("kernel launched"))
    with pytest.raises(ValueError):
        F.max_pool2d(_t(1, 1, 2, 2), 3)
    assert_close(F.avg_pool2d(_t(1, 1, 2, 2).data * 0, 2).data, torch.zeros(1, 1, 1, 1))
