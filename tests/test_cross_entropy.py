"""F.cross_entropy / nn.CrossEntropyLoss against torch.nn.functional.cross_entropy (float64 reference):
forward and logits gradient, every reduction, ignore_index, label_smoothing, class counts from 1 to
50,257, edge values (huge, -inf, NaN), confident logits, bad input, and a model that learns with it."""

import math

import pytest
import torch
import torch.nn.functional as TF

import tinydl as td
from tinydl import functional as F
from tinydl import nn, optim

from .helpers import check_op, noncontiguous


def td_ce(**kw):
    return lambda x, t: F.cross_entropy(x, t, **kw)


def ref_ce(**kw):
    return lambda x, t: TF.cross_entropy(x, t, **kw)


def run_ce(x, t, **kw):
    """(loss, grad) from tinydl for logits x under upstream gradient 1 (or ones for "none")."""
    a = td.Tensor(x.clone(), requires_grad=True)
    loss = F.cross_entropy(a, t, **kw)
    loss.backward(torch.ones_like(loss.data))
    return loss.data, a.grad


def run_ref(x, t, dtype=torch.float64, **kw):
    a = x.detach().to(dtype).requires_grad_()
    loss = TF.cross_entropy(a, t, **kw)
    loss.backward(torch.ones_like(loss))
    return loss.detach(), a.grad


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
def test_reductions_and_smoothing(reduction, label_smoothing):
    x, t = torch.randn(37, 11) * 3, torch.randint(0, 11, (37,))
    t[[3, 17, 30]] = -100  # some ignored rows
    kw = dict(reduction=reduction, label_smoothing=label_smoothing)
    check_op(td_ce(**kw), ref_ce(**kw), [x, t])


@pytest.mark.parametrize("ignore_index", [0, 5, -1, 1000])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_ignore_index(ignore_index, reduction):
    # ignore_index may be a real class: rows with that label drop out; others with label 0 stay
    x, t = torch.randn(29, 7), torch.randint(0, 7, (29,))
    t[::4] = ignore_index
    kw = dict(reduction=reduction, ignore_index=ignore_index, label_smoothing=0.05)
    check_op(td_ce(**kw), ref_ce(**kw), [x, t])


# class counts: 1, 2, 10, primes, interpreter/GPU chunk sizes (64, 256, 1024, 4096) +-1, GPT-2's 50,257
@pytest.mark.parametrize("N,C", [(5, 1), (33, 2), (64, 10), (17, 13), (9, 63), (9, 65), (7, 101), (5, 255),
                                 (5, 257), (4, 997), (3, 1000), (3, 1023), (3, 1025), (2, 4095), (2, 4097),
                                 (2, 50257)])
def test_class_counts(N, C):
    x, t = torch.randn(N, C) * 2, torch.randint(0, C, (N,))
    check_op(td_ce(), ref_ce(), [x, t])
    check_op(td_ce(reduction="none", label_smoothing=0.3), ref_ce(reduction="none", label_smoothing=0.3), [x, t])


def test_many_rows():
    # more rows than one interpreter program takes, so partial sums from several programs are added
    x, t = torch.randn(3000, 37), torch.randint(0, 37, (3000,))
    check_op(td_ce(), ref_ce(), [x, t])
    check_op(td_ce(reduction="sum"), ref_ce(reduction="sum"), [x, t])


def test_noncontiguous_logits_and_target():
    x = noncontiguous(torch.randn(23, 19))
    t = torch.randint(0, 19, (46,))[::2]
    assert not x.is_contiguous() and not t.is_contiguous()
    check_op(td_ce(label_smoothing=0.2), ref_ce(label_smoothing=0.2), [x, t])
    xt = torch.randn(19, 23).t()  # column-major logits
    check_op(td_ce(reduction="none"), ref_ce(reduction="none"), [xt, t], grad_out=torch.randn(46)[::2])


def test_unbatched_and_uint8_target():
    x = torch.randn(10)
    for r in ("mean", "none", "sum"):
        check_op(td_ce(reduction=r), ref_ce(reduction=r), [x, torch.tensor(3)])
    x, t = torch.randn(12, 6), torch.randint(0, 6, (12,), dtype=torch.uint8)
    check_op(td_ce(), ref_ce(), [x, t])


def exact_confident(x, t, eps=0.0):
    """Per-row loss and logits gradient in float64, written so nothing cancels when p_t -> 1.

    PyTorch's float64 reference itself loses the tiny loss lse - x_t (a difference of two numbers
    ~ margin) once margin > ~30, so the confident test compares against this instead.
    """
    x = x.double()
    N, C = x.shape
    rows = torch.arange(N)
    m = x.max(1, keepdim=True).values
    e = (x - m).exp()
    e_t = e[rows, t]
    other = torch.where(torch.arange(C)[None, :] == t[:, None], 0.0, e).sum(1)  # the target's term left out
    s = other + e_t
    nll = torch.log1p(other / e_t)
    lse = m[:, 0] + s.log()
    loss = (1 - eps) * nll + eps * (lse - x.mean(1))
    grad = e / s[:, None] - eps / C
    grad[rows, t] = -other / s + eps * (1 - 1 / C)
    return loss, grad


@pytest.mark.parametrize("margin", [12.0, 30.0, 80.0])
@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_confident_logits_keep_relative_precision(margin, eps):
    # softmax of the target ~ 1 - C e^-margin: the loss and p_t - 1 are tiny and must keep their
    # relative precision (1 - p_t computed as a difference of numbers near 1 would be 0 or noise)
    N, C = 24, 50
    x = torch.randn(N, C)
    t = torch.randint(0, C, (N,))
    x[torch.arange(N), t] += margin
    loss, grad = run_ce(x, t, reduction="none", label_smoothing=eps)
    rloss, rgrad = exact_confident(x, t, eps)
    torch.testing.assert_close(loss.double(), rloss, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad.double(), rgrad, rtol=1e-5, atol=0)  # every entry, relatively
    if margin <= 12:  # where PyTorch's float64 is itself accurate enough, it agrees
        check_op(td_ce(reduction="sum", label_smoothing=eps), ref_ce(reduction="sum", label_smoothing=eps), [x, t])


def test_confident_wrong_class():
    # the model is sure of the wrong class: loss ~ margin, p_t ~ 0, grad_t ~ -1
    x, t = torch.zeros(4, 9), torch.tensor([0, 1, 2, 3])
    x[:, 8] = torch.tensor([20.0, 60.0, 100.0, 1e4])
    check_op(td_ce(reduction="none"), ref_ce(reduction="none"), [x, t])


def test_huge_logits():
    x = torch.tensor([[1e4, -1e4, 0.0, 1e4 - 1], [-1e4, -1e4 + 3, 5.0, 2.0]])
    t = torch.tensor([1, 0])
    check_op(td_ce(reduction="none"), ref_ce(reduction="none"), [x, t])
    check_op(td_ce(label_smoothing=0.1), ref_ce(label_smoothing=0.1), [x, t])
    # +-3e38: x - max is -inf in fp32 (exp -> 0); the loss is finite, or inf
    # where lse - x_t passes the fp32 range, as in PyTorch fp32
    x = torch.tensor([[3e38, -3e38, 0.0], [-3e38, 3e38, 1.0], [3e38, 3e38, -3e38], [3e38, -3e38, 0.0]])
    t = torch.tensor([0, 2, 1, 1])
    loss, grad = run_ce(x, t, reduction="none")
    rloss, rgrad = run_ref(x, t, torch.float32, reduction="none")
    torch.testing.assert_close(loss, rloss, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, rgrad, rtol=1e-6, atol=1e-7)
    assert loss[0] == 0 and loss[1] == 3e38 and math.isinf(loss[3]) and torch.isfinite(grad).all()


def test_neg_inf_logits_and_all_neg_inf_row():
    inf = float("inf")
    x = torch.randn(5, 6)
    x[0, 2] = -inf  # a -inf logit: probability 0, finite loss
    x[1, :] = -inf  # all -inf: NaN in this row only
    x[2, :3] = -inf  # -inf in the first chunk, finite later (online max starts at -inf)
    t = torch.tensor([1, 0, 4, 2, 3])
    for kw in (dict(reduction="none"), dict(reduction="none", label_smoothing=0.1)):
        loss, grad = run_ce(x, t, **kw)
        rloss, rgrad = run_ref(x, t, torch.float32, **kw)
        torch.testing.assert_close(loss, rloss, equal_nan=True, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, rgrad, equal_nan=True, rtol=1e-5, atol=1e-6)
        assert torch.isnan(loss[1]) and torch.isnan(grad[1]).all()
        assert not torch.isnan(grad[[0, 2, 3, 4]]).any()
    # mean: the NaN row makes the mean NaN, but the other rows' gradients stay finite
    loss, grad = run_ce(x, t)
    rloss, rgrad = run_ref(x, t, torch.float32)
    assert torch.isnan(loss) and torch.isnan(rloss)
    torch.testing.assert_close(grad, rgrad, equal_nan=True, rtol=1e-5, atol=1e-6)
    # without the broken row, -inf logits give a finite mean matching float64
    keep = [0, 2, 3, 4]
    check_op(td_ce(), ref_ce(), [x[keep], t[keep]])


def test_nan_logit_poisons_only_its_row():
    x = torch.randn(6, 8)
    x[2, 5] = float("nan")  # not the target
    x[4, 1] = float("nan")  # the target
    t = torch.tensor([0, 1, 2, 3, 1, 7])
    loss, grad = run_ce(x, t, reduction="none")
    rloss, rgrad = run_ref(x, t, torch.float32, reduction="none")
    torch.testing.assert_close(loss, rloss, equal_nan=True, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, rgrad, equal_nan=True, rtol=1e-5, atol=1e-6)
    assert torch.isnan(loss[[2, 4]]).all() and not torch.isnan(loss[[0, 1, 3, 5]]).any()
    assert torch.isnan(grad[[2, 4]]).all() and not torch.isnan(grad[[0, 1, 3, 5]]).any()
    # an ignored NaN row: 0 loss, and PyTorch's gradient there is NaN (log_softmax backward): so is ours
    t[2] = -100
    loss, grad = run_ce(x, t, reduction="sum")
    rloss, rgrad = run_ref(x, t, torch.float32, reduction="sum")
    torch.testing.assert_close(grad, rgrad, equal_nan=True, rtol=1e-5, atol=1e-6)


def test_empty_batch_and_all_ignored():
    x, t = torch.randn(0, 5), torch.zeros(0, dtype=torch.long)
    for r in ("mean", "sum", "none"):
        loss, grad = run_ce(x, t, reduction=r)
        rloss, rgrad = run_ref(x, t, torch.float32, reduction=r)
        torch.testing.assert_close(loss, rloss, equal_nan=True)
        assert grad.shape == (0, 5)
    x, t = torch.randn(4, 5), torch.full((4,), -100)
    for r, ls in (("mean", 0.0), ("sum", 0.0), ("none", 0.0), ("mean", 0.2)):
        loss, grad = run_ce(x, t, reduction=r, label_smoothing=ls)
        rloss, rgrad = run_ref(x, t, torch.float32, reduction=r, label_smoothing=ls)
        torch.testing.assert_close(loss, rloss, equal_nan=True)
        torch.testing.assert_close(grad, rgrad)
    # no classes at all: only ignored targets are valid
    loss, _ = run_ce(torch.randn(3, 0), torch.full((3,), -100), reduction="sum")
    assert loss.item() == 0


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_fp16_logits(reduction):
    x, t = torch.randn(41, 23).half() * 4, torch.randint(0, 23, (41,))
    out, _ = check_op(td_ce(reduction=reduction, label_smoothing=0.1),
                      ref_ce(reduction=reduction, label_smoothing=0.1), [x, t])
    assert out.dtype == torch.float16
    # confident fp16 rows: the fp32 math folds p_t - 1 before rounding to fp16
    x = torch.zeros(8, 5, dtype=torch.float16)
    t = torch.arange(8) % 5
    x[torch.arange(8), t] = 9.0
    check_op(td_ce(reduction=reduction), ref_ce(reduction=reduction), [x, t])


def test_saved_gradient_is_private_and_backward_repeatable():
    x, t = torch.randn(9, 4), torch.randint(0, 4, (9,))
    x0 = x.clone()
    a = td.Tensor(x, requires_grad=True)
    loss = F.cross_entropy(a, t)
    loss.backward(torch.tensor(1.0), retain_graph=True)
    g1 = a.grad.clone()
    loss.backward(torch.tensor(2.0))
    assert torch.equal(x, x0)  # the logits are never overwritten
    torch.testing.assert_close(a.grad, 3 * g1)


def test_no_grad_and_constant_logits():
    x, t = torch.randn(7, 5), torch.randint(0, 5, (7,))
    with td.no_grad():
        y = F.cross_entropy(td.Tensor(x, requires_grad=True), t)
    assert not y.requires_grad
    torch.testing.assert_close(y.data, TF.cross_entropy(x, t))
    y = F.cross_entropy(td.Tensor(x), t)
    assert not y.requires_grad


def test_deterministic():
    x, t = torch.randn(5000, 13), torch.randint(0, 13, (5000,))
    a = F.cross_entropy(td.Tensor(x), t).data
    b = F.cross_entropy(td.Tensor(x), t).data
    assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [5, -2, 2**40, -101])
def test_target_out_of_range(bad):
    x, t = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    t[3] = bad
    with pytest.raises(ValueError, match=rf"target\[3\] = {bad} is out of range.*\[0, 4\]"):
        F.cross_entropy(td.Tensor(x), t)
    with pytest.raises(ValueError, match=rf"target = {bad} is out of range"):
        F.cross_entropy(td.Tensor(x[0]), torch.tensor(bad))


def test_first_bad_label_is_named():
    t = torch.zeros(70000, dtype=torch.long)  # spans two check blocks in the interpreter
    t[66000], t[69000] = 10, -3
    with pytest.raises(ValueError, match=r"target\[66000\] = 10"):
        F.cross_entropy(td.Tensor(torch.randn(70000, 2)), t)


def test_bad_arguments():
    x, t = td.Tensor(torch.randn(4, 3)), torch.tensor([0, 1, 2, 0])
    with pytest.raises(TypeError, match="target has dtype torch.float32"):
        F.cross_entropy(x, t.float())
    with pytest.raises(TypeError, match="target has dtype torch.bool"):
        F.cross_entropy(x, t.bool())
    with pytest.raises(TypeError, match="input has dtype torch.int64"):
        F.cross_entropy(td.Tensor(torch.zeros(4, 3, dtype=torch.long)), t)
    with pytest.raises(ValueError, match=r"target has shape \(5,\)"):
        F.cross_entropy(x, torch.tensor([0, 1, 2, 0, 1]))
    with pytest.raises(ValueError, match=r"target has shape \(4, 1\)"):
        F.cross_entropy(x, t[:, None])
    with pytest.raises(ValueError, match=r"input must be \(N, C\)"):
        F.cross_entropy(td.Tensor(torch.randn(2, 3, 4)), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction='avg' is not valid"):
        F.cross_entropy(x, t, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing=1.5"):
        F.cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(NotImplementedError, match="weight="):
        F.cross_entropy(x, t, weight=torch.ones(3))
    with pytest.raises(TypeError, match="ignore_index"):
        F.cross_entropy(x, t, ignore_index=1.5)
    with pytest.raises(TypeError, match="target must be a tensor"):
        F.cross_entropy(x, [0, 1, 2, 0])


def test_legacy_reduce_flags():
    x, t = torch.randn(6, 4), torch.randint(0, 4, (6,))
    out = F.cross_entropy(td.Tensor(x), t, size_average=False).data
    torch.testing.assert_close(out, TF.cross_entropy(x, t, reduction="sum"))


def test_module():
    x, t = torch.randn(13, 6), torch.randint(0, 6, (13,))
    m = nn.CrossEntropyLoss(ignore_index=2, reduction="sum", label_smoothing=0.25)
    check_op(lambda a, b: m(a, b), ref_ce(ignore_index=2, reduction="sum", label_smoothing=0.25), [x, t])
    assert "reduction='sum'" in repr(m)
    assert not list(m.parameters())
    with pytest.raises(ValueError, match="reduction"):
        nn.CrossEntropyLoss(reduction="batchmean")
    with pytest.raises(NotImplementedError):
        nn.CrossEntropyLoss(weight=torch.ones(3))
    with pytest.raises(ValueError, match="label_smoothing"):
        nn.CrossEntropyLoss(label_smoothing=-0.1)


def test_linear_model_learns_separable_classes():
    # 4 Gaussian blobs in 6-D, well separated: Linear + ReLU + Linear + CrossEntropyLoss with SGD
    torch.manual_seed(3)
    centers = torch.randn(4, 6) * 4
    y = torch.randint(0, 4, (400,))
    x = centers[y] + torch.randn(400, 6)
    td.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 4))
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.1)
    X = td.Tensor(x)
    acc = lambda: (model(X).data.argmax(1) == y).float().mean().item()  # noqa: E731
    start = acc()
    losses = []
    for _ in range(40):
        loss = loss_fn(model(X), y)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.25 * losses[0], losses[::5]
    assert acc() >= 0.95, (start, acc(), losses[::5])


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_on_gpu(dtype):
    x = (torch.randn(300, 5000, device="cuda") * 3).to(dtype)
    t = torch.randint(0, 5000, (300,), device="cuda")
    check_op(td_ce(label_smoothing=0.1), ref_ce(label_smoothing=0.1), [x, t])
    check_op(td_ce(reduction="none"), ref_ce(reduction="none"), [x, t])


def test_kernel_never_reads_out_of_bounds():
    # where the host check cannot run (inside CUDA graph capture) a bad label gives a NaN row
    from tinydl.kernels import cross_entropy as K

    x, t = torch.randn(4, 5), torch.tensor([0, 7, -100, -3])
    bad, checked = K.check_targets(t, 5, -100)
    assert bad == 1 and checked[1].item() == 3
    loss, dx = K.cross_entropy_fwd(x, t, checked, "none")
    assert torch.isnan(loss[[1, 3]]).all() and loss[2] == 0 and torch.isfinite(loss[0])
    assert torch.isnan(dx[[1, 3]]).all() and (dx[2] == 0).all() and torch.isfinite(dx[0]).all()


@pytest.mark.cuda
def test_cuda_graph_capture():
    # no host sync inside F.cross_entropy while capturing: the mean divisor stays on the device
    x, t = torch.randn(64, 10, device="cuda"), torch.randint(0, 10, (64,), device="cuda")
    t[::5] = -100
    a = td.Tensor(x, requires_grad=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up: compile every kernel outside the capture
        F.cross_entropy(a, t, label_smoothing=0.1).backward()
    torch.cuda.current_stream().wait_stream(side)
    a.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = F.cross_entropy(a, t, label_smoothing=0.1)
        loss.backward()
    x.copy_(torch.randn(64, 10, device="cuda"))
    graph.replay()
    torch.cuda.synchronize()
    _, rgrad = run_ref(x, t, label_smoothing=0.1)
    # fp32 results against float64 references: fp32 tolerances (the defaults would be float64's)
    torch.testing.assert_close(loss.data.double(), TF.cross_entropy(x.double(), t, label_smoothing=0.1),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.grad.double(), rgrad, rtol=1e-5, atol=1e-6)
