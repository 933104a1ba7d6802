"""The ``tinydl`` command line: train / eval / predict / info, and bench / profile (the tools/ scripts).

``main(argv=None)`` returns the exit code (tests call it in-process): 0 success, 1 the run failed
(a non-finite loss), 2 bad usage or an unreadable input (nothing written), 128+N a signal.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

from tinydl import _runtime
from tinydl.train import UsageError

# ------------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------------

def _cmd_info(args, display) -> int:
    import torch
    import triton

    import tinydl

    fields = {"tinydl": tinydl.__version__, "python": platform.python_version(), "torch": torch.__version__,
              "triton": triton.__version__, "device": _runtime.device()}
    if _runtime.device() == "cuda":
        fields["gpu"] = torch.cuda.get_device_name()
    fields["mode"] = ("native (compiled Triton kernels)" if not _runtime.INTERPRET
                      else "interpreter (TRITON_INTERPRET=1: kernels run on the CPU)")
    fields["fp32 matmul precision"] = _runtime.get_float32_matmul_precision()
    display.header("tinydl info", fields)
    return 0


def _cmd_train(args, display) -> int:
    from tinydl.train import TrainConfig, train

    cfg = TrainConfig()
    given = set()
    for k, v in vars(args).items():
        if v is not None and hasattr(cfg, k):
            setattr(cfg, k, v)
            given.add(k)
    return train(cfg, display, resume=args.resume, given=frozenset(given))


def _load_for_inference(path: str):
    """(config, model in eval mode) from a training checkpoint; UsageError if unusable."""
    from tinydl.serialization import load_training_checkpoint, restore_training_state
    from tinydl.train import TrainConfig, build_model

    state = load_training_checkpoint(path, restore_rng=False)
    cfg = TrainConfig.from_dict(state.get("config") or {})
    model = build_model(cfg)
    restore_training_state(state, path, model=model, restore_rng=False)
    return cfg, model.eval()


def _cmd_eval(args, display) -> int:
    from tinydl.data import DataLoader, load_dataset
    from tinydl.train import DTYPES, evaluate

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    cfg, model = _load_for_inference(args.checkpoint)
    dataset = args.dataset or cfg.dataset
    _, test_set = load_dataset(dataset, args.data_dir or cfg.data_dir, args.download)
    loss, acc, confusion = evaluate(model, DataLoader(test_set, args.batch_size), DTYPES[cfg.precision])
    display.header("tinydl eval", {"checkpoint": args.checkpoint, "model": cfg.model,
                                   "data": f"{dataset} test ({len(test_set):,} images)",
                                   "loss": f"{loss:.4f}", "accuracy": f"{100 * acc:.2f}%"})
    n = confusion.shape[0]
    display.table("confusion matrix (rows: true class, columns: predicted)", ["true\\pred", *range(n)],
                  [[c, *confusion[c].tolist()] for c in range(n)])
    return 0


def _read_image(path: str):
    """A 28x28 grayscale image as float 0..1 (PNG via Pillow, or .npy)."""
    import numpy as np

    p = Path(path)
    if not p.exists():
        raise UsageError(f"{path}: no such file")
    try:
        if p.suffix.lower() == ".npy":
            img = np.load(p, allow_pickle=False).astype(np.float32)
            img = img / 255.0 if img.max() > 1.0 else img
        else:
            from PIL import Image

            with Image.open(p) as im:
                img = np.asarray(im.convert("L").resize((28, 28)), dtype=np.float32) / 255.0
    except Exception as e:
        raise UsageError(f"{path}: cannot read as an image ({type(e).__name__}: {e})") from e
    img = np.squeeze(img)
    if img.shape != (28, 28):
        raise UsageError(f"{path}: expected a 28x28 grayscale image, got shape {img.shape}")
    return img


def _cmd_predict(args, display) -> int:
    import numpy as np
    import torch

    import tinydl as td
    from tinydl import functional as F
    from tinydl.data.datasets import FASHION_STATS
    from tinydl.train import DTYPES

    cfg, model = _load_for_inference(args.checkpoint)
    images = np.stack([_read_image(p) for p in args.images])
    if args.invert:
        images = 1.0 - images
    mean, std = FASHION_STATS if cfg.dataset == "fashion-mnist" else (0.1307, 0.3081)
    x = torch.from_numpy(((images - mean) / std).astype(np.float32)[:, None]).to(_runtime.device())
    with td.no_grad():
        probs = F.softmax(model(td.Tensor(x.to(DTYPES[cfg.precision]))), dim=-1).data.float().cpu().numpy()
    rows = [[Path(p).name, int(pr.argmax()), f"{pr.max():.3f}", *[f"{v:.3f}" for v in pr]]
            for p, pr in zip(args.images, probs)]
    display.table(f"predictions ({cfg.model}, {cfg.dataset})", ["image", "class", "p", *range(probs.shape[1])], rows)
    return 0


# ------------------------------------------------------------------------------------------------
# parsing
# ------------------------------------------------------------------------------------------------

def _int(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from tinydl.train import MODELS, OPTIMIZERS, PRECISIONS, SCHEDULES, TrainConfig

    d = TrainConfig()
    p = argparse.ArgumentParser(prog="tinydl", description="Train and run small networks on fused Triton kernels.")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("info", help="versions, device and kernel mode")

    # None defaults: what the user did not give comes from TrainConfig (or from the checkpoint on
    # --resume), so each help text names the real default itself (ArgumentDefaultsHelpFormatter would
    # print "(default: None)")
    t = sub.add_parser("train", help="train a model (default: LeNet-5 on the embedded mnist-5k)")
    t.add_argument("--model", choices=MODELS, default=None, help=f"network (default {d.model})")
    t.add_argument("--dataset", choices=("mnist-5k", "mnist", "fashion-mnist"), default=None,
                   help=f"data (default {d.dataset}, embedded, no network)")
    t.add_argument("--data-dir", default=None, help=f"where IDX files live / are cached (default {d.data_dir})")
    t.add_argument("--download", action="store_true", default=None, help="fetch missing IDX files (checksummed)")
    t.add_argument("--epochs", type=_int, default=None, help=f"default {d.epochs}")
    t.add_argument("-b", "--batch-size", type=_int, default=None, help=f"default {d.batch_size}")
    t.add_argument("--lr", type=float, default=None, help=f"learning rate (default {d.lr})")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help=f"default {d.optimizer}")
    t.add_argument("--momentum", type=float, default=None, help=f"SGD momentum (default {d.momentum})")
    t.add_argument("--weight-decay", type=float, default=None, help=f"default {d.weight_decay}")
    t.add_argument("--schedule", choices=SCHEDULES, default=None, help=f"lr schedule per epoch (default {d.schedule})")
    t.add_argument("--seed", type=int, default=None, help=f"default {d.seed}")
    t.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    t.add_argument("--precision", choices=PRECISIONS, default=None, help=f"default {d.precision}")
    t.add_argument("--out-dir", default=None, help=f"run folder (default {d.out_dir})")
    t.add_argument("--resume", default=None, help="continue from a checkpoint (e.g. OUT/last.safetensors)")
    t.add_argument("--max-steps", type=_int, default=None, help="stop after this many optimizer steps")
    t.add_argument("--no-progress", dest="progress", action="store_false", help="plain lines, no live bar")
    t.add_argument("--cuda-graph", action="store_true", default=None,
                   help="replay each training step as one CUDA graph "
                        "(GPU; steps 1-3 run eagerly, the last partial batch of an epoch is dropped)")

    e = sub.add_parser("eval", help="accuracy, loss and confusion matrix of a checkpoint on the test split")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--dataset", choices=("mnist-5k", "mnist", "fashion-mnist"), default=None)
    e.add_argument("--data-dir", default=None)
    e.add_argument("--download", action="store_true")
    e.add_argument("-b", "--batch-size", type=_int, default=256)
    e.add_argument("--device", choices=("cpu", "cuda"), default=None)

    pr = sub.add_parser("predict", help="classify 28x28 PNG/NPY images with a checkpoint")
    pr.add_argument("--checkpoint", required=True)
    pr.add_argument("images", nargs="+")
    pr.add_argument("--invert", action="store_true", help="images are dark digits on a light background")
    pr.add_argument("--device", choices=("cpu", "cuda"), default=None)
    for name, what in TOOLS.items():  # listed here for --help; main() hands their arguments to the tool
        sub.add_parser(name, help=f"{what} (tools/{name}.py; `tinydl {name} --help` for its options)",
                       add_help=False)
    return p


#: subcommands that run a script of the source checkout's tools/ folder with the remaining arguments
TOOLS = {"bench": "time every kernel family against PyTorch eager and torch.compile",
         "profile": "profile MLP and LeNet-5 training steps in tinydl and PyTorch side by side"}


#: the source checkout's tools/ folder (absent when tinydl was installed from a wheel)
TOOLS_DIR = Path(__file__).resolve().parent.parent / "tools"


def _run_tool(name: str, argv: list[str]) -> int:
    """``tinydl bench ARGS`` = ``python tools/bench.py ARGS`` (the tools live beside the package, not in it)."""
    import importlib

    script = TOOLS_DIR / f"{name}.py"
    if not script.is_file():
        print(f"error: tinydl {name} runs tools/{name}.py of a tinydl source checkout, and {script} does not "
              "exist (this tinydl was installed without its tools/ folder). Clone the repository and "
              "`pip install -e .` there to use it.", file=sys.stderr)
        return 2
    root = str(TOOLS_DIR.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        return importlib.import_module(f"tools.{name}").main(argv, prog=f"tinydl {name}")
    except SystemExit as e:  # the tool's argparse: 0 for --help, 2 for bad usage
        return int(e.code or 0)


COMMANDS = {"info": _cmd_info, "train": _cmd_train, "eval": _cmd_eval, "predict": _cmd_predict}


def main(argv: list[str] | None = None) -> int:
    from tinydl.display import TrainDisplay

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOLS:
        return _run_tool(argv[0], argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on bad usage (and 0 for --help)
        return int(e.code or 0)

    device = getattr(args, "device", None)
    if device and device != _runtime.device():
        if device == "cuda":
            print("error: --device cuda: no CUDA GPU is available here", file=sys.stderr)
            return 2
        # the device decides how kernels are defined (native or interpreter) at import: start over
        env = dict(os.environ, TINYDL_DEVICE=device)
        os.execve(sys.executable, [sys.executable, "-m", "tinydl", *argv], env)

    display = TrainDisplay(progress=getattr(args, "progress", True))  # only train has --no-progress
    from tinydl.data import DatasetError
    from tinydl.serialization import CheckpointError
    try:
        return COMMANDS[args.command](args, display)
    except (UsageError, DatasetError, CheckpointError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
        display.error(str(e))  # an input the user named is missing or unusable: nothing was written
        return 2
    except RuntimeError as e:
        if "state_dict" in str(e):  # a checkpoint of another architecture
            display.error(f"checkpoint does not fit the model: {e}")
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
