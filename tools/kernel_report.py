"""GPU resource report for every tinydl kernel configuration, plus the analytic roofline: no GPU needed.

    python tools/kernel_report.py                          # sm_90 and sm_80, every configuration
    python tools/kernel_report.py --arch 90 --filter linear --out /tmp/report
    python tools/kernel_report.py --no-compile             # the roofline only
    python tools/kernel_report.py --traced-only --arch 90  # only what the benchmark shapes launch

Part 1 compiles tinydl's kernels for the GPU with ``triton.compile(..., target=GPUTarget("cuda",
arch, 32))`` through ``python -m tinydl.kernels._aot`` (a subprocess with the interpreter off) and
reports registers per thread, spills (local memory bytes per thread), shared memory against the
SM's limit, warps, stages and whether tensor-core instructions (``wgmma`` on sm_90, ``mma.sync``)
appear in the PTX. Two tables:

- every configuration a launcher can pick (each kernel module's ``AOT_SPECS``), compiled without
  alignment hints: how odd shapes compile, the pessimistic case;
- the launches of every benchmark shape, traced by running tinydl's ops on ``meta`` tensors and
  specialised as Triton's JIT does (16-byte alignment, ints equal to 1): what an H100 running
  ``tools/bench.py`` compiles. A spill here is a real cost and is shown in red.

Part 2 is the roofline of every benchmark shape in ``tools/_shapes.py`` (the sweep
``tools/bench.py`` times): FLOPs, minimum DRAM bytes, arithmetic intensity, and the lower-bound
time on the reference device (default H100 SXM: 66.9 TFLOP/s fp32, 494.7 tf32, 989.4 bf16 dense,
3.35 TB/s). A measured time divided into this bound is the fraction of peak reached.

Outputs (``--out``, default ``benchmarks/results/kernel-report/``): ``kernels.csv``,
``roofline.csv`` and ``kernel_report.json``; both tables are printed with rich.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tools` importable; tools/ must not shadow stdlib modules
    _ROOT = Path(__file__).resolve().parent.parent
    sys.path[:] = [str(_ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != _ROOT / "tools"]

from tools import _shapes  # noqa: E402

KERNEL_COLUMNS = ["module", "name", "arch", "ok", "num_warps", "num_stages", "registers", "local", "shared",
                  "shared_limit", "tensor_cores", "source", "error"]
ROOFLINE_COLUMNS = ["kernel", "case", "shape", "dtype", "mode", "gflop", "mbytes", "flop_per_byte", "bound",
                    "min_us", "peak_tflops", "peak_tbps", "device"]


#: the main job's training steps (tinydl train's models at tools/profile.py's batch), traced too
TRAIN_STEPS = [("lenet5", "adam"), ("mlp", "adam"), ("lenet5", "sgd")]


def bench_problems(families=None, quick: bool = False) -> list[dict]:
    """Every benchmark case (not the interpreter's tiny ones) and precision, plus the training steps
    of ``TRAIN_STEPS`` in fp32, tf32 and bf16 (unless ``families`` leaves them out), as ``_aot.trace``
    problems."""
    probs = [{"label": f"{c.family}/{c.name}/{dt}", "family": c.family, "params": c.params, "dtype": dt}
             for c in _shapes.select(families, quick=quick) for dt in c.dtypes]
    if not families:
        probs += [{"label": f"train/{m}+{o}/{dt}", "family": "model", "dtype": dt,
                   "params": {"model": m, "batch": 128, "optimizer": o}}
                  for m, o in TRAIN_STEPS for dt in ("fp32", "tf32", "bf16")]
    return probs


def compile_kernels(archs, name_filter: str | None = None, workers: int | None = None,
                    timeout: int = 1800, problems: list[dict] | None = None,
                    static: bool = True) -> tuple[list[dict], str]:
    """Rows of ``tinydl.kernels._aot`` (one per configuration and arch) and its stderr log: the static
    configurations, plus the launches ``problems`` make (traced on meta tensors, see ``_aot.trace``)."""
    env = dict(os.environ, TINYDL_AOT="1", TINYDL_DEVICE="cpu")
    env.pop("TRITON_INTERPRET", None)  # real JITFunctions, lowered for the GPU target
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, "-m", "tinydl.kernels._aot", "--json", str(out)]
        if problems:
            (Path(tmp) / "problems.json").write_text(json.dumps(problems))
            cmd += ["--problems", str(Path(tmp) / "problems.json")]
        if not static:
            cmd.append("--traced-only")
        for a in archs:
            cmd += ["--arch", str(a)]
        if name_filter:
            cmd += ["--filter", name_filter]
        if workers:
            cmd += ["--workers", str(workers)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if not out.exists():
            raise RuntimeError(f"the AOT compile produced no report (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return json.loads(out.read_text()), proc.stderr


def roofline(device: str = _shapes.REFERENCE_DEVICE, families=None) -> list[dict]:
    """One row per benchmark case (not the interpreter's tiny ones), precision and mode."""
    peaks = _shapes.PEAKS[device]
    rows = []
    for case in _shapes.select(families):
        for dtype in case.dtypes:
            for mode in case.modes:
                fl = _shapes.flops(case, mode)
                by = _shapes.min_bytes(case, mode, dtype)
                ms, bound = _shapes.roofline_ms(case, mode, dtype, peaks)
                rows.append(dict(kernel=case.family, case=case.name, shape=case.shape, dtype=dtype, mode=mode,
                                 gflop=fl / 1e9, mbytes=by / 1e6, flop_per_byte=fl / by if by else 0.0, bound=bound,
                                 min_us=ms * 1e3, peak_tflops=peaks[dtype] if fl else None, peak_tbps=peaks["tbps"],
                                 device=device))
    return rows


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})


def _is_traced(r: dict) -> bool:
    return r.get("source", "static") != "static"


#: ptxas may itself stop below 255 registers (seen: 128) and spill a few bytes so that more blocks
#: fit on an SM: its own trade, cheap, and it differs between the ptxas of Triton 3.6 and 3.9.
#: A spill at the 255 cap (forced by the kernel's demand) or beyond this many bytes is a finding.
SPILL_SLACK_BYTES = 16


def spilling(rows: list[dict]) -> list[dict]:
    """Traced sm_90 launches that spill: what an H100 running the benchmarks would pay for."""
    return [r for r in rows if r["ok"] and r["arch"] == 90 and _is_traced(r) and r["local"] > 0
            and (r["registers"] >= 255 or r["local"] > SPILL_SLACK_BYTES)]


def print_kernels(rows: list[dict], console) -> None:
    from rich.markup import escape
    from rich.table import Table

    for traced in (False, True):
        part = [r for r in rows if _is_traced(r) == traced]
        if not part:
            continue
        title = ("benchmark launches, traced on meta tensors and specialised as Triton's JIT would (alignment, "
                 "ints equal to 1)" if traced else
                 "every configuration a launcher can pick, without alignment hints (how odd shapes compile)")
        t = Table(title=title)
        cols = ["module", "configuration", "arch", "warps", "stages", "regs", "spills B", "smem KiB",
                "smem limit", "tensor cores", "status"] + (["launched by"] if traced else [])
        for col in cols:
            t.add_column(col, justify="left" if col in ("module", "configuration", "status", "launched by")
                         else "right", overflow="fold")
        for r in sorted(part, key=lambda r: (r["module"], r["name"], -r["arch"])):
            extra = [escape(r["source"])] if traced else []
            if not r["ok"]:
                t.add_row(r["module"], escape(r["name"]), f"sm_{r['arch']}", str(r["num_warps"]),
                          str(r["num_stages"]), "", "", "", "", "", f"[red]FAILED {escape(r.get('error', '')[:80])}[/]",
                          *extra)
                continue
            spill = r["local"] > 0
            over = r["shared"] > (r.get("shared_limit") or 1 << 62)
            status = ("[red]spills[/]" if spilling([r]) else "[yellow]spills[/]") if spill else ""
            status += " [red]smem over limit[/]" if over else ""
            t.add_row(r["module"], escape(r["name"]), f"sm_{r['arch']}", str(r["num_warps"]), str(r["num_stages"]),
                      str(r["registers"]), str(r["local"]), f"{r['shared'] / 1024:.1f}",
                      f"{(r.get('shared_limit') or 0) / 1024:.0f}", "yes" if r["tensor_cores"] else "no",
                      status or "[green]ok[/]", *extra)
        console.print(t)


def print_roofline(rows: list[dict], console) -> None:
    from rich.table import Table

    dev = rows[0]["device"] if rows else _shapes.REFERENCE_DEVICE
    t = Table(title=f"analytic roofline on {dev} (lower bounds: every byte moved once, peak dense throughput)")
    for col in ("op", "case", "shape", "dtype", "mode", "GFLOP", "min bytes", "FLOP/B", "bound", "min time"):
        t.add_column(col, justify="left" if col in ("op", "case", "shape", "dtype", "mode", "bound") else "right")
    for r in rows:
        us = r["min_us"]
        t.add_row(r["kernel"], r["case"], r["shape"], r["dtype"], r["mode"], f"{r['gflop']:.3g}" if r["gflop"] else "—",
                  _shapes.numel_label(r["mbytes"] * 1e6) + "B", f"{r['flop_per_byte']:.1f}" if r["gflop"] else "—",
                  r["bound"], f"{us:.3g} µs" if us < 1e3 else f"{us / 1e3:.3g} ms")
    console.print(t)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, action="append", choices=(80, 90), help="SM version(s), default 90 and 80")
    ap.add_argument("--filter", help="regex on the kernel configuration name (e.g. 'linear_fwd', 'sgd')")
    ap.add_argument("--family", action="append", choices=_shapes.FAMILIES,
                    help="roofline and traced launches: only these families")
    ap.add_argument("--device", default=_shapes.REFERENCE_DEVICE, choices=list(_shapes.PEAKS),
                    help="peaks for the roofline (default H100 SXM)")
    ap.add_argument("--no-compile", action="store_true", help="skip the GPU compile (roofline only)")
    ap.add_argument("--no-roofline", action="store_true")
    ap.add_argument("--no-trace", action="store_true", help="skip the benchmark launches (static configurations only)")
    ap.add_argument("--traced-only", action="store_true", help="only the benchmark launches")
    ap.add_argument("--workers", type=int, help="parallel compile processes (default min(4, cores))")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/kernel-report"), help="output folder")
    args = ap.parse_args(argv)

    from rich.console import Console

    console = Console(width=170)
    args.out.mkdir(parents=True, exist_ok=True)
    kernels: list[dict] = []
    if not args.no_compile:
        archs = tuple(args.arch or (90, 80))
        console.print(f"[dim]compiling tinydl kernel configurations for {', '.join(f'sm_{a}' for a in archs)}"
                      f"{' matching ' + repr(args.filter) if args.filter else ''} ...[/]")
        problems = None if args.no_trace else bench_problems(args.family)
        kernels, _ = compile_kernels(archs, args.filter, args.workers, problems=problems, static=not args.traced_only)
        if not kernels:
            console.print(f"[yellow]no kernel configuration matches {args.filter!r}[/]")
        print_kernels(kernels, console)
        _write_csv(args.out / "kernels.csv", kernels, KERNEL_COLUMNS)
    roof = [] if args.no_roofline else roofline(args.device, args.family)
    if roof:
        print_roofline(roof, console)
        _write_csv(args.out / "roofline.csv", roof, ROOFLINE_COLUMNS)
    import triton

    meta = dict(date=_dt.datetime.now().isoformat(timespec="seconds"), triton=triton.__version__,
                archs=sorted(set(r["arch"] for r in kernels)), filter=args.filter, peaks=_shapes.PEAKS[args.device],
                roofline_device=args.device)
    (args.out / "kernel_report.json").write_text(json.dumps({"meta": meta, "kernels": kernels, "roofline": roof},
                                                            indent=1))
    failed = [r for r in kernels if not r["ok"]]
    spills = spilling(kernels)
    console.print(f"{len(kernels)} configurations compiled, {len(failed)} failed, {len(spills)} benchmark launches "
                  f"spill on sm_90; "
                  f"{len(roof)} roofline rows; wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
