"""Benchmark every tinydl kernel family against PyTorch eager and torch.compile, side by side.

    python tools/bench.py                  # the full sweep (GPU)
    python tools/bench.py --quick          # a small subset; on a CPU: interpreter smoke test only
    python tools/bench.py --family linear --dtype bf16 --out /tmp/bench

For each case of the shared sweep (``tools/_shapes.py``), precision (IEEE ``fp32``, ``tf32``,
``bf16``) and mode (``fwd``, ``bwd``, ``fwd+bwd``; ``step`` for optimizers) it first checks that
tinydl's outputs and gradients match PyTorch's, then times three providers:

- ``torch``: PyTorch eager (cuBLAS/cuDNN, ``torch.backends.cudnn.benchmark = True``, convolutions
  in channels-last; linear+activation is ``F.linear`` followed by the activation),
- ``compile``: ``torch.compile`` of the same PyTorch function (``torch.compile(opt.step)`` for
  optimizers),
- ``tinydl``: the tinydl op (``tinydl.functional`` / ``tinydl.optim``).

GPU timings are ``triton.testing.do_bench`` quantiles (p20/p50/p80, L2 flushed between runs).
``fwd`` runs with autograd recording (a training forward); ``bwd`` replays the backward of one
recorded forward (``retain_graph=True``), or is reported as ``fwd+bwd - fwd`` where a provider
cannot do that (marked in the note column).

Outputs (``--out``, default ``benchmarks/results/<date>-<device>/``): ``bench.csv`` and
``bench.json`` (one row per kernel/provider/mode/shape/dtype), one PNG per family, and the
printed rich table. On a machine without a GPU the kernels run in Triton's interpreter: that is a
smoke test of the tool and the kernels' correctness, timed with ``time.perf_counter``, and makes
no speed claims.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import platform
import re
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make `tools` importable; tools/ must not shadow stdlib modules
    _ROOT = Path(__file__).resolve().parent.parent
    sys.path[:] = [str(_ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != _ROOT / "tools"]

import torch  # noqa: E402

import tinydl as td  # noqa: E402

# the interpreter evaluates both sides of tl.where with numpy: overflow warnings in the unused branch
warnings.filterwarnings("ignore", category=RuntimeWarning, module="triton.runtime.interpreter")

from tinydl import _runtime, optim  # noqa: E402
from tinydl import functional as F  # noqa: E402
from tools import _shapes  # noqa: E402

CPU_NOTE = ("INTERPRETER SMOKE TEST: no GPU, so tinydl's kernels ran in Triton's interpreter on the CPU. "
            "These timings (time.perf_counter) check that the tool and the kernels work; they say nothing "
            "about speed.")
PROVIDERS = ("torch", "compile", "tinydl")
CSV_COLUMNS = ["kernel", "case", "provider", "mode", "shape", "dtype", "p20_ms", "p50_ms", "p80_ms", "tflops",
               "gbps", "pct_peak", "roofline_ms", "bound", "correct", "max_rel_err", "note", "error", "timer",
               "device", "peaks_of", "torch", "triton", "tinydl", "cuda", "python", "date"]
#: max |tinydl - torch| / max |torch| accepted per precision before timing
TOLERANCE = {"fp32": 1e-4, "tf32": 2e-2, "bf16": 3e-2}
# ------------------------------------------------------------------------------------------------
# Problems: one per family, each building inputs and the torch / tinydl functions
# ------------------------------------------------------------------------------------------------

_TORCH_DTYPE = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}


def _torch_act(name: str) -> Callable:
    tf = torch.nn.functional
    return {"none": lambda z: z, "relu": tf.relu, "gelu": tf.gelu, "silu": tf.silu, "tanh": torch.tanh,
            "sigmoid": torch.sigmoid, "elu": tf.elu, "leaky_relu": tf.leaky_relu}[name]


@dataclass
class Problem:
    """Leaves (torch tensors requiring grad) shared by value between the two implementations."""

    torch_leaves: list[torch.Tensor]
    td_leaves: list[Any]
    torch_fn: Callable  # (*torch_leaves) -> torch.Tensor
    td_fn: Callable  # (*td_leaves) -> td.Tensor
    dy: torch.Tensor | None  # seed gradient (None: scalar loss)
    note: str = ""
    td_dy: torch.Tensor | None = None  # tinydl's seed gradient when its layout differs (default: dy)

    @property
    def dy_td(self) -> torch.Tensor | None:
        return self.dy if self.td_dy is None else self.td_dy


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().requires_grad_(True)


def _td_leaf(t: torch.Tensor) -> td.Tensor:
    return td.Tensor(t.detach().contiguous().clone(), requires_grad=True)


def make_problem(case: _shapes.Case, dtype: str, device: str) -> Problem:
    p = case.params
    dt = _TORCH_DTYPE[dtype]
    g = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dt)

    f = case.family
    if f == "linear":
        M, N, K, act = p["M"], p["N"], p["K"], p["act"]
        x, w, b = rnd(M, K), rnd(N, K, scale=K ** -0.5), rnd(N, scale=0.1)
        tact = _torch_act(act)
        return Problem([_leaf(x), _leaf(w), _leaf(b)], [_td_leaf(x), _td_leaf(w), _td_leaf(b)],
                       lambda x, w, b: tact(torch.nn.functional.linear(x, w, b)),
                       lambda x, w, b: F.linear(x, w, b, activation=act), rnd(M, N),
                       note=f"act={act}; torch: F.linear + separate {act}")
    if f == "cross_entropy":
        N, C = p["N"], p["C"]
        logits = rnd(N, C, scale=3.0)
        target = torch.randint(0, C, (N,), generator=g).to(device)
        tdt = td.Tensor(target)
        return Problem([_leaf(logits)], [_td_leaf(logits)],
                       lambda z: torch.nn.functional.cross_entropy(z, target),
                       lambda z: F.cross_entropy(z, tdt), None, note="mean reduction")
    if f == "softmax":
        N, C = p["N"], p["C"]
        x = rnd(N, C, scale=2.0)
        return Problem([_leaf(x)], [_td_leaf(x)], lambda x: torch.softmax(x, dim=-1),
                       lambda x: F.softmax(x, dim=-1), rnd(N, C))
    if f == "conv2d":
        N, C, H, W, K, R, S, st, pad = (p[k] for k in ("N", "C", "H", "W", "K", "R", "S", "stride", "pad"))
        x, w, b = rnd(N, C, H, W), rnd(K, C, R, S, scale=(C * R * S) ** -0.5), rnd(K, scale=0.1)
        P, Q = (H + 2 * pad - R) // st + 1, (W + 2 * pad - S) // st + 1
        dy = rnd(N, K, P, Q)
        cl = device == "cuda"  # cuDNN's fastest layout on a GPU
        fmt = torch.channels_last if cl else torch.contiguous_format
        tl_x, tl_w = _leaf(x.contiguous(memory_format=fmt)), _leaf(w.contiguous(memory_format=fmt))
        return Problem([tl_x, tl_w, _leaf(b)], [_td_leaf(x), _td_leaf(w), _td_leaf(b)],
                       lambda x, w, b: torch.nn.functional.conv2d(x, w, b, stride=st, padding=pad),
                       lambda x, w, b: F.conv2d(x, w, b, stride=st, padding=pad),
                       dy.contiguous(memory_format=fmt) if cl else dy,
                       note="torch: channels-last" if cl else "",
                       td_dy=dy)  # each side gets dY in its own layout: no conversion copy is timed
    if f == "max_pool2d":
        N, C, H, W, k, s, pad = (p[kk] for kk in ("N", "C", "H", "W", "k", "s", "p"))
        x = rnd(N, C, H, W)
        P, Q = (H + 2 * pad - k) // s + 1, (W + 2 * pad - k) // s + 1
        return Problem([_leaf(x)], [_td_leaf(x)],
                       lambda x: torch.nn.functional.max_pool2d(x, k, s, pad),
                       lambda x: F.max_pool2d(x, k, s, pad), rnd(N, C, P, Q))
    raise KeyError(f)


def _max_rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    got, ref = got.detach().double(), ref.detach().double()
    if got.shape != ref.shape:
        raise ValueError(f"shape {tuple(got.shape)} != reference shape {tuple(ref.shape)}")
    scale = ref.abs().max().item() if ref.numel() else 0.0
    err = (got - ref).abs().max().item() if ref.numel() else 0.0
    if math.isnan(err):
        return math.inf
    return err / max(scale, 1e-30)


def check_problem(prob: Problem) -> float:
    """Largest relative error of tinydl's output and gradients against PyTorch eager."""
    out_t = prob.torch_fn(*prob.torch_leaves)
    out_d = prob.td_fn(*prob.td_leaves)
    errs = [_max_rel_err(out_d.data, out_t)]
    out_t.backward(prob.dy)
    out_d.backward(prob.dy_td)
    for lt, ld in zip(prob.torch_leaves, prob.td_leaves):
        if ld.grad is None:
            raise RuntimeError("tinydl produced no gradient for an input")
        errs.append(_max_rel_err(ld.grad, lt.grad))
        lt.grad, ld.grad = None, None
    return max(errs)


# ------------------------------------------------------------------------------------------------
# Optimizers
# ------------------------------------------------------------------------------------------------


def make_optimizers(case: _shapes.Case, device: str):
    """(torch param, torch optimizer, tinydl param, tinydl optimizer) with equal state and grads."""
    n = case.params["n"]
    g = torch.Generator(device="cpu").manual_seed(0)
    p0 = torch.randn(n, generator=g).to(device)
    grad = torch.randn(n, generator=g).to(device)
    tp = p0.clone().requires_grad_(True)
    tp.grad = grad.clone()
    dp = td.Tensor(p0.clone(), requires_grad=True)
    dp.grad = grad.clone()
    if case.family == "sgd":
        topt, dopt = torch.optim.SGD([tp], lr=1e-3), optim.SGD([dp], lr=1e-3)
    else:
        topt, dopt = torch.optim.Adam([tp], lr=1e-3), optim.Adam([dp], lr=1e-3)
    return tp, topt, dp, dopt


def check_optimizer(case: _shapes.Case, device: str) -> float:
    tp, topt, dp, dopt = make_optimizers(case, device)
    errs = []
    for _ in range(2):
        with torch.no_grad():
            topt.step()
        dopt.step()
        errs.append(_max_rel_err(dp.data, tp.detach()))
    return max(errs)


# ------------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------------


class Timer:
    """do_bench quantiles on a GPU, perf_counter quantiles in the interpreter smoke test."""

    def __init__(self, gpu: bool, warmup_ms: int = 25, rep_ms: int = 100, cpu_reps: int = 2):
        self.gpu, self.warmup_ms, self.rep_ms, self.cpu_reps = gpu, warmup_ms, rep_ms, cpu_reps
        self.name = "triton.testing.do_bench" if gpu else "time.perf_counter (interpreter smoke test)"

    def __call__(self, fn: Callable[[], Any], grad_to_none=None) -> tuple[float, float, float]:
        if self.gpu:
            import triton.testing

            q = triton.testing.do_bench(fn, warmup=self.warmup_ms, rep=self.rep_ms, grad_to_none=grad_to_none,
                                        quantiles=[0.2, 0.5, 0.8])
            return float(q[0]), float(q[1]), float(q[2])
        times = []
        for i in range(self.cpu_reps + 1):  # the first run warms up (Triton's AST rewrite, caches)
            for x in grad_to_none or ():
                x.grad = None
            t0 = time.perf_counter()
            fn()
            if i:
                times.append(1e3 * (time.perf_counter() - t0))
        ts = sorted(times)

        def q(f):
            return ts[min(len(ts) - 1, int(round(f * (len(ts) - 1))))]

        return q(0.2), q(0.5), q(0.8)


def _bench_modes(timer: Timer, fn: Callable, leaves: list, dy, modes) -> dict[str, tuple]:
    """Time fwd / bwd / fwd+bwd of ``fn(*leaves)`` (torch or tinydl: same backward protocol)."""
    res: dict[str, tuple] = {}
    if "fwd" in modes or "bwd" in modes:
        res["fwd"] = timer(lambda: fn(*leaves))
    if "fwd+bwd" in modes or "bwd" in modes:
        res["fwd+bwd"] = timer(lambda: fn(*leaves).backward(dy), grad_to_none=leaves)
    if "bwd" in modes:
        try:
            out = fn(*leaves)
            res["bwd"] = timer(lambda: out.backward(dy, retain_graph=True), grad_to_none=leaves)
        except Exception:  # e.g. a compiled graph that does not support retain_graph
            f, fb = res["fwd"], res["fwd+bwd"]
            res["bwd"] = (max(fb[0] - f[0], 0.0), max(fb[1] - f[1], 0.0), max(fb[2] - f[2], 0.0), "derived")
        for x in leaves:
            x.grad = None
    return {m: v for m, v in res.items() if m in modes}


class _Precision:
    """Set torch's and tinydl's fp32 matmul precision for one benchmark precision, then restore."""

    def __init__(self, dtype: str):
        self.tf32 = dtype == "tf32"

    def __enter__(self):
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                      td.get_float32_matmul_precision())
        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        torch.backends.cudnn.allow_tf32 = self.tf32
        td.set_float32_matmul_precision("high" if self.tf32 else "highest")

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved[:2]
        td.set_float32_matmul_precision(self.saved[2])
        return False


def run_case(case: _shapes.Case, dtype: str, modes, providers, timer: Timer, device: str,
             debug: bool = False) -> list[dict]:
    """Rows (one per provider and mode) for one case at one precision."""
    rows = []

    def row(provider, mode, q=None, correct=None, err=None, note="", error=""):
        r = dict(kernel=case.family, case=case.name, provider=provider, mode=mode, shape=case.shape, dtype=dtype,
                 correct=correct, max_rel_err=err, note=note, error=error)
        if q is not None:
            r.update(p20_ms=q[0], p50_ms=q[1], p80_ms=q[2])
            if len(q) > 3:
                r["note"] = (note + "; " if note else "") + "bwd = fwd+bwd - fwd"
        rows.append(r)

    case_modes = [m for m in case.modes if m in modes or case.family in ("sgd", "adam")]
    with _Precision(dtype):
        try:
            if case.family in ("sgd", "adam"):
                err = check_optimizer(case, device)
                ok = err <= TOLERANCE[dtype]
                tp, topt, dp, dopt = make_optimizers(case, device)
                fns = {"torch": lambda: topt.step(), "tinydl": dopt.step}
                if "compile" in providers:
                    torch._dynamo.reset()
                    fns["compile"] = torch.compile(topt.step)
                for prov in providers:
                    if prov == "tinydl" and not ok:
                        row(prov, "step", correct=False, err=err, error=f"mismatch vs torch: max rel err {err:.3g}")
                        continue
                    with torch.no_grad():
                        q = timer(fns[prov])
                    row(prov, "step", q, correct=ok if prov == "tinydl" else None,
                        err=err if prov == "tinydl" else None, note=("torch: default (foreach)" if prov == "torch"
                                                                     else ""))
                return rows
            prob = make_problem(case, dtype, device)
            err = check_problem(prob)
            ok = err <= TOLERANCE[dtype]
            for prov in providers:
                if prov == "tinydl":
                    if not ok:
                        for m in case_modes:
                            row(prov, m, correct=False, err=err, error=f"mismatch vs torch: max rel err {err:.3g}")
                        continue
                    res = _bench_modes(timer, prob.td_fn, prob.td_leaves, prob.dy_td, case_modes)
                else:
                    fn = prob.torch_fn
                    if prov == "compile":
                        torch._dynamo.reset()  # recompile under this precision's flags
                        fn = torch.compile(prob.torch_fn)
                    res = _bench_modes(timer, fn, prob.torch_leaves, prob.dy, case_modes)
                for m in case_modes:
                    row(prov, m, res[m], correct=ok if prov == "tinydl" else None,
                        err=err if prov == "tinydl" else None, note=prob.note)
        except Exception as e:  # one broken case is a row to report, not the end of the run
            msg = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            done = {(r["provider"], r["mode"]) for r in rows}
            for prov in providers:
                for m in case_modes:
                    if (prov, m) not in done:
                        row(prov, m, error=msg)
            if debug:
                traceback.print_exc()
    return rows


# ------------------------------------------------------------------------------------------------
# Reporting
# ------------------------------------------------------------------------------------------------


def environment(gpu: bool) -> dict:
    import triton

    name = torch.cuda.get_device_name() if gpu else f"cpu ({platform.processor() or platform.machine()})"
    peaks_of, _ = _shapes.peaks_for(name if gpu else None)
    return dict(device=name, peaks_of=peaks_of if gpu else "", torch=torch.__version__, triton=triton.__version__,
                tinydl=td.__version__, cuda=torch.version.cuda or "", python=platform.python_version(),
                date=_dt.datetime.now().isoformat(timespec="seconds"))


def add_throughput(rows: list[dict], gpu: bool, env: dict) -> None:
    """FLOP/s, GB/s against the case's FLOP/byte model, and % of the device's peak (GPU only)."""
    peaks_of, peaks = _shapes.peaks_for(env["device"])
    cases = {(c.family, c.name): c for c in _shapes.CASES}
    for r in rows:
        r.update({k: env[k] for k in ("device", "torch", "triton", "tinydl", "cuda", "python", "date")})
        r["peaks_of"] = peaks_of if gpu else ""
        case = cases[(r["kernel"], r["case"])]
        r["roofline_ms"], r["bound"] = _shapes.roofline_ms(case, r["mode"], r["dtype"], peaks)
        r.setdefault("tflops", None)
        r.setdefault("gbps", None)
        r.setdefault("pct_peak", None)
        if not gpu or r.get("p50_ms") in (None, 0):
            continue
        s = r["p50_ms"] * 1e-3
        fl = _shapes.flops(case, r["mode"])
        r["tflops"] = fl / s / 1e12 if fl else None
        r["gbps"] = _shapes.min_bytes(case, r["mode"], r["dtype"]) / s / 1e9
        r["pct_peak"] = 100 * max((r["tflops"] or 0) / peaks[r["dtype"]], r["gbps"] / (1e3 * peaks["tbps"]))


def _fmt(v, spec=".3f"):
    return "—" if v is None else format(v, spec)


def print_table(rows: list[dict], gpu: bool, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    title = "tinydl vs PyTorch" + ("" if gpu else "  [bold red](interpreter smoke test: not performance)[/]")
    t = Table(title=title, show_lines=False)
    for col in ("op", "case", "shape", "dtype", "mode", "torch ms", "compile ms", "tinydl ms", "vs torch",
                "vs compile", "tinydl TFLOP/s | GB/s", "% peak", "ok"):
        t.add_column(col, justify="right" if "ms" in col or col.startswith(("vs", "%", "tinydl")) else "left")
    groups: dict[tuple, dict] = {}
    for r in rows:
        groups.setdefault((r["kernel"], r["case"], r["shape"], r["dtype"], r["mode"]), {})[r["provider"]] = r
    for (kernel, case, shape, dtype, mode), by in groups.items():
        ms = {p: by.get(p, {}).get("p50_ms") for p in PROVIDERS}
        d = by.get("tinydl", {})
        if gpu and ms["tinydl"]:
            vs_t = _fmt(ms["torch"] / ms["tinydl"], ".2f") + "x" if ms["torch"] else "—"
            vs_c = _fmt(ms["compile"] / ms["tinydl"], ".2f") + "x" if ms["compile"] else "—"
            thr = (f"{d['tflops']:.1f} TFLOP/s" if d.get("tflops") else f"{d['gbps']:.0f} GB/s")
            pct = _fmt(d.get("pct_peak"), ".0f")
        else:
            vs_t = vs_c = thr = pct = "—"
        ok = {True: "[green]ok[/]", False: "[red]MISMATCH[/]", None: ""}[d.get("correct")]
        errs = [f"{p}: {by[p]['error']}" for p in PROVIDERS if by.get(p, {}).get("error")]
        if errs:
            ok = (ok + " " if ok else "") + "[red]" + escape("; ".join(errs)[:120]) + "[/]"
        t.add_row(kernel, case, shape, dtype, mode, *(_fmt(ms[p]) for p in PROVIDERS), vs_t, vs_c, thr, pct, ok)
    console.print(t)


def write_outputs(rows: list[dict], out: Path, gpu: bool, meta: dict, plots: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "bench.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})
    (out / "bench.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    return plot(rows, out, gpu) if plots else []


def plot(rows: list[dict], out: Path, gpu: bool) -> list[Path]:
    """One PNG per family: p50 ms of each provider per case and precision (fwd+bwd, or step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for fam in dict.fromkeys(r["kernel"] for r in rows):
        sel = [r for r in rows if r["kernel"] == fam and r["mode"] in ("fwd+bwd", "step") and r.get("p50_ms")]
        if not sel:
            continue
        labels = list(dict.fromkeys(f"{r['case']}\n{r['dtype']}" for r in sel))
        provs = [p for p in PROVIDERS if any(r["provider"] == p for r in sel)]
        width = 0.8 / len(provs)
        fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(labels) + 2), 4.2))
        for i, p in enumerate(provs):
            vals = {f"{r['case']}\n{r['dtype']}": r["p50_ms"] for r in sel if r["provider"] == p}
            xs = [j + (i - (len(provs) - 1) / 2) * width for j in range(len(labels))]
            ax.bar(xs, [vals.get(lab, 0) for lab in labels], width, label=p)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("median ms (lower is better)")
        mode = sel[0]["mode"]
        ax.set_title(f"{fam} {mode}" + ("" if gpu else "  [interpreter smoke test: NOT performance]"))
        ax.legend()
        fig.tight_layout()
        path = out / f"{fam}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", s).strip("-").lower()


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small subset (on a CPU: the tiny smoke-test shapes)")
    ap.add_argument("--family", action="append", choices=_shapes.FAMILIES, help="only these families")
    ap.add_argument("--filter", help="only cases whose name contains this")
    ap.add_argument("--dtype", action="append", choices=("fp32", "tf32", "bf16"), help="only these precisions")
    ap.add_argument("--mode", action="append", choices=("fwd", "bwd", "fwd+bwd"), help="only these modes")
    ap.add_argument("--provider", action="append", choices=PROVIDERS, help="only these providers")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--compile-on-cpu", action="store_true",
                    help="also run torch.compile in the CPU smoke test (slow: inductor builds C++)")
    ap.add_argument("--warmup", type=int, default=25, help="do_bench warm-up, ms")
    ap.add_argument("--rep", type=int, default=100, help="do_bench repetition time, ms")
    ap.add_argument("--out", type=Path, help="output folder (default benchmarks/results/<date>-<device>/)")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--debug", action="store_true", help="print tracebacks of failing cases")
    args = ap.parse_args(argv)

    from rich.console import Console

    console = Console(width=200)
    gpu = _runtime.DEVICE == "cuda" and not _runtime.INTERPRET
    device = "cuda" if gpu else "cpu"
    if not gpu:
        console.print(f"[bold yellow]{CPU_NOTE}[/]")
    else:
        torch.backends.cudnn.benchmark = True

    families = args.family or list(_shapes.FAMILIES)
    cases = _shapes.select(families, quick=args.quick, tiny=not gpu, name_filter=args.filter)

    providers = list(args.provider or PROVIDERS)
    if args.no_compile or (not gpu and not args.compile_on_cpu):
        if "compile" in providers:
            providers.remove("compile")
            if not gpu and not args.no_compile:
                console.print("[yellow]torch.compile skipped in the CPU smoke test (--compile-on-cpu to force)[/]")
    modes = args.mode or ["fwd", "bwd", "fwd+bwd"]
    timer = Timer(gpu, args.warmup, args.rep)
    env = environment(gpu)

    rows: list[dict] = []
    for case in cases:
        for dtype in case.dtypes:
            if args.dtype and dtype not in args.dtype:
                continue
            console.print(f"[dim]{case.family} {case.name} {dtype} ...[/]")
            rows.extend(run_case(case, dtype, modes, providers, timer, device, args.debug))
            if gpu:
                torch.cuda.empty_cache()
    for r in rows:
        r["timer"] = timer.name
    add_throughput(rows, gpu, env)

    out = args.out or Path("benchmarks/results") / (
        f"{_dt.date.today().isoformat()}-{_slug(env['device']) if gpu else 'cpu-smoke'}")
    meta = dict(env, gpu=gpu, timer=timer.name, note="" if gpu else CPU_NOTE,
                providers=providers, quick=args.quick, argv=list(argv if argv is not None else sys.argv[1:]))
    if rows:
        print_table(rows, gpu, console)
    pngs = write_outputs(rows, out, gpu, meta, plots=not args.no_plots)
    console.print(f"wrote {out / 'bench.csv'}, {out / 'bench.json'}" + "".join(f", {p}" for p in pngs))
    if not gpu:
        console.print(f"[bold yellow]{CPU_NOTE}[/]")
    bad = [r for r in rows if r.get("correct") is False]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
