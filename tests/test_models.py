"""tinydl.models: LeNet-5 and the MLP match their torch.nn twins, fuse conv/linear + ReLU, and train."""

import torch

import tinydl as td
from tinydl import models, nn
from tinydl.ops import conv as ops_conv

from .helpers import assert_close


def torch_lenet5():
    T = torch.nn
    return T.Sequential(T.Conv2d(1, 6, 5, padding=2), T.ReLU(), T.MaxPool2d(2), T.Conv2d(6, 16, 5), T.ReLU(),
                        T.MaxPool2d(2), T.Flatten(), T.Linear(400, 120), T.ReLU(), T.Linear(120, 84), T.ReLU(),
                        T.Linear(84, 10))


def test_lenet5_matches_torch_forward_and_backward():
    model = models.lenet5()
    ref = torch_lenet5().double()
    ref.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    x = torch.randn(3, 1, 28, 28)
    out = model(td.Tensor(x))
    expect = ref(x.double())
    assert out.shape == (3, 10)
    assert_close(out.data, expect)
    g = torch.randn(3, 10)
    out.backward(g)
    expect.backward(g.double())
    grads = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        assert_close(p.grad, grads[name].grad, what=name)


def test_lenet5_state_dict_keys_and_init_like_torch():
    td.manual_seed(0)
    model = models.lenet5()
    torch.manual_seed(0)
    ref = torch_lenet5()
    sd, rsd = model.state_dict(), ref.state_dict()
    assert list(sd) == list(rsd)
    for k in sd:
        assert torch.equal(sd[k], rsd[k]), k


def test_lenet5_fuses_conv_and_linear_with_relu(monkeypatch):
    from tinydl import functional as F

    model = models.lenet5()
    acts = []
    conv_apply, lin_apply = ops_conv.Conv2d.apply, F.Linear.apply
    monkeypatch.setattr(ops_conv.Conv2d, "apply", lambda *a: (acts.append(("conv", a[7])), conv_apply(*a))[1])
    monkeypatch.setattr(F.Linear, "apply", lambda *a: (acts.append(("linear", a[3])), lin_apply(*a))[1])
    model(td.Tensor(torch.randn(2, 1, 28, 28)))
    assert acts == [("conv", "relu"), ("conv", "relu"), ("linear", "relu"), ("linear", "relu"), ("linear", "none")]


def test_mlp_matches_torch_and_takes_images():
    model = models.mlp(in_features=12, hidden=(7, 5), num_classes=3, activation="gelu")
    T = torch.nn
    ref = T.Sequential(T.Flatten(), T.Linear(12, 7), T.GELU(), T.Linear(7, 5), T.GELU(), T.Linear(5, 3)).double()
    ref.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    x = torch.randn(4, 3, 2, 2)
    assert_close(model(td.Tensor(x)).data, ref(x.double()))
    default = models.mlp()
    assert default(td.Tensor(torch.randn(2, 1, 28, 28))).shape == (2, 10)
    assert [tuple(p.shape) for p in default.parameters()] == [(256, 784), (256,), (128, 256), (128,), (10, 128), (10,)]


def test_mlp_bad_activation():
    import pytest

    with pytest.raises(ValueError, match="activation='swish' is not valid"):
        models.mlp(activation="swish")


def _softmax_ce_grad(logits: torch.Tensor, target: torch.Tensor):
    # F.cross_entropy lives in tinydl/ops/loss.py; the test forms d(mean CE)/d(logits) with torch
    p = torch.softmax(logits.double(), dim=1)
    loss = -torch.log(p[torch.arange(len(target)), target]).mean().item()
    p[torch.arange(len(target)), target] -= 1
    return loss, (p / len(target)).float()


def test_lenet5_trains_on_a_tiny_synthetic_task():
    # 4 classes of 28x28 images: a bright 8x8 square in one of the four quadrants, plus noise
    td.manual_seed(0)
    n = 32
    target = torch.arange(n) % 4
    x = 0.3 * torch.randn(n, 1, 28, 28)
    for i, c in enumerate(target.tolist()):
        r, s = 3 + 14 * (c // 2), 3 + 14 * (c % 2)
        x[i, 0, r:r + 8, s:s + 8] += 1.0
    model = models.lenet5(num_classes=4)
    params = list(model.parameters())
    losses = []
    for _ in range(8):
        logits = model(td.Tensor(x))
        loss, grad = _softmax_ce_grad(logits.data, target)
        losses.append(loss)
        model.zero_grad()
        logits.backward(grad)
        with torch.no_grad():  # plain SGD step (tinydl.optim is tested on its own)
            for p in params:
                p.data -= 0.5 * p.grad
    assert losses[-1] < 0.6 * losses[0], losses  # torch with the same init: 1.387 -> 0.41
    assert all(torch.isfinite(torch.tensor(losses)))


def test_flatten_module_in_sequential():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    out = model(td.Tensor(torch.randn(5, 2, 6, 6), requires_grad=True))
    assert out.shape == (5, 2)
