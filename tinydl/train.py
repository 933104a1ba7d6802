"""The training loop behind ``tinydl train`` (and ``eval``/``predict``), readable top to bottom.

Everything the user sees goes through ``tinydl.display.TrainDisplay``; this file only trains,
evaluates, checkpoints and writes ``config.json``, ``metrics.csv`` and ``curves.png``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

import tinydl as td
from tinydl import _runtime, models, nn, optim
from tinydl import functional as F
from tinydl.data import DataLoader, load_dataset
from tinydl.display import TrainDisplay
from tinydl.serialization import load_training_checkpoint, restore_training_state, save_training_checkpoint

MODELS = ("lenet5", "mlp")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine")
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class UsageError(ValueError):
    """A bad argument or input file: reported in one line, exit code 2, nothing written."""


@dataclass
class TrainConfig:
    model: str = "lenet5"
    dataset: str = "mnist-5k"
    data_dir: str = "~/.cache/tinydl"
    download: bool = False
    epochs: int = 3
    batch_size: int = 64
    lr: float = 5e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    seed: int = 0
    precision: str = "fp32"
    out_dir: str = "runs/latest"
    max_steps: int | None = None
    cuda_graph: bool = False

    def validate(self) -> None:
        checks = [
            (self.model in MODELS, f"--model {self.model!r}: use one of {', '.join(MODELS)}"),
            (self.optimizer in OPTIMIZERS, f"--optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}"),
            (self.schedule in SCHEDULES, f"--schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}"),
            (self.precision in PRECISIONS, f"--precision {self.precision!r}: use one of {', '.join(PRECISIONS)}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.epochs >= 0, f"--epochs must be >= 0, got {self.epochs}"),
            (self.lr > 0 and math.isfinite(self.lr), f"--lr must be a positive number, got {self.lr}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}"),
            (self.max_steps is None or self.max_steps >= 1, f"--max-steps must be >= 1, got {self.max_steps}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UsageError(msg)
        if self.cuda_graph and _runtime.device() != "cuda":
            raise UsageError("--cuda-graph needs a CUDA GPU (this run is on the CPU interpreter)")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------

def build_model(cfg: TrainConfig) -> nn.Module:
    model = models.lenet5() if cfg.model == "lenet5" else models.mlp()
    return model.to(dtype=DTYPES[cfg.precision])


def build_optimizer(cfg: TrainConfig, model: nn.Module):
    params = list(model.parameters())
    if cfg.optimizer == "sgd":
        return optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # under a CUDA graph Adam's step count must live on the device (the lr is handled by recapturing)
    if cfg.optimizer == "adam":
        return optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, capturable=cfg.cuda_graph)
    return optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay or 0.01, capturable=cfg.cuda_graph)


def build_scheduler(cfg: TrainConfig, opt):
    if cfg.schedule == "step":
        return optim.lr_scheduler.StepLR(opt, step_size=max(1, cfg.epochs // 3), gamma=0.3)
    if cfg.schedule == "cosine":
        return optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs))
    return None


@td.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, dtype=torch.float32, num_classes: int = 10):
    """(mean loss, accuracy, confusion matrix [true, predicted]) over the loader, inference mode."""
    was_training = model.training
    model.eval()
    loss_sum, n = 0.0, 0
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for x, y in loader:
        logits = model(td.Tensor(x.data.to(dtype)))
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        pred = logits.data.float().cpu().numpy().argmax(1)  # host-side metric, not model math
        np.add.at(confusion, (y.data.cpu().numpy(), pred), 1)
        n += len(y)
    model.train(was_training)
    acc = float(np.trace(confusion)) / max(n, 1)
    return (loss_sum / n if n else float("nan")), acc, confusion


def plot_curves(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    a.plot(epochs, [r["test_loss"] for r in rows], "o-", label="test")
    a.set_xlabel("epoch"), a.set_ylabel("cross-entropy"), a.legend(), a.set_title("loss")
    b.plot(epochs, [100 * r["test_acc"] for r in rows], "o-", color="tab:green")
    b.set_xlabel("epoch"), b.set_ylabel("%"), b.set_title("test accuracy")
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


METRIC_FIELDS = ("epoch", "step", "train_loss", "test_loss", "test_acc", "lr", "time_s", "samples_per_s")


def write_metrics(rows: list[dict], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in METRIC_FIELDS})
    os.replace(tmp, path)


class StopFlag:
    """Ctrl-C / SIGTERM ask the loop to stop at the next step boundary (a safe point)."""

    def __init__(self):
        self.signal: int | None = None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


# ------------------------------------------------------------------------------------------------
# train
# ------------------------------------------------------------------------------------------------

# What a resumed run may change; everything else (model, data, optimizer...) is the checkpoint's.
RESUME_MAY_CHANGE = ("epochs", "max_steps", "out_dir", "data_dir", "download", "cuda_graph")


def _train(cfg: TrainConfig, display: TrainDisplay, resume: str | None = None, given: frozenset = frozenset()) -> int:
    """Train per ``cfg``; returns the process exit code (0 done, 1 non-finite loss, 130/143 signal).

    With ``resume``, the run continues as the checkpoint's config says; of the settings named in
    ``given`` (the ones the user typed), those in RESUME_MAY_CHANGE apply and any other that
    differs from the checkpoint is an error. ``max_steps`` is never inherited.
    """
    state = load_training_checkpoint(resume, restore_rng=False) if resume else None
    if state is not None:
        saved = TrainConfig.from_dict(state["config"])
        for k in sorted(given):
            if k not in RESUME_MAY_CHANGE and hasattr(saved, k) and getattr(saved, k) != getattr(cfg, k):
                raise UsageError(f"--resume {resume} is a checkpoint of a run with {k}={getattr(saved, k)!r}, "
                                 f"not {getattr(cfg, k)!r}; only {', '.join(RESUME_MAY_CHANGE)} may change")
        for f in fields(TrainConfig):
            # --max-steps limits one invocation: a bare --resume runs to the end of the epochs
            if f.name != "max_steps" and (f.name not in given or f.name not in RESUME_MAY_CHANGE):
                setattr(cfg, f.name, getattr(saved, f.name))
    cfg.validate()
    if cfg.precision == "tf32":
        td.set_float32_matmul_precision("high")
    dtype = DTYPES[cfg.precision]

    td.manual_seed(cfg.seed)
    train_set, test_set = load_dataset(cfg.dataset, cfg.data_dir, cfg.download)
    train_loader = DataLoader(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed)
    test_loader = DataLoader(test_set, 256)
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt)

    step, start_epoch, skip, rows, best = 0, 0, 0, [], {"acc": -1.0, "epoch": None}
    epoch_loss, epoch_seen = 0.0, 0
    if state is not None:
        restore_training_state(state, resume, model=model, optimizer=opt, scheduler=sched)
        for group in opt.param_groups:  # --cuda-graph may change on resume: the step count follows it
            if "capturable" in group:
                group["capturable"] = cfg.cuda_graph
        extra = state["extra"]
        step, start_epoch, skip = state["step"], state["epoch"], extra["batches_done"]
        rows, best = extra["rows"], extra["best"]
        epoch_loss, epoch_seen = extra["epoch_loss"], extra["epoch_seen"]

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    last_path, best_path = out / "last.safetensors", out / "best.safetensors"

    def checkpoint(path, epoch, batches_done):
        save_training_checkpoint(path, model=model, optimizer=opt, scheduler=sched, step=step, epoch=epoch,
                                 config=asdict(cfg), extra=dict(batches_done=batches_done, rows=rows, best=best,
                                                                epoch_loss=epoch_loss, epoch_seen=epoch_seen))

    n_params = sum(p.numel() for p in model.parameters())
    display.header("tinydl train", {
        "model": f"{cfg.model} ({n_params:,} parameters)",
        "data": f"{cfg.dataset}: {len(train_set):,} train / {len(test_set):,} test",
        "optimizer": f"{cfg.optimizer} lr={cfg.lr:g} wd={cfg.weight_decay:g} schedule={cfg.schedule}",
        "batch / epochs": f"{cfg.batch_size} / {cfg.epochs}"
                          + (f" (max {cfg.max_steps} steps)" if cfg.max_steps else ""),
        "device": f"{_runtime.device()} ({_runtime.mode()} Triton kernels), {cfg.precision}",
        "output": str(out) + (f" (resumed from {resume} at step {step})" if resume else ""),
    })

    def train_step(x, y):
        loss = F.cross_entropy(model(td.Tensor(x.data.to(dtype))), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    step_fn = train_step
    if cfg.cuda_graph:  # replay the whole step as one CUDA graph (static shapes: drop the last batch)
        from tinydl.cuda_graph import CudaGraphStep

        train_loader.drop_last = True
        step_fn = CudaGraphStep(train_step)  # steps 1-3 eager (warm-up), step 4 captures, then replays

    step_times: list[float] = []
    t_run = time.perf_counter()
    if cfg.max_steps and step >= cfg.max_steps:
        display.message(f"the checkpoint is at step {step}, already at --max-steps {cfg.max_steps}: nothing to train")
        start_epoch = cfg.epochs  # skip the loop, keep the summary
    with StopFlag() as stop:
        for epoch in range(start_epoch, cfg.epochs):
            train_loader.set_epoch(epoch, skip)
            display.epoch_start(epoch, cfg.epochs, len(train_loader))
            for _ in range(skip):
                display.step(epoch_loss / max(epoch_seen, 1), 0.0)
            t_epoch, seen_now = time.perf_counter(), 0
            batches_done = skip
            for x, y in train_loader:
                t0 = time.perf_counter()
                loss = step_fn(x, y)
                lv = loss.item()
                if not math.isfinite(lv):
                    display.stop_progress()
                    kept = last_path if last_path.exists() else "none yet"
                    display.error(f"loss became {lv} at step {step + 1} (epoch {epoch + 1}); stopping. "
                                  f"The last good checkpoint is kept: {kept}")
                    return 1
                step += 1
                batches_done += 1
                step_times.append(time.perf_counter() - t0)
                epoch_loss += lv * len(y)
                epoch_seen += len(y)
                seen_now += len(y)
                display.step(epoch_loss / epoch_seen, seen_now / (time.perf_counter() - t_epoch))
                if stop.signal is not None or (cfg.max_steps and step >= cfg.max_steps):
                    break
            if stop.signal is not None or (cfg.max_steps and step >= cfg.max_steps and
                                           batches_done < len(train_loader)):
                display.stop_progress()
                checkpoint(last_path, epoch, batches_done)
                if stop.signal is not None:
                    name = signal.Signals(stop.signal).name
                    display.message(f"{name}: stopped at step {step}; checkpoint saved to {last_path}. "
                                    f"Resume with: tinydl train --resume {last_path}")
                    return 128 + stop.signal
                display.message(f"reached --max-steps {cfg.max_steps} at step {step}; checkpoint: {last_path}")
                break
            # the epoch is complete: evaluate, record, checkpoint
            test_loss, test_acc, _ = evaluate(model, test_loader, dtype)
            lr = opt.param_groups[0]["lr"]
            if sched is not None:
                sched.step()
                if cfg.cuda_graph:
                    step_fn.recapture()  # the graph holds the old lr as a kernel argument
            elapsed = time.perf_counter() - t_epoch
            row = dict(epoch=epoch + 1, step=step, train_loss=epoch_loss / max(epoch_seen, 1), test_loss=test_loss,
                       test_acc=test_acc, lr=lr, time_s=elapsed, samples_per_s=seen_now / max(elapsed, 1e-9))
            rows.append(row)
            epoch_loss, epoch_seen, skip = 0.0, 0, 0
            if test_acc > best["acc"]:
                best = {"acc": test_acc, "epoch": epoch + 1}
            checkpoint(last_path, epoch + 1, 0)
            if best["epoch"] == epoch + 1:
                checkpoint(best_path, epoch + 1, 0)
            write_metrics(rows, out / "metrics.csv")
            display.epoch_end(row)
            if cfg.max_steps and step >= cfg.max_steps:
                display.message(f"reached --max-steps {cfg.max_steps} at step {step}")
                break

    if rows:
        plot_curves(rows, out / "curves.png")
    warm = step_times[3:] or step_times
    display.summary({
        "best test accuracy": f"{100 * best['acc']:.2f}% (epoch {best['epoch']})" if rows else "n/a",
        "total time": f"{time.perf_counter() - t_run:.1f}s",
        "mean step time": f"{1000 * sum(warm) / len(warm):.1f} ms (after warm-up)" if warm else "n/a",
        "checkpoint": str(best_path if best_path.exists() else last_path),
        "files": ", ".join(str(p) for p in (out / "config.json", out / "metrics.csv", out / "curves.png")
                           if p.exists()),
    })
    return 0


def train(cfg: TrainConfig, display: TrainDisplay, resume: str | None = None, given: frozenset = frozenset()) -> int:
    """Run the training described by ``cfg`` (see ``_train``); returns the exit code. A ``--precision
    tf32`` run switches tinydl's fp32 matmul precision for its duration only."""
    precision = td.get_float32_matmul_precision()
    try:
        return _train(cfg, display, resume, given)
    finally:
        td.set_float32_matmul_precision(precision)
