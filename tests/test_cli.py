"""The CLI end to end on tiny IDX data: train (files, resume, Ctrl-C, NaN stop), eval, predict, errors."""

import csv
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import tinydl.train as train_mod
from tinydl.cli import main
from tinydl.serialization import load

from .test_data import write_idx_set

MODE = train_mod._runtime.mode()  # "interpreter" on a CPU, "native" on a GPU
TINY = ["--dataset", "mnist", "--no-progress", "-b", "4", "--lr", "0.01"]


@pytest.fixture
def data_dir(tmp_path):
    write_idx_set(tmp_path / "data" / "mnist", n_train=12, n_test=6)
    return tmp_path / "data"


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out + out.err


def params(path):
    return {k: v for k, v in load(path)["model"].items()}


def test_info(capsys):
    code, out = run(["info"], capsys)
    assert code == 0 and MODE in out and "triton" in out


def test_train_help_names_the_real_defaults(capsys):
    # the parser's defaults are None (so --resume can tell given flags apart): the help must not show them
    code, out = run(["train", "--help"], capsys)
    out = " ".join(out.split())
    assert code == 0
    assert "default: None" not in out and "default: True" not in out
    assert "default 3" in out and "default lenet5" in out and "default adam" in out


def test_bench_and_profile_run_the_tools(tmp_path, capsys, monkeypatch):
    code, out = run(["bench", "--help"], capsys)
    assert code == 0 and "usage: tinydl bench" in out and "--quick" in out
    code, out = run(["profile", "--bogus"], capsys)
    assert code == 2 and "usage: tinydl profile" in out and "--bogus" in out
    code, out = run(["bench", "--quick", "--family", "softmax", "--no-compile", "--no-plots", "--out", str(tmp_path)],
                    capsys)
    assert code == 0, out[-2000:]
    assert "softmax" in (tmp_path / "bench.csv").read_text()
    monkeypatch.setattr("tinydl.cli.TOOLS_DIR", tmp_path / "nowhere")  # installed from a wheel: no tools/
    code, out = run(["bench", "--quick"], capsys)
    assert code == 2 and "tools/bench.py of a tinydl source checkout" in out


def test_tf32_run_restores_the_matmul_precision(tmp_path, data_dir, capsys):
    import tinydl as td

    assert td.get_float32_matmul_precision() == "highest"
    code, out = run(["train", *TINY, "--data-dir", str(data_dir), "--max-steps", "1", "--precision", "tf32",
                     "--out-dir", str(tmp_path / "run")], capsys)
    assert code == 0, out
    assert td.get_float32_matmul_precision() == "highest"  # not leaked into the rest of the process


def test_train_writes_everything(tmp_path, data_dir, capsys):
    out_dir = tmp_path / "run"
    code, out = run(["train", *TINY, "--data-dir", str(data_dir), "--epochs", "2", "--out-dir", str(out_dir)], capsys)
    assert code == 0, out
    assert {"config.json", "metrics.csv", "last.safetensors", "best.safetensors", "curves.png"} <= {
        p.name for p in out_dir.iterdir()}
    rows = list(csv.DictReader((out_dir / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[-1]["step"] == "6"
    assert 0.0 <= float(rows[-1]["test_acc"]) <= 1.0
    cfg = json.loads((out_dir / "config.json").read_text())
    assert cfg["model"] == "lenet5" and cfg["batch_size"] == 4
    for word in ("lenet5", MODE, "12 train / 6 test", "epoch=1", "epoch=2", "best test accuracy",
                 "mean step time", "checkpoint"):
        assert word in out, word
    assert (out_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_max_steps_then_resume_is_bit_identical(tmp_path, data_dir, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    common = ["train", *TINY, "--data-dir", str(data_dir), "--epochs", "2", "--model", "mlp"]
    assert run([*common, "--out-dir", str(full)], capsys)[0] == 0
    # stop mid-epoch 1 (3 batches per epoch), then resume and finish
    code, out = run([*common, "--out-dir", str(part), "--max-steps", "2"], capsys)
    assert code == 0 and "max-steps" in out
    code, out = run([*common, "--out-dir", str(part), "--resume", str(part / "last.safetensors")], capsys)
    assert code == 0, out
    a, b = params(full / "last.safetensors"), params(part / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows_full = list(csv.DictReader((full / "metrics.csv").open()))
    rows_part = list(csv.DictReader((part / "metrics.csv").open()))
    for rf, rp in zip(rows_full, rows_part, strict=True):
        assert rf["train_loss"] == rp["train_loss"] and rf["test_acc"] == rp["test_acc"]


def test_sigint_saves_checkpoint_and_resumes(tmp_path, data_dir, capsys, monkeypatch):
    out_dir = tmp_path / "run"
    real_ce, calls = train_mod.F.cross_entropy, []

    def ce_then_interrupt(logits, y, **kw):
        calls.append(1)
        if len(calls) == 2 and not kw:
            os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C during step 2
        return real_ce(logits, y, **kw)

    monkeypatch.setattr(train_mod.F, "cross_entropy", ce_then_interrupt)
    code, out = run(["train", *TINY, "--data-dir", str(data_dir), "--epochs", "2", "--out-dir", str(out_dir)], capsys)
    assert code == 130 and "SIGINT" in out and "--resume" in out
    state = load(out_dir / "last.safetensors")
    assert state["step"] == 2
    monkeypatch.setattr(train_mod.F, "cross_entropy", real_ce)
    code, out = run(["train", *TINY, "--data-dir", str(data_dir), "--epochs", "2", "--out-dir", str(out_dir),
                     "--resume", str(out_dir / "last.safetensors")], capsys)
    assert code == 0 and load(out_dir / "last.safetensors")["step"] == 6


def test_nan_loss_stops_with_step_and_keeps_checkpoint(tmp_path, data_dir, capsys, monkeypatch):
    out_dir = tmp_path / "run"
    real_ce, calls = train_mod.F.cross_entropy, []

    def ce_nan(logits, y, **kw):
        loss = real_ce(logits, y, **kw)
        if not kw:
            calls.append(1)
            if len(calls) == 5:  # step 5 = epoch 2, batch 2
                loss.data.fill_(float("nan"))
        return loss

    monkeypatch.setattr(train_mod.F, "cross_entropy", ce_nan)
    code, out = run(["train", *TINY, "--data-dir", str(data_dir), "--epochs", "3", "--out-dir", str(out_dir)], capsys)
    assert code == 1 and "step 5" in out and "nan" in out
    assert load(out_dir / "last.safetensors")["step"] == 3  # the end-of-epoch-1 checkpoint survives


def test_eval_and_predict(tmp_path, data_dir, capsys):
    out_dir = tmp_path / "run"
    assert run(["train", *TINY, "--data-dir", str(data_dir), "--epochs", "1", "--out-dir", str(out_dir)],
               capsys)[0] == 0
    ckpt = str(out_dir / "best.safetensors")
    code, out = run(["eval", "--checkpoint", ckpt, "--data-dir", str(data_dir)], capsys)
    assert code == 0 and "accuracy" in out and "confusion matrix" in out

    from PIL import Image

    img = (np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "digit.png")
    np.save(tmp_path / "digit.npy", img)
    code, out = run(["predict", "--checkpoint", ckpt, str(tmp_path / "digit.png"), str(tmp_path / "digit.npy")],
                    capsys)
    assert code == 0 and "digit.png" in out and "digit.npy" in out


@pytest.mark.parametrize("args,message", [
    (["train", "-b", "0"], "--batch-size must be >= 1"),
    (["train", "--epochs", "-1"], "--epochs must be >= 0"),
    (["train", "--lr", "-3"], "--lr must be a positive number"),
    (["train", "--model", "resnet"], "invalid choice"),
    (["train", "--optimizer", "lion"], "invalid choice"),
    (["train", "--dataset", "cifar"], "invalid choice"),
    (["train", "--resume", "/nonexistent/ckpt.safetensors"], "ckpt.safetensors"),
    (["eval", "--checkpoint", "/nonexistent/x.safetensors"], "x.safetensors"),
    pytest.param(["train", "--cuda-graph"], "--cuda-graph needs a CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU error")),
])
def test_bad_usage_exits_2_and_writes_nothing(tmp_path, args, message, capsys):
    out_dir = tmp_path / "never"
    code, out = run([*args, *(["--out-dir", str(out_dir)] if args[0] == "train" else [])], capsys)
    assert code == 2 and message in out, out
    assert not out_dir.exists()


def test_unreadable_and_foreign_checkpoints(tmp_path, data_dir, capsys):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint at all")
    code, out = run(["eval", "--checkpoint", str(garbage)], capsys)
    assert code == 2 and "garbage.safetensors" in out
    out_dir = tmp_path / "run"
    assert run(["train", *TINY, "--data-dir", str(data_dir), "--epochs", "1", "--out-dir", str(out_dir)],
               capsys)[0] == 0
    code, out = run(["train", *TINY, "--model", "mlp", "--data-dir", str(data_dir), "--out-dir", str(tmp_path / "x"),
                     "--resume", str(out_dir / "last.safetensors")], capsys)
    assert code == 2 and "lenet5" in out and not (tmp_path / "x").exists()
    code, out = run(["predict", "--checkpoint", str(out_dir / "last.safetensors"), str(tmp_path / "nope.png")], capsys)
    assert code == 2 and "nope.png" in out


def test_python_dash_m_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tinydl", "info"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "tinydl" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "tinydl", "train", "--batch-size", "0", "--out-dir",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and not (tmp_path / "o").exists()


def test_bare_resume_continues_the_checkpoints_run(tmp_path, data_dir, capsys, monkeypatch):
    out_dir = tmp_path / "run"
    code, _ = run(["train", *TINY, "--data-dir", str(data_dir), "--epochs", "4", "--out-dir", str(out_dir),
                   "--max-steps", "5"], capsys)
    assert code == 0 and load(out_dir / "last.safetensors")["step"] == 5
    monkeypatch.chdir(tmp_path)  # a default out_dir would land here
    code, out = run(["train", "--no-progress", "--resume", str(out_dir / "last.safetensors")], capsys)
    assert code == 0, out
    # the checkpoint's epochs (4, not the default) and out_dir, and its batch size/data
    assert load(out_dir / "last.safetensors")["step"] == 12  # 4 epochs x 3 batches of 4
    assert len(list(csv.DictReader((out_dir / "metrics.csv").open()))) == 4
    assert not (tmp_path / "runs").exists()
    # a setting that defines the run cannot change on resume
    code, out = run(["train", "--no-progress", "--lr", "0.5", "--resume", str(out_dir / "last.safetensors")], capsys)
    assert code == 2 and "lr=0.01" in out


def test_resume_at_max_steps_trains_nothing(tmp_path, data_dir, capsys):
    out_dir = tmp_path / "run"
    args = ["train", *TINY, "--data-dir", str(data_dir), "--epochs", "2", "--out-dir", str(out_dir)]
    assert run([*args, "--max-steps", "2"], capsys)[0] == 0
    before = params(out_dir / "last.safetensors")
    code, out = run([*args, "--max-steps", "2", "--resume", str(out_dir / "last.safetensors")], capsys)
    assert code == 0 and "nothing to train" in out
    after = load(out_dir / "last.safetensors")
    assert after["step"] == 2 and all(torch.equal(before[k], after["model"][k]) for k in before)


@pytest.mark.cuda
@pytest.mark.parametrize("first,then", [(["--cuda-graph"], []), ([], ["--cuda-graph"])],
                         ids=["graph>eager", "eager>graph"])
def test_cuda_graph_training_and_resume_keep_adams_step_count(tmp_path, data_dir, capsys, first, then):
    # 3 batches per epoch, 3 epochs: under --cuda-graph steps 1-3 are eager, 4 captures, then replays;
    # Adam's saved step count must follow every step, whichever way --cuda-graph changes on resume
    out_dir = tmp_path / "run"
    args = ["train", *TINY, "--data-dir", str(data_dir), "--epochs", "3", "--out-dir", str(out_dir)]
    assert run([*args, *first, "--max-steps", "5"], capsys)[0] == 0
    ckpt = load(out_dir / "last.safetensors")
    assert ckpt["step"] == 5 and {float(s["step"]) for s in ckpt["optimizer"]["state"].values()} == {5.0}
    code, out = run([*args, *then, "--resume", str(out_dir / "last.safetensors")], capsys)
    assert code == 0, out
    ckpt = load(out_dir / "last.safetensors")
    assert ckpt["step"] == 9 and {float(s["step"]) for s in ckpt["optimizer"]["state"].values()} == {9.0}
    assert ckpt["optimizer"]["param_groups"][0]["capturable"] is bool(then)


def test_resume_of_a_capturable_adam_checkpoint_counts_on(tmp_path, data_dir, capsys, monkeypatch):
    # a checkpoint of a --cuda-graph run (capturable Adam: the step count on the device) resumed
    # without it: the group goes back to host counting and continues from the saved count
    out_dir = tmp_path / "run"
    args = ["train", *TINY, "--data-dir", str(data_dir), "--epochs", "2", "--out-dir", str(out_dir)]
    build = train_mod.build_optimizer

    def capturable(cfg, model):
        opt = build(cfg, model)
        opt.param_groups[0]["capturable"] = True
        return opt

    monkeypatch.setattr(train_mod, "build_optimizer", capturable)
    assert run([*args, "--max-steps", "4"], capsys)[0] == 0
    assert load(out_dir / "last.safetensors")["optimizer"]["param_groups"][0]["capturable"] is True
    monkeypatch.setattr(train_mod, "build_optimizer", build)
    code, out = run([*args, "--resume", str(out_dir / "last.safetensors")], capsys)
    assert code == 0, out
    ckpt = load(out_dir / "last.safetensors")
    assert ckpt["step"] == 6 and {float(s["step"]) for s in ckpt["optimizer"]["state"].values()} == {6.0}
    assert ckpt["optimizer"]["param_groups"][0]["capturable"] is False
