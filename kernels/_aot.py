"""Ahead-of-time GPU compile check: lower every kernel configuration for sm_80/sm_90 without a GPU.

    TINYDL_AOT=1 python -m tinydl.kernels._aot --arch 90 --arch 80 --json report.json
    TINYDL_AOT=1 python -m tinydl.kernels._aot --problems problems.json --traced-only --arch 90

``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` runs the whole NVIDIA
pipeline (TTIR -> TTGIR -> LLVM -> PTX -> cubin via the bundled ptxas) on the CPU, so what only the
GPU compiler rejects (shared memory over the limit, bad layouts, unsupported dot shapes) shows up
in CPU-only CI. The bundled ``cuobjdump --dump-resource-usage`` gives registers and the per-thread
stack frame: ``local`` below is STACK + LOCAL bytes, the local memory a GPU launch reports as
``n_spills * 4`` (Triton kernels keep nothing else there, so local > 0 means register spills).

Two sets of configurations:

- **static**: each kernel module's ``AOT_SPECS``, every tile a launcher can pick, with no
  alignment hints. That is how odd shapes compile (K=785, offset views): the worst case, and a
  pessimistic one. Checked to compile and to fit in shared memory.
- **traced**: what real launches compile to. ``trace()`` runs tinydl's ops forward and backward on
  ``meta`` tensors at given shapes and records every kernel launch, then specialises it as Triton's
  JIT would (ints equal to 1 become constants, 16-byte-aligned pointers and multiples of 16 get
  ``tt.divisibility``). Without those hints the GEMM loads are not vectorised or pipelined through
  shared memory, so only traced rows say whether a benchmark launch spills on an H100.

Kernels must be real ``JITFunction`` objects, so this runs with ``TINYDL_AOT=1`` (the interpreter
off); without it the module re-runs itself in a subprocess that sets it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from ._common import AotSpec


def _cuobjdump() -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump")


def all_specs():
    from . import KERNEL_MODULES

    specs = []
    for mod in KERNEL_MODULES:
        m = importlib.import_module(f"tinydl.kernels.{mod}")
        specs.extend((mod, s) for s in m.AOT_SPECS)
    return specs


# ----------------------------------------------------------------------------------------------
# Tracing real launches on meta tensors
# ----------------------------------------------------------------------------------------------

_TRITON_DTYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
                 torch.int64: "i64", torch.int32: "i32", torch.int16: "i16", torch.int8: "i8", torch.uint8: "u8",
                 torch.bool: "i1"}


def specialize(kernel, args: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any], dict]:
    """(signature, constexprs, attrs) that Triton's JIT builds for a launch with these arguments.

    Mirrors ``triton.runtime.jit``'s specialisation (3.6-3.9): an int equal to 1 becomes the
    constant 1 and a multiple of 16 gets ``tt.divisibility=16``, unless the parameter is in
    ``do_not_specialize``; a tensor whose data is 16-byte aligned gets the same hint. A meta tensor
    has no address: a fresh allocation is aligned (the caching allocator gives 512-byte blocks), so
    its storage offset decides.
    """
    sig, consts, attrs = {}, {}, {}
    for prm in kernel.params:
        name, v = prm.name, args[prm.name]
        if prm.is_constexpr or v is None:
            sig[name], consts[name] = "constexpr", v
            continue
        spec_ok = not prm.do_not_specialize
        align_ok = spec_ok and not getattr(prm, "do_not_specialize_on_alignment", False)
        if isinstance(v, torch.Tensor):
            sig[name] = "*" + _TRITON_DTYPE[v.dtype]
            aligned = (v.storage_offset() * v.element_size()) % 16 == 0
        elif isinstance(v, bool):
            sig[name], aligned = "i1", False
        elif isinstance(v, int):
            if v == 1 and spec_ok:
                sig[name], consts[name] = "constexpr", 1
                continue
            sig[name] = "i32" if -2**31 <= v < 2**31 else ("u64" if v >= 2**63 else "i64")
            aligned = v % 16 == 0
        elif isinstance(v, float):
            sig[name], aligned = "fp32", False
        else:
            raise TypeError(f"{kernel.__name__}: cannot specialise argument {name}={v!r}")
        if aligned and align_ok:
            attrs[(prm.num,)] = [["tt.divisibility", 16]]
    return sig, consts, attrs


def meta_run(family: str, params: dict[str, Any], dtype: str) -> None:
    """One forward and backward (or optimizer step) of a benchmark problem on meta tensors.

    ``family``/``params``/``dtype`` are those of ``tools/_shapes.py``, or family "model" with params
    ``{"model": "lenet5" | "mlp", "batch": B, "optimizer": "adam" | "sgd"}`` for two training steps
    (the second is the steady state: parameters read through the optimizer's packed buffer).
    dtype "tf32" is fp32 storage with ``set_float32_matmul_precision("high")``. Nothing is computed:
    this only drives the launchers.
    """
    import tinydl as td
    from tinydl import functional as F

    dt = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    p = params

    def leaf(*shape, dtype=dt):
        return td.Tensor(torch.empty(shape, device="meta", dtype=dtype), requires_grad=True)

    def backward(y):
        y.backward(torch.empty(y.shape, device="meta", dtype=y.dtype) if y.dim() else None)

    old = td.get_float32_matmul_precision()
    td.set_float32_matmul_precision("high" if dtype == "tf32" else "highest")
    try:
        if family == "linear":
            x, w, b = leaf(p["M"], p["K"]), leaf(p["N"], p["K"]), leaf(p["N"])
            backward(F.linear(x, w, b, activation=p.get("act", "none")))
        elif family == "cross_entropy":
            target = td.Tensor(torch.empty(p["N"], device="meta", dtype=torch.int64))
            backward(F.cross_entropy(leaf(p["N"], p["C"]), target))
        elif family == "softmax":
            backward(F.softmax(leaf(p["N"], p["C"]), dim=-1))
        elif family == "conv2d":
            x, w, b = leaf(p["N"], p["C"], p["H"], p["W"]), leaf(p["K"], p["C"], p["R"], p["S"]), leaf(p["K"])
            backward(F.conv2d(x, w, b, stride=p["stride"], padding=p["pad"]))
        elif family == "max_pool2d":
            backward(F.max_pool2d(leaf(p["N"], p["C"], p["H"], p["W"]), p["k"], p["s"], p["p"]))
        elif family == "model":  # training steps of tinydl.models' net, as `tinydl train` runs them
            from tinydl import models, optim

            net = getattr(models, p["model"])().to(device="meta", dtype=dt)
            shape = (p["batch"], 1, 28, 28) if p["model"] == "lenet5" else (p["batch"], 784)
            x = td.Tensor(torch.empty(shape, device="meta", dtype=dt))
            target = td.Tensor(torch.empty(p["batch"], device="meta", dtype=torch.int64))
            opt = optim.Adam(net.parameters(), lr=1e-3) if p.get("optimizer", "adam") == "adam" else \
                optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
            for _ in range(2):  # the first step packs the parameters: the second is the steady state
                opt.zero_grad()
                F.cross_entropy(net(x), target).backward()
                opt.step()
        elif family in ("sgd", "adam"):
            w = leaf(p["n"], dtype=torch.float32)
            w.grad = torch.empty(p["n"], device="meta", dtype=torch.float32)
            opt = td.optim.SGD([w], lr=1e-3) if family == "sgd" else td.optim.Adam([w], lr=1e-3)
            opt.step()
        else:
            raise KeyError(f"meta_run: unknown family {family!r}")
    finally:
        td.set_float32_matmul_precision(old)


def trace(problems: list[dict]) -> list[tuple[str, AotSpec]]:
    """(module, spec) for every distinct kernel launch of these problems.

    A problem is ``{"label": ..., "family": ..., "params": {...}, "dtype": ...}`` (see ``meta_run``).
    Launches that specialise identically are one spec, labelled with every problem that made it.
    """
    from triton.runtime.jit import JITFunction

    from . import cross_entropy

    found: dict[str, tuple[str, AotSpec]] = {}
    label = ""

    def record(self, *args, grid=None, warmup=False, **kwargs):
        opts = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
        bound = dict(zip(self.arg_names, args), **kwargs)
        sig, consts, attrs = specialize(self, bound)
        warps, stages = opts.get("num_warps", 4), opts.get("num_stages", 3)
        key = repr((self.fn.__module__, self.__name__, sorted(sig.items()), sorted(consts.items(), key=str),
                    sorted(attrs), warps, stages))
        if key in found:
            mod, spec = found[key]
            if label not in spec.source.split(", "):
                spec.source += ", " + label
            return
        dt = next((t[1:] for t in sig.values() if t.startswith("*")), "")
        blocks = "x".join(str(v) for k, v in consts.items() if k.startswith("BLOCK"))
        name = f"{self.__name__}[{dt}/{blocks}/w{warps}s{stages}]"
        same = sum(1 for _, s in found.values() if s.name.split("#")[0] == name)  # other constants or hints
        name += f"#{same}" if same else ""
        # sm_90 only: the static specs cover sm_80's compile; traced ones answer "does an H100 spill"
        spec = AotSpec(name, self, sig, consts, warps, stages, archs=(90,), attrs=attrs, source=label)
        found[key] = (self.fn.__module__.rsplit(".", 1)[-1], spec)

    saved_run, saved_capturing = JITFunction.run, cross_entropy._capturing
    JITFunction.run = record
    cross_entropy._capturing = lambda t: True  # its target check reads a value back: nothing to read on meta
    try:
        for prob in problems:
            label = prob.get("label") or f"{prob['family']}/{prob['dtype']}"
            meta_run(prob["family"], prob["params"], prob["dtype"])
    finally:
        JITFunction.run, cross_entropy._capturing = saved_run, saved_capturing
    return list(found.values())


# ----------------------------------------------------------------------------------------------
# Compiling
# ----------------------------------------------------------------------------------------------

def _compile_one(mod: str, spec: AotSpec, arch: int) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    row = {"module": mod, "name": spec.name, "arch": arch, "num_warps": spec.num_warps,
           "num_stages": spec.num_stages, "source": spec.source}
    try:
        src = ASTSource(fn=spec.kernel, signature=spec.signature, constexprs=spec.constexprs, attrs=spec.attrs)
        c = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                           options={"num_warps": spec.num_warps, "num_stages": spec.num_stages})
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(c.asm["cubin"])
            f.flush()
            usage = subprocess.run([_cuobjdump(), "--dump-resource-usage", f.name],
                                   capture_output=True, text=True, check=True).stdout
        fields = {k: int(v) for k, v in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", usage)}
        ptx = c.asm["ptx"]
        from ._common import SHARED_LIMIT

        row.update(ok=True, shared_limit=SHARED_LIMIT.get(arch), registers=fields.get("REG", -1),
                   local=fields.get("STACK", 0) + fields.get("LOCAL", 0), shared=int(c.metadata.shared),
                   tensor_cores=("wgmma" in ptx) or ("mma.sync" in ptx))
    except Exception as e:  # a failure is a result to report, not a crash of the whole check
        row.update(ok=False, error=f"{type(e).__name__}: {str(e)[:2000]}")
    return row


class _Job:
    """What a worker process needs to compile one spec: picklable (the kernel goes by name)."""

    def __init__(self, mod, spec, arch):
        self.mod, self.arch = mod, arch
        self.kernel_name = spec.kernel.__name__
        self.fields = {k: getattr(spec, k) for k in ("name", "signature", "constexprs", "num_warps", "num_stages",
                                                     "archs", "attrs", "source")}

    def __call__(self):
        kernel = getattr(importlib.import_module(f"tinydl.kernels.{self.mod}"), self.kernel_name)
        return _compile_one(self.mod, AotSpec(kernel=kernel, **self.fields), self.arch)


def _run_job(job: _Job) -> dict:
    return job()


def run(archs=(90, 80), name_filter: str | None = None, workers: int | None = None,
        problems: list[dict] | None = None, static: bool = True) -> list[dict]:
    specs = all_specs() if static else []
    if problems:
        specs += trace(problems)
    jobs = [_Job(mod, s, a) for a in archs for mod, s in specs
            if a in s.archs and (name_filter is None or re.search(name_filter, s.name))]
    workers = workers or min(4, os.cpu_count() or 1)
    if workers <= 1:
        return [j() for j in jobs]
    with ProcessPoolExecutor(workers) as ex:
        return list(ex.map(_run_job, jobs, chunksize=4))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, action="append", help="SM version(s), default 90 and 80")
    ap.add_argument("--filter", help="regex on the configuration name")
    ap.add_argument("--json", help="write the rows to this file ('-' for stdout)")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--problems", help="JSON list of problems to trace (see trace()); adds traced rows")
    ap.add_argument("--traced-only", action="store_true", help="skip the static AOT_SPECS")
    args = ap.parse_args(argv)
    if os.environ.get("TINYDL_AOT") != "1":
        env = dict(os.environ, TINYDL_AOT="1", TINYDL_DEVICE="cpu")
        env.pop("TRITON_INTERPRET", None)
        return subprocess.call([sys.executable, "-m", "tinydl.kernels._aot", *(argv or sys.argv[1:])], env=env)
    problems = json.loads(Path(args.problems).read_text()) if args.problems else None
    rows = run(tuple(args.arch or (90, 80)), args.filter, args.workers, problems, static=not args.traced_only)
    if args.json == "-":
        json.dump(rows, sys.stdout, indent=1)
    elif args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    bad = [r for r in rows if not r["ok"]]
    for r in rows:
        status = "ok " if r["ok"] else "ERR"
        detail = (f"regs={r['registers']} local={r['local']} smem={r['shared']} tc={r['tensor_cores']}"
                  if r["ok"] else r["error"][:300])
        print(f"{status} sm_{r['arch']} {r['name']}: {detail}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
