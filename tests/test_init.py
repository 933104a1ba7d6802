"""tinydl.nn.init: the same values as torch.nn.init for the same seed; PyTorch's fans and gains."""

import math

import pytest
import torch

import tinydl as td
from tinydl import nn
from tinydl.nn import init

SHAPES = [(7, 13), (16, 3, 5, 5), (1, 1)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name,kw", [
    ("xavier_uniform_", {}), ("xavier_uniform_", {"gain": 2.0}), ("xavier_normal_", {}),
    ("kaiming_uniform_", {}), ("kaiming_uniform_", {"a": math.sqrt(5)}),
    ("kaiming_uniform_", {"mode": "fan_out", "nonlinearity": "relu"}),
    ("kaiming_normal_", {"nonlinearity": "relu"}), ("kaiming_normal_", {"a": 0.2, "mode": "fan_out"}),
    ("uniform_", {"a": -2.0, "b": 3.0}), ("normal_", {"mean": 1.0, "std": 0.5}), ("constant_", {"val": 0.25}),
    ("zeros_", {}), ("ones_", {}),
])
def test_same_values_as_torch_init(name, kw, shape):
    t = td.Tensor(torch.empty(shape), requires_grad=True)
    td.manual_seed(3)
    out = getattr(init, name)(t, **kw)
    ref = torch.empty(shape)
    torch.manual_seed(3)
    getattr(torch.nn.init, name)(ref, **kw)
    assert out is t
    assert torch.equal(t.data, ref)


def test_calculate_gain_matches_torch():
    for nl, p in [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None), ("relu", None),
                  ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None)]:
        assert init.calculate_gain(nl, p) == torch.nn.init.calculate_gain(nl, p)


def test_linear_default_init_is_pytorchs():
    td.manual_seed(0)
    m = nn.Linear(11, 7)
    torch.manual_seed(0)
    r = torch.nn.Linear(11, 7)
    assert torch.equal(m.weight.data, r.weight.detach()) and torch.equal(m.bias.data, r.bias.detach())


def test_errors_and_torch_tensors():
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(td.Tensor(torch.empty(5)))
    with pytest.raises(ValueError, match="Mode"):
        init.kaiming_uniform_(td.Tensor(torch.empty(3, 3)), mode="fan_avg")
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.kaiming_normal_(td.Tensor(torch.empty(3, 3)), nonlinearity="swish")
    with pytest.raises(TypeError, match="tinydl.Tensor or torch.Tensor"):
        init.zeros_([1, 2])
    t = torch.empty(4, 4)
    assert init.ones_(t) is t and torch.equal(t, torch.ones(4, 4))
    empty = td.Tensor(torch.empty(0, 3))
    assert init.kaiming_uniform_(empty) is empty  # no-op, like PyTorch
