"""tinydl._runtime: device selection from the environment, and the interpreter compatibility fix."""

import operator
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tinydl import _runtime


def _import_tinydl(**env):
    return subprocess.run([sys.executable, "-c", "import tinydl; print(tinydl._runtime.mode())"],
                          env=dict(os.environ, **env), capture_output=True, text=True, timeout=120)


def test_bad_tinydl_device_is_a_clear_error():
    proc = _import_tinydl(TINYDL_DEVICE="tpu")
    assert proc.returncode != 0
    assert "TINYDL_DEVICE='tpu' is not valid: use one of cpu, cuda" in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_tinydl_device_cuda_without_a_gpu_is_a_clear_error():
    proc = _import_tinydl(TINYDL_DEVICE="cuda")
    assert proc.returncode != 0
    assert "TINYDL_DEVICE=cuda was asked for, but torch.cuda.is_available() is False" in proc.stderr


def test_tinydl_device_cpu_selects_the_interpreter():
    proc = _import_tinydl(TINYDL_DEVICE="cpu", TRITON_INTERPRET="0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "interpreter"


@pytest.mark.skipif(not _runtime.INTERPRET, reason="the fix patches Triton's interpreter only")
def test_interpreter_scalar_argument_works_as_a_range_bound():
    # The interpreter holds a scalar kernel argument as an array of shape (1,); `range(0, K, BLOCK)`
    # calls __index__ on it. Triton 3.6 does int(array), which numpy >= 2.4 refuses.
    import triton.language as tl
    from triton.runtime import interpreter

    scope = interpreter._LangPatchScope()
    interpreter._patch_lang_tensor(tl.tensor, scope)
    try:
        k = tl.tensor(interpreter.TensorHandle(np.array([37], dtype=np.int32), tl.int32), tl.int32)
        assert operator.index(k) == 37
        assert list(range(0, k, 16)) == [0, 16, 32]
    finally:
        scope.restore()
    assert getattr(interpreter._patch_lang_tensor, "_tinydl_squeezes", False)


def test_tensors_off_tinydls_device_are_a_clear_error():
    import tinydl as td
    from tinydl import functional as F
    from tinydl import optim

    meta = td.Tensor(torch.empty(2, 3, device="meta"))
    ok = td.Tensor(torch.randn(4, 3, device=td.device()))
    want = "cpu" if _runtime.INTERPRET else "cuda"
    with pytest.raises(ValueError, match=rf"linear: input is on meta, but tinydl runs its kernels on {want}"):
        F.linear(meta, ok)
    with pytest.raises(ValueError, match=r"conv2d: weight is on meta"):
        F.conv2d(td.Tensor(torch.randn(1, 3, 5, 5, device=td.device())), td.Tensor(torch.empty(2, 3, 3, 3,
                                                                                              device="meta")))
    p = td.Tensor(torch.empty(3, device="meta"), requires_grad=True)
    p.grad = torch.empty(3, device="meta")
    with pytest.raises(ValueError, match=r"SGD: parameter 0 of group 0 is on meta"):
        optim.SGD([p], lr=0.1).step()
