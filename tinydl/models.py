"""Ready-made models: LeNet-5 and an MLP, built as ``nn.Sequential`` so each Linear/Conv2d and the
activation after it run as one fused kernel. State-dict keys match the same torch.nn.Sequential."""

from __future__ import annotations

from tinydl import nn

__all__ = ["lenet5", "mlp"]

_ACT_MODULES = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
                "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU}


def _act(name: str) -> nn.Module:
    if name not in _ACT_MODULES:
        raise ValueError(f"activation={name!r} is not valid: use one of {', '.join(_ACT_MODULES)}")
    return _ACT_MODULES[name]()


def lenet5(num_classes: int = 10, in_channels: int = 1) -> nn.Sequential:
    """LeNet-5 for (N, in_channels, 28, 28) images, with ReLU and max pooling:
    conv 5x5 6ch (padding 2) -> pool 2 -> conv 5x5 16ch -> pool 2 -> 120 -> 84 -> num_classes."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes),
    )


def mlp(in_features: int = 784, hidden=(256, 128), num_classes: int = 10, activation: str = "relu") -> nn.Sequential:
    """Flatten -> [Linear -> activation] per hidden width -> Linear(num_classes). Takes images or vectors."""
    _act(activation)
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), _act(activation)]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
