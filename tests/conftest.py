
import pytest
import torch

import tinydl  # sets TRITON_INTERPRET before any kernel is defined

HAS_CUDA = torch.cuda.is_available()
if HAS_CUDA and tinydl.device() == "cuda":
    # natively the kernels take GPU tensors only: tensors a test makes without a device go there, so
    # the whole suite runs on the GPU (tests seed generators of the default device, not the CPU's)
    torch.set_default_device("cuda")


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def device():
    return tinydl.device()
