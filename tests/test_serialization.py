"""td.save / td.load (safetensors, atomic) and training checkpoints that resume bit-identically."""

import os
import random

import numpy as np
import pytest
import torch

import tinydl as td
from tinydl import nn, optim
from tinydl.optim import lr_scheduler
from tinydl.serialization import CheckpointError, load_training_checkpoint, save_training_checkpoint


def test_round_trip_nested_structure(tmp_path):
    obj = {"a": torch.randn(3, 4), "b": {"c": [1, 2.5, "x", None, True], "d": td.Tensor(torch.arange(5))},
           "state": {0: {"step": torch.tensor(3.0), "m": torch.zeros(2, dtype=torch.bfloat16)}, 7: {}},
           "list": [torch.ones(1), {"e": float("inf")}], "empty": torch.empty(0, 3), "scalar": torch.tensor(2)}
    path = tmp_path / "ck.safetensors"
    td.save(obj, path)
    got = td.load(path)
    assert set(got) == set(obj)
    assert torch.equal(got["a"], obj["a"]) and got["b"]["c"] == [1, 2.5, "x", None, True]
    assert torch.equal(got["b"]["d"], torch.arange(5))
    assert list(got["state"]) == [0, 7] and got["state"][7] == {}  # int keys survive
    assert got["state"][0]["m"].dtype == torch.bfloat16 and got["state"][0]["step"].item() == 3.0
    assert got["list"][1]["e"] == float("inf") and got["empty"].shape == (0, 3) and got["scalar"].item() == 2
    # no pickle anywhere: a plain safetensors file
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        assert "tinydl" in f.metadata()


def test_torch_state_dict_loads_into_tinydl_model(tmp_path):
    ref = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    td.save(ref.state_dict(), tmp_path / "w.safetensors")
    model.load_state_dict(td.load(tmp_path / "w.safetensors"))
    x = torch.randn(4, 6)
    torch.testing.assert_close(model(td.Tensor(x)).data, ref(x).detach())
    # a plain safetensors file written by another tool loads as a flat dict
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "plain.safetensors"))
    model.load_state_dict(td.load(tmp_path / "plain.safetensors"))


def test_load_state_dict_strict_errors_leave_model_unchanged():
    model = nn.Sequential(nn.Linear(4, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bad_shape = {"0.weight": torch.zeros(3, 5), "0.bias": torch.zeros(3)}
    with pytest.raises(RuntimeError, match="size mismatch for 0.weight"):
        model.load_state_dict(bad_shape)
    with pytest.raises(RuntimeError, match="missing keys: 0.bias"):
        model.load_state_dict({"0.weight": torch.zeros(3, 4)})
    with pytest.raises(RuntimeError, match="unexpected keys: extra"):
        model.load_state_dict({**before, "extra": torch.zeros(1)})
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_bad_objects_and_files(tmp_path):
    with pytest.raises(TypeError, match="b/0"):
        td.save({"b": [object()]}, tmp_path / "x")
    with pytest.raises(TypeError, match="dict key"):
        td.save({(1, 2): 3}, tmp_path / "x")
    assert not os.listdir(tmp_path)  # nothing half-written
    with pytest.raises(FileNotFoundError):
        td.load(tmp_path / "missing.safetensors")
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        td.load(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated or empty"):
        td.load(path)
    assert issubclass(CheckpointError, ValueError)


def test_truncated_and_corrupt_files_are_detected(tmp_path):
    good = tmp_path / "good.safetensors"
    td.save({"w": torch.randn(64, 64), "step": 3}, good)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="trunc.safetensors"):
        td.load(trunc)
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF  # damage the tensor data, not the header
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum"):
        td.load(bad)
    hdr = bytearray(data)
    hdr[12] = ord("}")  # damage the JSON header
    (tmp_path / "hdr.safetensors").write_bytes(bytes(hdr))
    with pytest.raises(CheckpointError, match="hdr.safetensors"):
        td.load(tmp_path / "hdr.safetensors")


def test_atomic_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.safetensors"
    td.save({"v": torch.ones(3)}, path)
    import tinydl.serialization as ser

    def boom(fd):
        raise OSError("disk full")
    monkeypatch.setattr(ser.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        td.save({"v": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(td.load(path)["v"], torch.ones(3))
    assert os.listdir(tmp_path) == ["ck.safetensors"]  # the temp file was removed


def _setup():
    td.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 2))
    opt = optim.AdamW(model.parameters(), lr=0.05, amsgrad=True)
    sched = lr_scheduler.StepLR(opt, step_size=2, gamma=0.7)
    return model, opt, sched


def _train(model, opt, sched, steps):
    for _ in range(steps):
        x = torch.randn(6, 5)  # data drawn from the RNG: it must be restored too
        noise = float(np.random.rand()) + random.random()
        out = model(td.Tensor(x))
        opt.zero_grad()
        out.backward(out.data * noise)
        opt.step()
        sched.step()


def test_resume_is_bit_identical(tmp_path):
    model, opt, sched = _setup()
    _train(model, opt, sched, 3)
    path = tmp_path / "run.safetensors"
    save_training_checkpoint(path, model=model, optimizer=opt, scheduler=sched, step=3, epoch=1,
                             config={"lr": 0.05, "layers": [5, 8, 2]}, extra={"best": 0.5})
    _train(model, opt, sched, 3)
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    torch.manual_seed(123)  # scramble everything the checkpoint must restore
    np.random.seed(9)
    random.seed(9)
    model2, opt2, sched2 = _setup()
    ck = load_training_checkpoint(path, model=model2, optimizer=opt2, scheduler=sched2)
    assert ck["step"] == 3 and ck["epoch"] == 1 and ck["config"] == {"lr": 0.05, "layers": [5, 8, 2]}
    assert ck["extra"] == {"best": 0.5}
    _train(model2, opt2, sched2, 3)
    got = model2.state_dict()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_training_checkpoint_errors(tmp_path):
    model, opt, sched = _setup()
    plain = tmp_path / "plain.safetensors"
    td.save(model.state_dict(), plain)
    with pytest.raises(CheckpointError, match="not a tinydl training checkpoint"):
        load_training_checkpoint(plain, model=model)
    part = tmp_path / "part.safetensors"
    save_training_checkpoint(part, model=model)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_training_checkpoint(part, model=model, optimizer=opt)
    other = nn.Sequential(nn.Linear(5, 3))
    with pytest.raises(RuntimeError, match="size mismatch|missing keys"):
        load_training_checkpoint(part, model=other)


def test_saved_files_get_the_usual_mode(tmp_path):
    import stat

    td.save({"w": torch.zeros(2)}, tmp_path / "m.safetensors")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "m.safetensors").st_mode) == 0o666 & ~umask
