"""Ahead-of-time GPU compile check: lower every kernel configuration for sm_80/sm_90 without a GPU.

    TINYDL_AOT=1 python -m tinydl.kernels._aot --arch 90 --arch 80 --json report.json

``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` runs the whole NVIDIA
pipeline (TTIR -> TTGIR -> LLVM -> PTX -> cubin via the bundled ptxas) on the CPU, so what only the
GPU compiler rejects (shared memory over the limit, bad layouts, unsupported dot shapes) shows up
in CPU-only CI. The bundled ``cuobjdump --dump-resource-usage`` gives registers and local memory
(LOCAL > 0 means register spills).

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


def _compile_one(args):
    index, arch = args
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    mod, spec = all_specs()[index]
    row = {"module": mod, "name": spec.name, "arch": arch, "num_warps": spec.num_warps,
           "num_stages": spec.num_stages, "h100": spec.h100}
    try:
        src = ASTSource(fn=spec.kernel, signature=spec.signature, constexprs=spec.constexprs)
        c = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                           options={"num_warps": spec.num_warps, "num_stages": spec.num_stages})
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(c.asm["cubin"])
            f.flush()
            usage = subprocess.run([_cuobjdump(), "--dump-resource-usage", f.name],
                                   capture_output=True, text=True, check=True).stdout
        fields = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", usage))
        ptx = c.asm["ptx"]
        from ._common import SHARED_LIMIT

        row.update(ok=True, shared_limit=SHARED_LIMIT.get(arch), registers=int(fields.get("REG", -1)),
                   stack=int(fields.get("STACK", 0)),
                   local=int(fields.get("LOCAL", 0)), shared=int(c.metadata.shared),
                   tensor_cores=("wgmma" in ptx) or ("mma.sync" in ptx))
    except Exception as e:  # a failure is a result to report, not a crash of the whole check
        row.update(ok=False, error=f"{type(e).__name__}: {str(e)[:2000]}")
    return row


def run(archs=(90, 80), name_filter: str | None = None, workers: int | None = None) -> list[dict]:
    specs = all_specs()
    jobs = [(i, a) for a in archs for i, (_, s) in enumerate(specs)
            if a in s.archs and (name_filter is None or re.search(name_filter, s.name))]
    workers = workers or min(4, os.cpu_count() or 1)
    if workers <= 1:
        return [_compile_one(j) for j in jobs]
    with ProcessPoolExecutor(workers) as ex:
        return list(ex.map(_compile_one, jobs, chunksize=4))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, action="append", help="SM version(s), default 90 and 80")
    ap.add_argument("--filter", help="regex on the configuration name")
    ap.add_argument("--json", help="write the rows to this file ('-' for stdout)")
    ap.add_argument("--workers", type=int)
    args = ap.parse_args(argv)
    if os.environ.get("TINYDL_AOT") != "1":
        env = dict(os.environ, TINYDL_AOT="1", TINYDL_DEVICE="cpu")
        env.pop("TRITON_INTERPRET", None)
        return subprocess.call([sys.executable, "-m", "tinydl.kernels._aot", *(argv or sys.argv[1:])], env=env)
    rows = run(tuple(args.arch or (90, 80)), args.filter, args.workers)
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
