"""Profile training steps of the same model in tinydl and in PyTorch, side by side.

    python tools/profile.py                         # MLP and LeNet-5, batch 128, on a GPU
    python tools/profile.py --model lenet5 --cuda-graph --steps 20
    python tools/profile.py --smoke                 # tiny batch, 1 step: what CI runs on a CPU

For each model (``tinydl.models.mlp()`` / ``lenet5()``; the PyTorch twin is the same
``nn.Sequential`` built from ``torch.nn`` with the same weights) a training step is
``zero_grad -> forward -> cross_entropy -> backward -> SGD step``. Under ``torch.profiler`` it
reports, per implementation: kernels launched per step, kernel time per step grouped by op
(GEMM, conv, pool, loss, optimizer, elementwise, memory...), step time and peak memory, and
exports a Chrome trace per implementation (open in chrome://tracing or https://ui.perfetto.dev).
It also times the end-to-end step (``--timing-steps`` steps, synchronised at the end) of PyTorch
eager, ``torch.compile(model)``, ``torch.compile(model, mode="reduce-overhead")`` (CUDA graphs),
tinydl, and with ``--cuda-graph`` tinydl captured whole by ``tinydl.cuda_graph.CudaGraphStep``.

torch.compile compiles the model's forward (and through AOTAutograd its backward); the loss and
the optimizer (foreach SGD) run eagerly, as in a typical training loop.

On a CPU the kernels run in Triton's interpreter: the profile then counts tinydl kernel launches
(each interpreted launch is wrapped in a ``record_function``) and PyTorch's top-level ATen ops,
and the timings are a smoke test only (no speed claims).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import platform
import re
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: tools/profile.py must not shadow the stdlib `profile`
    _ROOT = Path(__file__).resolve().parent.parent
    sys.path[:] = [str(_ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != _ROOT / "tools"]

import torch  # noqa: E402
from torch.autograd import DeviceType  # noqa: E402
from torch.profiler import ProfilerActivity, record_function  # noqa: E402
from torch.profiler import profile as torch_profile  # noqa: E402

import tinydl as td  # noqa: E402

# the interpreter evaluates both sides of tl.where with numpy: overflow warnings in the unused branch
warnings.filterwarnings("ignore", category=RuntimeWarning, module="triton.runtime.interpreter")

from tinydl import _runtime, models, optim  # noqa: E402
from tinydl import functional as F  # noqa: E402

CPU_NOTE = ("INTERPRETER SMOKE TEST: no GPU, so tinydl's kernels ran in Triton's interpreter on the CPU and "
            "PyTorch ran its CPU kernels. Counts show the structure of a step; times say nothing about GPU speed.")
IMPLS = ("tinydl", "tinydl+graph", "torch")
E2E = ("torch eager", "torch.compile", "torch.compile reduce-overhead", "tinydl", "tinydl+graph")

#: op group per kernel name, first match wins (cuDNN's "implicit_gemm" is a conv, hence conv first)
GROUPS = [
    ("conv", r"conv|fprop|dgrad|wgrad|winograd|implicit|cudnn|im2col|col2im"),
    ("gemm/linear", r"linear|gemm|matmul|\bmm\b|addmm|aten::mm|bmm|cutlass|xmma|wgmma|cublas|nvjet|sm\d\d_|ampere_"),
    ("pool", r"pool"),
    ("softmax/loss", r"softmax|cross_entropy|nll|loss|logsumexp"),
    ("optimizer", r"sgd|adam|multi_tensor|foreach|_fused_"),
    ("activation/elementwise", r"relu|gelu|tanh|sigmoid|silu|elu|threshold|activation|elementwise|vectorized|"
                               r"add|mul|sub|div|neg|where|unrolled"),
    ("reduction", r"reduce|sum|mean"),
    ("memory", r"fill|copy|memset|memcpy|zero|clone|cat|index"),
]
#: ATen ops that launch no kernel (views, allocation): not counted as kernels in CPU mode
_NO_KERNEL = re.compile(r"^aten::(empty|empty_like|empty_strided|view|reshape|_reshape_alias|as_strided|detach|"
                        r"detach_|t|transpose|permute|expand|unsqueeze|squeeze|flatten|lift_fresh|alias|"
                        r"resolve_conj|resolve_neg|size|stride|contiguous|numpy_T|_unsafe_view|select|slice|"
                        r"result_type|to|_to_copy|item|_local_scalar_dense|is_nonzero|set_|requires_grad_)$")


def op_group(name: str) -> str:
    low = name.lower()
    for group, pat in GROUPS:
        if re.search(pat, low):
            return group
    return "other"


# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------

_TORCH_ACT = {"ReLU": "ReLU", "Tanh": "Tanh", "Sigmoid": "Sigmoid", "SiLU": "SiLU", "GELU": "GELU", "ELU": "ELU",
              "LeakyReLU": "LeakyReLU"}
_ACT_NAME_TO_TORCH = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid", "silu": "SiLU", "gelu": "GELU",
                      "elu": "ELU", "leaky_relu": "LeakyReLU"}


def build_models(name: str, device: str) -> tuple[Any, torch.nn.Module]:
    """(tinydl model, torch.nn twin with the same weights) for "mlp" or "lenet5"."""
    td.manual_seed(0)
    model = getattr(models, name)()
    return model, to_torch(model).to(device)


def to_torch(model) -> torch.nn.Sequential:
    """The torch.nn twin of a tinydl nn.Sequential, weights copied (fused activations unfused)."""
    tnn = torch.nn
    layers: list[torch.nn.Module] = []
    for m in model:
        cls = type(m).__name__
        if cls == "Linear":
            t = tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
        elif cls == "Conv2d":
            t = tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                           bias=m.bias is not None)
        elif cls == "MaxPool2d":
            t = tnn.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation, ceil_mode=m.ceil_mode)
        elif cls == "Flatten":
            t = tnn.Flatten(m.start_dim, m.end_dim)
        elif cls == "Dropout":
            t = tnn.Dropout(m.p)
        elif cls in _TORCH_ACT:
            t = getattr(tnn, _TORCH_ACT[cls])()
        else:
            raise TypeError(f"no torch.nn twin for tinydl module {cls}")
        with torch.no_grad():
            for pname in ("weight", "bias"):
                p = getattr(m, pname, None) if cls in ("Linear", "Conv2d") else None
                if p is not None:
                    getattr(t, pname).copy_(p.data)
        layers.append(t)
        act = getattr(m, "activation", "none") if cls in ("Linear", "Conv2d") else "none"
        if act != "none":
            layers.append(getattr(tnn, _ACT_NAME_TO_TORCH[act])())
    return tnn.Sequential(*layers)


# ------------------------------------------------------------------------------------------------
# Steps
# ------------------------------------------------------------------------------------------------


def make_tinydl_step(model, lr: float) -> Callable:
    opt = optim.SGD(model.parameters(), lr=lr)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def make_torch_step(model: torch.nn.Module, lr: float, mark_step: bool = False) -> Callable:
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def step(x, y):
        if mark_step:  # reduce-overhead's CUDA graph trees need a step boundary per iteration
            torch.compiler.cudagraph_mark_step_begin()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


@contextlib.contextmanager
def interpreter_launch_ranges():
    """In interpreter mode, wrap every Triton launch in a profiler range named after the kernel."""
    if not _runtime.INTERPRET:
        yield
        return
    from triton.runtime.interpreter import InterpretedFunction

    orig = InterpretedFunction.run

    def run(self, *args, **kwargs):
        with record_function(f"triton::{self.fn.__name__}"):
            return orig(self, *args, **kwargs)

    InterpretedFunction.run = run
    try:
        yield
    finally:
        InterpretedFunction.run = orig


def _sync(gpu: bool) -> None:
    if gpu:
        torch.cuda.synchronize()


def _kernel_events(prof, gpu: bool) -> list[tuple[str, float]]:
    """(name, microseconds) of every kernel the profiled steps launched."""
    out = []
    for e in prof.events():
        if gpu:
            if e.device_type == DeviceType.CUDA:
                out.append((e.name, e.time_range.elapsed_us()))
            continue
        if e.name.startswith("triton::"):
            out.append((e.name[len("triton::"):], e.cpu_time_total))
        elif e.name.startswith("aten::") and not _NO_KERNEL.match(e.name):
            parent = e.cpu_parent
            while parent is not None and not (parent.name.startswith(("aten::", "triton::"))):
                parent = parent.cpu_parent
            if parent is None:  # top-level ATen op: what would be a kernel launch on a GPU
                out.append((e.name, e.cpu_time_total))
    return out


def profile_impl(step: Callable, inputs, steps: int, gpu: bool, trace: Path) -> dict:
    """Profile ``steps`` calls of ``step(*inputs)`` (already warmed up)."""
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    _sync(gpu)
    with interpreter_launch_ranges(), torch_profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            with record_function("train_step"):
                step(*inputs)
        _sync(gpu)
        wall = (time.perf_counter() - t0) * 1e3 / steps
    prof.export_chrome_trace(str(trace))
    kernels = _kernel_events(prof, gpu)
    groups: dict[str, dict[str, float]] = {}
    for name, us in kernels:
        g = groups.setdefault(op_group(name), {"count": 0, "ms": 0.0, "names": {}})
        g["count"] += 1
        g["ms"] += us / 1e3
        g["names"][name] = g["names"].get(name, 0) + 1
    for g in groups.values():
        g["count"] /= steps
        g["ms"] /= steps
        g["names"] = dict(sorted(g["names"].items(), key=lambda kv: -kv[1])[:8])
    return dict(kernels_per_step=len(kernels) / steps, kernel_ms_per_step=sum(us for _, us in kernels) / 1e3 / steps,
                step_ms_profiled=wall, peak_mem_mb=(torch.cuda.max_memory_allocated() / 2**20) if gpu else None,
                groups=groups, trace=str(trace))


def time_steps(step: Callable, inputs, steps: int, gpu: bool) -> float:
    """Mean ms per step over ``steps`` back-to-back steps (synchronised once at the end)."""
    _sync(gpu)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(*inputs)
    _sync(gpu)
    return (time.perf_counter() - t0) * 1e3 / steps


def _median_time(step, inputs, steps, gpu, repeats=3) -> float:
    return statistics.median(time_steps(step, inputs, steps, gpu) for _ in range(repeats if gpu else 1))


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def run_model(name: str, args, gpu: bool, device: str, out: Path, console) -> dict:
    model, tmodel = build_models(name, device)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(args.batch, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(device)
    X, Y = td.Tensor(x), td.Tensor(y)
    res: dict[str, Any] = {"model": name, "batch": args.batch, "steps": args.steps, "profile": {}, "e2e_ms": {},
                           "notes": []}
    warm = args.warmup

    # --- profiles ----------------------------------------------------------------------------------
    td_step = make_tinydl_step(model, args.lr)
    for _ in range(warm):
        td_step(X, Y)
    res["profile"]["tinydl"] = profile_impl(td_step, (X, Y), args.steps, gpu, out / f"{name}-tinydl.trace.json")
    graph_step = None
    if args.cuda_graph:
        try:
            from tinydl.cuda_graph import CudaGraphStep

            # the eager warm-up above already compiled and allocated everything: capture on call 1
            graph_step = CudaGraphStep(td_step, warmup=0)
            graph_step(X, Y)
            res["profile"]["tinydl+graph"] = profile_impl(graph_step, (X, Y), args.steps, gpu,
                                                          out / f"{name}-tinydl+graph.trace.json")
        except RuntimeError as e:
            res["notes"].append(f"tinydl+graph skipped: {e}")
            console.print(f"{name}: tinydl+graph skipped: {e}", style="yellow", markup=False)
    t_step = make_torch_step(tmodel, args.lr)
    for _ in range(warm):
        t_step(x, y)
    res["profile"]["torch"] = profile_impl(t_step, (x, y), args.steps, gpu, out / f"{name}-torch.trace.json")

    # --- end-to-end step times ---------------------------------------------------------------------
    n = args.timing_steps
    res["e2e_ms"]["torch eager"] = _median_time(t_step, (x, y), n, gpu)
    res["e2e_ms"]["tinydl"] = _median_time(td_step, (X, Y), n, gpu)
    if graph_step is not None:
        res["e2e_ms"]["tinydl+graph"] = _median_time(graph_step, (X, Y), n, gpu)
    if args.compile:
        variants = [("torch.compile", {})] + ([("torch.compile reduce-overhead", {"mode": "reduce-overhead"})]
                                              if gpu else [])
        for label, kw in variants:
            try:
                torch._dynamo.reset()
                _, twin = build_models(name, device)
                cstep = make_torch_step(torch.compile(twin, **kw), args.lr, mark_step=bool(kw))
                for _ in range(max(warm, 3)):  # compile, then (reduce-overhead) record the graphs
                    cstep(x, y)
                res["e2e_ms"][label] = _median_time(cstep, (x, y), n, gpu)
            except Exception as e:  # an inductor failure is a result, not the end of the profile
                res["notes"].append(f"{label} failed: {type(e).__name__}: {str(e)[:200]}")
        if not gpu:
            res["notes"].append("torch.compile reduce-overhead needs CUDA graphs: skipped on CPU")
    else:
        res["notes"].append("torch.compile skipped" + (" (CPU smoke test)" if not gpu else " (--no-compile)"))
    return res


def print_model(res: dict, gpu: bool, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    impls = [i for i in IMPLS if i in res["profile"]]
    unit = "kernels" if gpu else "kernels (CPU: interpreted launches / top-level ATen ops)"
    t = Table(title=f"{res['model']}  batch {res['batch']}: per training step"
                    + ("" if gpu else "  [bold red](smoke test: not performance)[/]"))
    t.add_column("metric")
    for i in impls:
        t.add_column(i, justify="right")
    P = res["profile"]

    def fmt(v, spec):
        return "—" if v is None else format(v, spec)

    t.add_row(unit, *(fmt(P[i]["kernels_per_step"], ".1f") for i in impls))
    t.add_row("kernel time ms", *(fmt(P[i]["kernel_ms_per_step"], ".3f") for i in impls))
    t.add_row("step ms (profiled)", *(fmt(P[i]["step_ms_profiled"], ".3f") for i in impls))
    t.add_row("peak memory MB", *(fmt(P[i]["peak_mem_mb"], ".1f") for i in impls))
    console.print(t)

    g = Table(title=f"{res['model']}: kernels per step by op (count / ms)")
    g.add_column("op group")
    for i in impls:
        g.add_column(i, justify="right")
    names = sorted({k for i in impls for k in P[i]["groups"]})
    for k in names:
        g.add_row(k, *(f"{P[i]['groups'][k]['count']:.1f} / {P[i]['groups'][k]['ms']:.3f}"
                       if k in P[i]["groups"] else "—" for i in impls))
    console.print(g)

    e = Table(title=f"{res['model']}: end-to-end step time (ms, lower is better)")
    e.add_column("implementation")
    e.add_column("ms/step", justify="right")
    e.add_column("vs torch eager", justify="right")
    base = res["e2e_ms"].get("torch eager")
    for k in E2E:
        if k in res["e2e_ms"]:
            v = res["e2e_ms"][k]
            e.add_row(k, f"{v:.3f}", f"{base / v:.2f}x" if gpu and base and v else "—")
    console.print(e)
    for note in res["notes"]:
        console.print(f"[dim]note: {escape(note)}[/]")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", choices=("mlp", "lenet5"), help="default: both")
    ap.add_argument("--batch", type=int, help="batch size (default 128; 8 in --smoke)")
    ap.add_argument("--steps", type=int, help="profiled steps (default 10; 1 in --smoke)")
    ap.add_argument("--warmup", type=int, help="steps before profiling/timing (default 5; 1 in --smoke)")
    ap.add_argument("--timing-steps", type=int, help="steps per end-to-end timing (default 100; 1 in --smoke)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--smoke", action="store_true", help="tiny batch, one step (the default without a GPU)")
    ap.add_argument("--cuda-graph", action="store_true", help="also profile tinydl captured as one CUDA graph")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile end-to-end timings")
    ap.add_argument("--compile-on-cpu", action="store_true", help="run torch.compile in the CPU smoke test too")
    ap.add_argument("--out", type=Path, help="output folder (default benchmarks/results/<date>-<device>/profile)")
    args = ap.parse_args(argv)

    from rich.console import Console

    console = Console(width=160)
    gpu = _runtime.DEVICE == "cuda" and not _runtime.INTERPRET
    device = "cuda" if gpu else "cpu"
    smoke = args.smoke or not gpu
    args.batch = args.batch or (8 if smoke else 128)
    args.steps = args.steps or (1 if smoke else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if smoke else 5)
    args.timing_steps = args.timing_steps or (1 if smoke else 100)
    args.compile = not args.no_compile and (gpu or args.compile_on_cpu)
    if not gpu:
        console.print(f"[bold yellow]{CPU_NOTE}[/]")
    if gpu:
        torch.backends.cudnn.benchmark = True

    dev_name = torch.cuda.get_device_name() if gpu else "cpu-smoke"
    out = args.out or (Path("benchmarks/results") /
                       f"{_dt.date.today().isoformat()}-{re.sub(r'[^A-Za-z0-9.]+', '-', dev_name).lower()}" / "profile")
    out.mkdir(parents=True, exist_ok=True)
    import triton

    meta = dict(device=dev_name, gpu=gpu, mode=_runtime.mode(), torch=torch.__version__, triton=triton.__version__,
                tinydl=td.__version__, cuda=torch.version.cuda or "", python=platform.python_version(),
                date=_dt.datetime.now().isoformat(timespec="seconds"), note="" if gpu else CPU_NOTE)
    results = []
    for name in args.model or ["mlp", "lenet5"]:
        try:
            res = run_model(name, args, gpu, device, out, console)
        except Exception as e:  # one model failing must not lose the other's profile; the exit code says so
            msg = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            console.print(f"failed {name}: {msg}", style="red", markup=False)
            results.append({"model": name, "error": msg})
            continue
        print_model(res, gpu, console)
        results.append(res)
    (out / "profile.json").write_text(json.dumps({"meta": meta, "models": results}, indent=1, default=str))
    console.print(f"wrote {out / 'profile.json'} and the Chrome traces in {out}")
    if not gpu:
        console.print(f"[bold yellow]{CPU_NOTE}[/]")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
