"""F.conv2d / nn.Conv2d against torch.nn.functional.conv2d (+ activation), forward and gradients."""

import pytest
import torch
import torch.nn.functional as TF
from tinydl.kernels.activations import ACTIVATIONS

import tinydl as td
from tinydl import functional as F
from tinydl import nn

from .helpers import TORCH_ACT, assert_close, check_op, noncontiguous


def ref_conv(act="none", slope=0.01, **kw):
    def f(x, w, b=None):
        z = TF.conv2d(x, w, b, **kw)
        return TF.leaky_relu(z, slope) if act == "leaky_relu" else TORCH_ACT[act](z)
    return f


def td_conv(act="none", slope=0.01, **kw):
    return lambda x, w, b=None: F.conv2d(x, w, b, activation=act, negative_slope=slope, **kw)


def check_conv(x_shape, w_shape, act="none", bias=True, **kw):
    x = torch.randn(*x_shape)
    w = torch.randn(*w_shape) / (w_shape[1] * w_shape[2] * w_shape[3]) ** 0.5
    inputs = [x, w] + ([torch.randn(w_shape[0])] if bias else [])
    check_op(td_conv(act, **kw), ref_conv(act, **kw), inputs)


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_every_activation(act):
    check_conv((2, 3, 7, 6), (5, 3, 3, 3), act, padding=1)


# (x shape, w shape, options): the sweep of the "done when"
SWEEP = [
    ((1, 1, 1, 1), (1, 1, 1, 1), {}),                                    # smallest possible
    ((2, 3, 7, 9), (4, 3, 3, 3), {}),                                    # odd sizes
    ((2, 3, 9, 8), (4, 3, 2, 2), dict(stride=3)),                        # stride > kernel
    ((2, 5, 6, 7), (3, 5, 1, 1), {}),                                    # 1x1 kernel
    ((2, 4, 11, 10), (6, 4, 1, 1), dict(stride=2)),                      # 1x1 strided
    ((3, 2, 5, 7), (4, 2, 5, 7), {}),                                    # kernel == input size
    ((2, 3, 4, 4), (2, 3, 5, 5), dict(padding=1)),                       # kernel == padded input
    ((2, 3, 11, 9), (4, 3, 3, 3), dict(dilation=2)),                     # dilation 2
    ((2, 3, 12, 13), (4, 3, 3, 2), dict(dilation=(2, 3), padding=(2, 1), stride=(2, 1))),
    ((2, 4, 7, 8), (6, 2, 3, 3), dict(groups=2, padding=1)),             # groups 2
    ((2, 6, 9, 7), (6, 1, 3, 3), dict(groups=6, padding=1)),             # depthwise
    ((1, 4, 8, 8), (8, 1, 3, 3), dict(groups=4, stride=2)),              # depthwise multiplier 2
    ((2, 3, 8, 9), (4, 3, 3, 3), dict(padding=(0, 2))),                  # padding on one axis only
    ((2, 3, 8, 9), (4, 3, 3, 3), dict(padding=(1, 0), stride=(1, 2))),
    ((2, 3, 17, 5), (3, 3, 4, 2), dict(stride=(3, 2), padding=(2, 1))),  # even kernel, strides
    ((3, 17, 5, 6), (33, 17, 3, 3), dict(padding=1)),                    # channels past a 16/32 tile
    ((1, 2, 40, 37), (3, 2, 3, 3), dict(stride=2, padding=1)),
]


@pytest.mark.parametrize("x_shape,w_shape,kw", SWEEP, ids=[f"{a}-{b}-{c}" for a, b, c in SWEEP])
def test_sweep(x_shape, w_shape, kw):
    check_conv(x_shape, w_shape, "gelu", **kw)


@pytest.mark.parametrize("x_shape,w_shape,kw", SWEEP, ids=[f"{a}-{b}-{c}" for a, b, c in SWEEP])
def test_sweep_kernel_masks(x_shape, w_shape, kw, monkeypatch):
    # The interpreter zero-pads x and dY on the host so the gathers need no bounds masks
    # (conv._HOST_PAD); a GPU masks in the kernel. Run the sweep through the masked path too.
    from tinydl.kernels import conv as kc

    monkeypatch.setattr(kc, "_HOST_PAD", False)
    check_conv(x_shape, w_shape, "gelu", **kw)


# padding beyond the kernel's reach: some output pixels see only padding (no input pixel at all)
WIDE_PAD = [
    ((2, 3, 5, 4), (4, 3, 1, 1), dict(padding=2, stride=2)),
    ((1, 2, 4, 5), (3, 2, 3, 3), dict(padding=(3, 5), stride=(2, 3), dilation=(1, 2))),
    ((2, 2, 3, 3), (2, 2, 2, 2), dict(padding=(4, 1), stride=(3, 1))),
]


@pytest.mark.parametrize("host_pad", [True, False])
@pytest.mark.parametrize("x_shape,w_shape,kw", WIDE_PAD, ids=[str(c) for _, _, c in WIDE_PAD])
def test_padding_wider_than_kernel(x_shape, w_shape, kw, host_pad, monkeypatch):
    from tinydl.kernels import conv as kc

    monkeypatch.setattr(kc, "_HOST_PAD", host_pad)
    check_conv(x_shape, w_shape, "relu", **kw)


def test_sweep_relu_strided_dgrad():
    check_conv((2, 3, 10, 9), (5, 3, 3, 3), "relu", stride=2, padding=1)
    check_conv((2, 3, 10, 9), (5, 3, 2, 3), "silu", stride=(2, 3), dilation=(2, 1))


def test_no_bias():
    check_conv((2, 3, 6, 6), (4, 3, 3, 3), "tanh", bias=False, padding=1)


def test_padding_strings():
    check_conv((2, 3, 6, 7), (4, 3, 3, 5), "none", padding="same")
    check_conv((2, 3, 6, 7), (4, 3, 3, 3), "none", padding="valid")


@pytest.mark.parametrize("slope", [0.2, 0.0, -0.5])
def test_leaky_relu_slopes(slope):
    x, w, b = torch.randn(2, 3, 6, 5), torch.randn(4, 3, 3, 3), torch.randn(4)
    check_op(td_conv("leaky_relu", slope, padding=1), ref_conv("leaky_relu", slope, padding=1), [x, w, b])


@pytest.mark.parametrize("mask", [(True, False, False), (False, True, False), (False, False, True),
                                  (False, True, True), (True, False, True)])
def test_grad_subset(mask):
    x, w, b = torch.randn(2, 4, 6, 7), torch.randn(6, 2, 3, 3), torch.randn(6)
    check_op(td_conv("gelu", groups=2, padding=1), ref_conv("gelu", groups=2, padding=1), [x, w, b],
             requires_grad=list(mask))


@pytest.mark.parametrize("mask", [(False, False, True), (True, False, True)], ids=["db", "dx+db"])
def test_bias_gradient_without_weight_gradient_many_channels(mask):
    # a frozen weight: the wgrad kernel runs for db alone, over several output-channel tiles, with
    # a filter (5x5) whose r*s is wider than the kernel's column tile would be
    x, w, b = torch.randn(2, 3, 9, 8), torch.randn(200, 3, 5, 5) / 75 ** 0.5, torch.randn(200)
    check_op(td_conv("relu", padding=1), ref_conv("relu", padding=1), [x, w, b], requires_grad=list(mask))


def test_noncontiguous_inputs():
    x = noncontiguous(torch.randn(2, 3, 7, 9))
    w = torch.randn(3, 3, 3, 5).permute(3, 2, 1, 0)  # (5, 3, 3, 3) view with reversed strides
    b = noncontiguous(torch.randn(5))
    assert not x.is_contiguous() and not w.is_contiguous()
    check_op(td_conv("sigmoid", padding=1), ref_conv("sigmoid", padding=1), [x, w, b])
    g = torch.randn(2, 7, 9, 5).permute(0, 3, 1, 2)  # non-contiguous upstream gradient
    check_op(td_conv("elu", padding=1), ref_conv("elu", padding=1), [x, w, b], grad_out=g)
    xl = torch.randn(2, 3, 7, 9).to(memory_format=torch.channels_last)
    check_op(td_conv("relu", stride=2), ref_conv("relu", stride=2), [xl, w, b])


def test_unbatched_input():
    x, w, b = torch.randn(3, 6, 7), torch.randn(4, 3, 3, 3), torch.randn(4)
    out, _ = check_op(td_conv("relu", padding=1), ref_conv("relu", padding=1), [x, w, b])
    assert out.shape == (4, 6, 7)


def test_edge_values_propagate_nan_and_inf():
    x = torch.randn(1, 2, 5, 5)
    x[0, 0, 1, 1] = float("nan")
    x[0, 1, 3, 3] = float("inf")
    w = torch.randn(3, 2, 3, 3)
    for act in ACTIVATIONS:
        out = F.conv2d(td.Tensor(x), td.Tensor(w), activation=act).data
        torch.testing.assert_close(out, ref_conv(act)(x, w), equal_nan=True, rtol=1e-5, atol=1e-5, msg=act)


def test_empty_batch():
    x, w, b = torch.randn(0, 3, 5, 5), torch.randn(4, 3, 3, 3), torch.randn(4)
    xt, wt, bt = td.Tensor(x, True), td.Tensor(w, True), td.Tensor(b, True)
    y = F.conv2d(xt, wt, bt, activation="relu")
    assert y.shape == (0, 4, 3, 3)
    y.backward(torch.empty(0, 4, 3, 3))
    assert xt.grad.shape == (0, 3, 5, 5)
    assert torch.equal(wt.grad, torch.zeros(4, 3, 3, 3)) and torch.equal(bt.grad, torch.zeros(4))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_on_cpu_interpreter(dtype):
    x = torch.randn(2, 3, 6, 7).to(dtype)
    w = (torch.randn(4, 3, 3, 3) * 0.2).to(dtype)
    b = torch.randn(4).to(dtype)
    check_op(td_conv("gelu", padding=1), ref_conv("gelu", padding=1), [x, w, b])


def test_wgrad_split_reduction_matches_unsplit(monkeypatch):
    # the GPU path splits the n*p*q loop over programs and sums fp32 partials in a second kernel;
    # force that path here (the interpreter normally runs unsplit) and compare with torch
    from tinydl.kernels import conv as kc

    x, w = torch.randn(3, 2, 9, 8), torch.randn(5, 2, 3, 3)
    dy = torch.randn(3, 5, 7, 6)
    monkeypatch.setattr(kc, "INTERPRET", False)
    monkeypatch.setattr(kc, "_wgrad_config", lambda rows, cols, loop: (16, 32, 16, 1, 1))
    _, dw, db = kc.conv2d_bwd(dy, None, x, w, x.shape, need_dx=False, need_dw=True, need_db=True)
    xr, wr = x.double().requires_grad_(), w.double().requires_grad_()
    br = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    TF.conv2d(xr, wr, br).backward(dy.double())
    assert_close(dw, wr.grad, what="dw")
    assert_close(db, br.grad, what="db")


# --- bad input ------------------------------------------------------------------------------------

def _t(*shape, dtype=torch.float32):
    return td.Tensor(torch.randn(*shape, dtype=dtype))


def test_channel_mismatch():
    with pytest.raises(ValueError, match=r"input has 4 channels.*expects 3 channels"):
        F.conv2d(_t(1, 4, 5, 5), _t(2, 3, 3, 3))
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\)"):
        F.conv2d(_t(1, 3, 5, 5), _t(2, 3, 3, 3), _t(3))


def test_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match=r"padded input size per channel: \(4 x 6\).*\(5 x 3\).*can't be greater"):
        F.conv2d(_t(1, 3, 4, 6), _t(2, 3, 5, 3))
    with pytest.raises(ValueError, match=r"\(5 x 5\)"):  # dilation makes the kernel 5 wide
        F.conv2d(_t(1, 3, 4, 4), _t(2, 3, 3, 3), dilation=2)


@pytest.mark.parametrize("kw,match", [
    (dict(stride=0), r"stride must be positive, got 0"),
    (dict(stride=(1, -2)), r"stride must be positive"),
    (dict(padding=-1), r"padding must be non-negative"),
    (dict(dilation=0), r"dilation must be positive"),
    (dict(stride=1.5), r"stride must be an int or a pair of ints, got 1.5"),
    (dict(padding=(1, 2, 3)), r"padding must be an int or a pair"),
    (dict(padding="full"), r"padding='full' is not valid"),
    (dict(padding="same", stride=2), r"'same' is not supported for strided"),
    (dict(groups=0), r"groups must be a positive int, got 0"),
])
def test_bad_options(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        F.conv2d(_t(1, 3, 6, 6), _t(3, 3, 3, 3), **kw)


def test_groups_not_dividing_channels():
    with pytest.raises(ValueError, match=r"in_channels=4 must be divisible by groups=3"):
        F.conv2d(_t(1, 4, 5, 5), _t(3, 1, 3, 3), groups=3)
    with pytest.raises(ValueError, match=r"out_channels=5 .* must be divisible by groups=2"):
        F.conv2d(_t(1, 4, 5, 5), _t(5, 2, 3, 3), groups=2)
    with pytest.raises(ValueError, match=r"in_channels=4 must be divisible by groups=3"):
        nn.Conv2d(4, 6, 3, groups=3)


def test_wrong_ndim_and_dtype():
    with pytest.raises(ValueError, match=r"expected 3-D \(C, H, W\) or 4-D .* got shape \(3, 5\)"):
        F.conv2d(_t(3, 5), _t(2, 3, 3, 3))
    with pytest.raises(ValueError, match="weight must be 4-D"):
        F.conv2d(_t(1, 3, 5, 5), _t(2, 3, 3))
    with pytest.raises(TypeError, match="weight is torch.float16 but input is torch.float32"):
        F.conv2d(_t(1, 3, 5, 5), _t(2, 3, 3, 3, dtype=torch.float16))
    with pytest.raises(TypeError, match="supported: float32"):
        F.conv2d(_t(1, 3, 5, 5, dtype=torch.float64), _t(2, 3, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="activation='swish' is not valid"):
        F.conv2d(_t(1, 3, 5, 5), _t(2, 3, 3, 3), activation="swish")


# --- module ---------------------------------------------------------------------------------------

def test_nn_conv2d_matches_torch_init_and_layout():
    td.manual_seed(3)
    conv = nn.Conv2d(4, 6, (3, 2), stride=2, padding=1, groups=2)
    torch.manual_seed(3)
    ref = torch.nn.Conv2d(4, 6, (3, 2), stride=2, padding=1, groups=2)
    assert conv.weight.shape == (6, 2, 3, 2)
    assert torch.equal(conv.weight.data, ref.weight.data) and torch.equal(conv.bias.data, ref.bias.data)
    x = torch.randn(2, 4, 7, 8)
    assert_close(conv(td.Tensor(x)).data, ref(x).detach())
    assert "kernel_size=(3, 2)" in repr(conv)


def test_nn_conv2d_state_dict_roundtrip_with_torch():
    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    model.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 5, 5)
    assert_close(model(td.Tensor(x)).data, ref(x).detach())


@pytest.mark.parametrize("act_module,name", [(nn.ReLU(), "relu"), (nn.GELU(), "gelu"),
                                             (nn.LeakyReLU(0.1), "leaky_relu")])
def test_sequential_fuses_conv_and_activation(act_module, name, monkeypatch):
    from tinydl.ops import conv as ops_conv

    conv = nn.Conv2d(3, 4, 3, padding=1)
    seq = nn.Sequential(conv, act_module)
    x = td.Tensor(torch.randn(2, 3, 5, 5))
    calls = []
    orig = ops_conv.Conv2d.apply
    monkeypatch.setattr(ops_conv.Conv2d, "apply", lambda *a, **k: (calls.append(a[7]), orig(*a, **k))[1])
    fused = seq(x)
    assert calls == [name]  # one fused kernel, activation inside
    assert_close(fused.data, act_module(conv(x)).data)


def test_nn_conv2d_activation_and_bias_false():
    conv = nn.Conv2d(2, 3, 3, bias=False, activation="tanh")
    assert conv.bias is None and "bias=False" in repr(conv)
    x = torch.randn(1, 2, 4, 4)
    check_op(lambda t: conv(t), lambda t: torch.tanh(TF.conv2d(t, conv.weight.data.double())), [x])


@pytest.mark.cuda
def test_cuda_low_precision_and_tf32():
    x = torch.randn(4, 16, 20, 20, device="cuda")
    w = torch.randn(32, 16, 3, 3, device="cuda") * 0.1
    b = torch.randn(32, device="cuda")
    for dtype in (torch.float16, torch.bfloat16):
        check_op(td_conv("relu", padding=1), ref_conv("relu", padding=1), [x.to(dtype), w.to(dtype), b.to(dtype)])
    td.set_float32_matmul_precision("high")
    try:
        # TF32: tolerances relative to each result's largest magnitude (dW entries sum 324 products)
        check_op(td_conv("gelu", stride=2), ref_conv("gelu", stride=2), [x, w, b], tol=(5e-3, 5e-3))
    finally:
        td.set_float32_matmul_precision("highest")
