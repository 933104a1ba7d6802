"""Property tests: hypothesis draws shapes and options, check_op compares with PyTorch.

The hand-picked sweeps in the per-op files cover the known edges (block sizes +-1, primes, NaN...);
these cover the combinations nobody thought of. ``derandomize`` keeps CI reproducible.
"""

import torch
import torch.nn.functional as TF
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tinydl.kernels.activations import ACTIVATIONS

from tinydl import functional as F

from .helpers import TORCH_ACT, check_op

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(m=st.integers(1, 70), k=st.integers(1, 70), n=st.integers(1, 70), act=st.sampled_from(list(ACTIVATIONS)),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_linear_any_shape(m, k, n, act, bias, seed):
    g = torch.Generator(torch.get_default_device()).manual_seed(seed)
    x, w, b = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g) / k**0.5, torch.randn(n, generator=g)
    inputs = [x, w, b] if bias else [x, w]
    check_op(lambda *a: F.linear(*a, activation=act), lambda *a: TORCH_ACT[act](TF.linear(*a)), inputs)


@SETTINGS
@given(n=st.integers(1, 3), c=st.integers(1, 4), hw=st.integers(5, 12), k=st.integers(1, 4),
       r=st.integers(1, 4), stride=st.integers(1, 3), padding=st.integers(0, 2), dilation=st.integers(1, 2),
       seed=st.integers(0, 2**16))
def test_conv2d_any_geometry(n, c, hw, k, r, stride, padding, dilation, seed):
    assume((r - 1) * dilation + 1 <= hw + 2 * padding)  # else an error case, tested in test_conv.py
    g = torch.Generator(torch.get_default_device()).manual_seed(seed)
    x = torch.randn(n, c, hw, hw + 1, generator=g)
    w, b = torch.randn(k, c, r, r, generator=g), torch.randn(k, generator=g)
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    check_op(lambda *a: F.conv2d(*a, **kw), lambda *a: TF.conv2d(*a, **kw), [x, w, b])


@SETTINGS
@given(n=st.integers(1, 20), c=st.integers(1, 300), smoothing=st.sampled_from([0.0, 0.1]),
       reduction=st.sampled_from(["mean", "sum", "none"]), scale=st.sampled_from([1.0, 30.0]),
       seed=st.integers(0, 2**16))
def test_cross_entropy_any_shape(n, c, smoothing, reduction, scale, seed):
    g = torch.Generator(torch.get_default_device()).manual_seed(seed)
    logits = torch.randn(n, c, generator=g) * scale
    target = torch.randint(0, c, (n,), generator=g)
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    check_op(lambda x, t: F.cross_entropy(x, t, **kw), lambda x, t: TF.cross_entropy(x, t, **kw), [logits, target],
             requires_grad=[True, False])
