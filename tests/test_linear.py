"""F.linear / nn.Linear against torch.nn.functional.linear (+ activation), forward and gradients."""

import pytest
import torch
import torch.nn.functional as TF
from tinydl.kernels.activations import ACTIVATIONS

import tinydl as td
from tinydl import functional as F
from tinydl import nn

from .helpers import TORCH_ACT, assert_close, check_op, noncontiguous


def ref_linear(act, slope=0.01):
    def f(x, w, b=None):
        z = TF.linear(x, w, b)
        return TF.leaky_relu(z, slope) if act == "leaky_relu" else TORCH_ACT[act](z)
    return f


def td_linear(act, slope=0.01):
    return lambda x, w, b=None: F.linear(x, w, b, activation=act, negative_slope=slope)


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_every_activation(act):
    x, w, b = torch.randn(37, 53), torch.randn(29, 53) * 0.2, torch.randn(29)
    check_op(td_linear(act), ref_linear(act), [x, w, b])


# sizes: 1, block sizes +-1 (GPU 32, 64, 128, 256; interpreter up to 256 x 1024) and primes
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (1, 7, 3), (15, 17, 16), (33, 31, 63), (65, 129, 127),
                                   (127, 257, 129), (13, 300, 1), (129, 5, 257), (257, 1025, 33),
                                   (300, 17, 1025)])
def test_sizes(M, K, N):
    x, w, b = torch.randn(M, K), torch.randn(N, K) / K**0.5, torch.randn(N)
    check_op(td_linear("gelu"), ref_linear("gelu"), [x, w, b])
    check_op(td_linear("relu"), ref_linear("relu"), [x, w, b])


@pytest.mark.parametrize("act", [a for a in ACTIVATIONS if a != "none"])
def test_backward_through_a_dz_pass(act, monkeypatch):
    # Big problems form dZ = dY * act'(s) in one elementwise pass, then run the GEMMs without an
    # activation; force that path at a small size and check it against PyTorch.
    from tinydl.kernels import linear as lin

    calls = []
    real = lin._ew.activation_bwd
    monkeypatch.setattr(lin, "DZ_PASS_MIN_ELEMENTS", 0)
    monkeypatch.setattr(lin, "DZ_PASS_MIN_K", 0)
    monkeypatch.setattr(lin._ew, "activation_bwd", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    x, w, b = torch.randn(37, 53), torch.randn(29, 53) * 0.2, torch.randn(29)
    check_op(td_linear(act), ref_linear(act), [x, w, b])
    assert calls == [act]


def test_leading_batch_dims():
    x, w, b = torch.randn(2, 3, 5, 19), torch.randn(11, 19), torch.randn(11)
    out, _ = check_op(td_linear("silu"), ref_linear("silu"), [x, w, b])
    assert out.shape == (2, 3, 5, 11)


def test_one_dim_input():
    x, w, b = torch.randn(19), torch.randn(11, 19), torch.randn(11)
    out, _ = check_op(td_linear("tanh"), ref_linear("tanh"), [x, w, b])
    assert out.shape == (11,)


def test_noncontiguous_inputs():
    x = noncontiguous(torch.randn(23, 41))
    w = torch.randn(41, 17).t()  # (17, 41) view with strides (1, 17)
    b = noncontiguous(torch.randn(17))
    assert not w.is_contiguous() and not x.is_contiguous()
    check_op(td_linear("sigmoid"), ref_linear("sigmoid"), [x, w, b])
    # and a non-contiguous upstream gradient
    g = torch.randn(17, 23).t()
    check_op(td_linear("elu"), ref_linear("elu"), [x, w, b], grad_out=g)


def test_no_bias():
    x, w = torch.randn(9, 14), torch.randn(6, 14)
    check_op(td_linear("leaky_relu"), ref_linear("leaky_relu"), [x, w])


@pytest.mark.parametrize("slope", [0.2, 0.0, -0.5])
def test_leaky_relu_slopes(slope):
    # slope <= 0 saves z instead of y (the sign of y no longer tells the sign of z)
    x, w, b = torch.randn(21, 10), torch.randn(7, 10), torch.randn(7)
    check_op(td_linear("leaky_relu", slope), ref_linear("leaky_relu", slope), [x, w, b])


@pytest.mark.parametrize("mask", [(True, False, False), (False, True, False), (False, False, True),
                                  (False, True, True), (True, False, True)])
def test_grad_subset(mask):
    x, w, b = torch.randn(12, 20), torch.randn(8, 20), torch.randn(8)
    check_op(td_linear("gelu"), ref_linear("gelu"), [x, w, b], requires_grad=list(mask))


def test_only_needed_grads_are_computed():
    x = td.Tensor(torch.randn(4, 5))
    w = td.Tensor(torch.randn(3, 5), requires_grad=True)
    y = F.linear(x, w, activation="relu")
    y.backward(torch.ones(4, 3))
    assert x.grad is None and w.grad is not None


def test_edge_values_propagate_nan_and_inf():
    x = torch.tensor([[1.0, float("nan")], [2.0, 3.0], [float("inf"), 1.0]])
    w = torch.tensor([[1.0, 1.0], [0.5, -1.0]])
    for act in ACTIVATIONS:
        out = F.linear(td.Tensor(x), td.Tensor(w), activation=act).data
        ref = ref_linear(act)(x, w)
        torch.testing.assert_close(out, ref, equal_nan=True, rtol=1e-6, atol=1e-6, msg=act)


def test_large_activation_inputs():
    # saturating regions: sigmoid/tanh/silu/gelu/elu at |z| ~ 100 must not produce NaN
    x = torch.tensor([[100.0], [-100.0], [1e-7], [-1e-7], [0.0]])
    w = torch.ones(1, 1)
    for act in ACTIVATIONS:
        check_op(td_linear(act), ref_linear(act), [x, w])


def test_empty_batch():
    x, w, b = torch.randn(0, 6), torch.randn(4, 6), torch.randn(4)
    xt, wt, bt = td.Tensor(x, True), td.Tensor(w, True), td.Tensor(b, True)
    y = F.linear(xt, wt, bt, activation="relu")
    assert y.shape == (0, 4)
    y.backward(torch.empty(0, 4))
    assert xt.grad.shape == (0, 6)
    assert torch.equal(wt.grad, torch.zeros(4, 6)) and torch.equal(bt.grad, torch.zeros(4))


def test_zero_in_features_gives_bias():
    x, w, b = torch.randn(3, 0), torch.randn(4, 0), torch.randn(4)
    check_op(td_linear("relu"), ref_linear("relu"), [x, w, b])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_on_cpu_interpreter(dtype):
    # the interpreter upcasts 16-bit tiles to fp32 (its bf16 dot is broken); results are
    # rounded to the input dtype, so compare against the float64 reference at that dtype's tolerance
    x, w, b = torch.randn(17, 33).to(dtype), (torch.randn(9, 33) * 0.2).to(dtype), torch.randn(9).to(dtype)
    check_op(td_linear("gelu"), ref_linear("gelu"), [x, w, b])


# --- bad input ------------------------------------------------------------------------------------

def test_shape_mismatch_error():
    with pytest.raises(ValueError, match=r"in_features=5.*expects in_features=6"):
        F.linear(td.Tensor(torch.randn(3, 5)), td.Tensor(torch.randn(4, 6)))
    with pytest.raises(ValueError, match="bias must have shape"):
        F.linear(td.Tensor(torch.randn(3, 6)), td.Tensor(torch.randn(4, 6)), td.Tensor(torch.randn(5)))
    with pytest.raises(ValueError, match="weight must be 2-D"):
        F.linear(td.Tensor(torch.randn(3, 6)), td.Tensor(torch.randn(6)))


def test_dtype_errors():
    with pytest.raises(TypeError, match="weight is torch.float16 but input is torch.float32"):
        F.linear(td.Tensor(torch.randn(3, 5)), td.Tensor(torch.randn(4, 5).half()))
    with pytest.raises(TypeError, match="supported: float32"):
        F.linear(td.Tensor(torch.randn(3, 5).double()), td.Tensor(torch.randn(4, 5).double()))
    with pytest.raises(TypeError, match="must be a tinydl.Tensor"):
        F.linear([[1.0]], td.Tensor(torch.randn(1, 1)))


def test_unknown_activation():
    with pytest.raises(ValueError, match=r"activation='swish' is not valid: use one of none, relu"):
        F.linear(td.Tensor(torch.randn(3, 5)), td.Tensor(torch.randn(4, 5)), activation="swish")
    with pytest.raises(ValueError, match="activation="):
        nn.Linear(3, 4, activation="bogus")


# --- module ---------------------------------------------------------------------------------------

def test_nn_linear_matches_torch_init_and_layout():
    td.manual_seed(3)
    lin = nn.Linear(20, 7)
    torch.manual_seed(3)
    ref = torch.nn.Linear(20, 7)
    assert lin.weight.shape == (7, 20)
    assert torch.equal(lin.weight.data, ref.weight.data) and torch.equal(lin.bias.data, ref.bias.data)
    x = torch.randn(5, 20)
    assert_close(lin(td.Tensor(x)).data, ref(x).detach())


def test_nn_linear_state_dict_roundtrip_with_torch():
    ref = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    model.load_state_dict(ref.state_dict())
    x = torch.randn(4, 6)
    assert_close(model(td.Tensor(x)).data, ref(x).detach())
    back = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    back.load_state_dict(model.state_dict())
    assert_close(back(x).detach(), ref(x).detach(), rtol=0, atol=0)


def test_load_state_dict_strict_reports_and_changes_nothing():
    model = nn.Sequential(nn.Linear(3, 2))
    before = model.state_dict()["0.weight"].clone()
    with pytest.raises(RuntimeError, match=r"missing keys: 0.bias(.|\n)*unexpected keys: extra"):
        model.load_state_dict({"0.weight": torch.zeros(2, 3), "extra": torch.zeros(1)})
    with pytest.raises(RuntimeError, match=r"size mismatch for 0.weight: checkpoint has \(3, 3\), model has \(2, 3\)"):
        model.load_state_dict({"0.weight": torch.zeros(3, 3), "0.bias": torch.zeros(2)})
    assert torch.equal(model.state_dict()["0.weight"], before)
    missing, unexpected = model.load_state_dict({"0.weight": torch.zeros(2, 3)}, strict=False)
    assert missing == ["0.bias"] and unexpected == []


@pytest.mark.parametrize("act_module,name", [(nn.ReLU(), "relu"), (nn.GELU(), "gelu"), (nn.Tanh(), "tanh"),
                                             (nn.LeakyReLU(0.1), "leaky_relu"), (nn.SiLU(), "silu"),
                                             (nn.Sigmoid(), "sigmoid"), (nn.ELU(), "elu")])
def test_sequential_fuses_linear_and_activation(act_module, name, monkeypatch):
    lin = nn.Linear(8, 6)
    seq = nn.Sequential(lin, act_module)
    x = td.Tensor(torch.randn(5, 8))
    calls = []
    orig = F.Linear.apply
    monkeypatch.setattr(F.Linear, "apply", lambda *a, **k: (calls.append(a[3]), orig(*a, **k))[1])
    fused = seq(x)
    assert calls == [name]  # one fused kernel, activation inside
    unfused = act_module(lin(x))  # separate kernels give the same numbers
    assert_close(fused.data, unfused.data)


def test_standalone_activation_modules():
    x = torch.randn(4, 9)
    for mod, ref in [(nn.ReLU(), TF.relu), (nn.ELU(0.5), lambda t: TF.elu(t, 0.5)),
                     (nn.LeakyReLU(0.3), lambda t: TF.leaky_relu(t, 0.3)), (nn.GELU(), TF.gelu)]:
        check_op(mod, ref, [x])


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,precision,tol", [(torch.float32, "highest", 1e-5), (torch.float32, "high", 5e-3),
                                                 (torch.float16, "highest", 2e-3), (torch.bfloat16, "highest", 1.6e-2)])
def test_gpu_precisions(dtype, precision, tol):
    td.set_float32_matmul_precision(precision)
    try:
        x = torch.randn(300, 257, device="cuda").to(dtype)
        w = (torch.randn(130, 257, device="cuda") * 0.1).to(dtype)
        b = torch.randn(130, device="cuda").to(dtype)
        # tolerances relative to each result's largest magnitude: a dW entry sums 300 products, and
        # TF32 rounds each input to 10 mantissa bits
        check_op(td_linear("gelu"), ref_linear("gelu"), [x, w, b], tol=(tol, tol))
    finally:
        td.set_float32_matmul_precision("highest")
