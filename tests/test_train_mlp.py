"""End to end: a small MLP built from nn.Sequential(Linear, act, ...) trains with SGD."""

import torch

import tinydl as td
from tinydl import nn, optim


def test_mlp_regression_loss_falls():
    torch.manual_seed(1)
    x = torch.randn(256, 8)
    true_w = torch.randn(8, 1)
    td.manual_seed(0)
    y = torch.tanh(x @ true_w / 2)  # a smooth nonlinear target
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 1))
    opt = optim.SGD(model.parameters(), lr=0.5)
    X, Y = td.Tensor(x), y
    losses = []
    for _ in range(80):
        out = model(X)
        diff = out.data - Y  # squared-error gradient by hand: the loss kernels are a separate issue
        losses.append(float((diff**2).mean()))
        opt.zero_grad()
        out.backward(2 * diff / diff.numel())
        opt.step()
    assert losses[-1] < 0.3 * losses[0], losses[::10]
    # same init (same seed, PyTorch's init) and same math: PyTorch follows the same trajectory
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), torch.nn.GELU(),
                              torch.nn.Linear(32, 1))
    ropt = torch.optim.SGD(ref.parameters(), lr=0.5)
    ref_losses = []
    for _ in range(80):
        loss = ((ref(x) - y) ** 2).mean()
        ref_losses.append(loss.item())
        ropt.zero_grad()
        loss.backward()
        ropt.step()
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses), rtol=1e-4, atol=1e-6)
    assert all(p.grad is not None for p in model.parameters())


def test_sgd_validation():
    import pytest

    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD([td.Tensor(torch.zeros(1), requires_grad=True)], lr=-1)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)


def test_parameters_and_train_eval():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2, bias=False))
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.weight"]
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    out = model(td.Tensor(torch.randn(5, 3)))
    out.backward(torch.ones(5, 2))
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    assert "Linear(in_features=3, out_features=4, bias=True)" in repr(model)

