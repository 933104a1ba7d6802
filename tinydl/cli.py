"""The ``tinydl`` command line. ``main(argv=None)`` returns the exit code (tests call it)."""

from __future__ import annotations

import argparse
import platform
import sys


def _info(args) -> int:
    import torch
    import triton
    from rich.console import Console
    from rich.table import Table

    import tinydl
    from tinydl import _runtime

    t = Table(title="tinydl", show_header=False)
    t.add_row("tinydl", tinydl.__version__)
    t.add_row("python", platform.python_version())
    t.add_row("torch", torch.__version__)
    t.add_row("triton", triton.__version__)
    t.add_row("device", _runtime.device())
    if _runtime.device() == "cuda":
        t.add_row("gpu", torch.cuda.get_device_name())
    t.add_row("mode", "native (compiled Triton kernels)" if not _runtime.INTERPRET
              else "interpreter (TRITON_INTERPRET=1, kernels run on the CPU)")
    t.add_row("fp32 matmul precision", _runtime.get_float32_matmul_precision())
    Console().print(t)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinydl", description="Triton-accelerated deep learning microframework")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, device and kernel mode").set_defaults(func=_info)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on bad usage; return it for main()'s callers
        return int(e.code or 0)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
