"""Every kernel configuration compiles for real GPUs (sm_90 and sm_80) on this CPU-only machine.

Runs ``python -m tinydl.kernels._aot`` once (in a subprocess with the interpreter off) over the
static configurations (every tile a launcher can pick, no alignment hints) and the launches of
every benchmark shape in ``tools/_shapes.py`` (traced on meta tensors and specialised as Triton's
JIT would). Checks: everything compiles, shared memory fits, GEMMs reach tensor cores, and no
benchmark launch spills registers on sm_90.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tools.kernel_report import bench_problems, spilling

ENV = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
ENV.update(TINYDL_AOT="1", TINYDL_DEVICE="cpu")


@pytest.fixture(scope="module")
def aot_rows(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("aot")
    out, problems = tmp / "rows.json", tmp / "problems.json"
    problems.write_text(json.dumps(bench_problems()))
    cmd = [sys.executable, "-m", "tinydl.kernels._aot", "--json", str(out), "--problems", str(problems)]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=1800)
    assert out.exists(), f"AOT check produced no report:\n{proc.stderr[-4000:]}"
    return json.loads(out.read_text())


def _traced(rows):
    return [r for r in rows if r["source"] != "static"]


def test_every_module_has_specs(aot_rows):
    from tinydl.kernels import KERNEL_MODULES

    static = [r for r in aot_rows if r["source"] == "static"]
    assert {r["module"] for r in static} == set(KERNEL_MODULES)
    assert {r["arch"] for r in static} == {80, 90}


def test_every_benchmark_problem_was_traced(aot_rows):
    labels = {label for r in _traced(aot_rows) for label in r["source"].split(", ")}
    assert labels == {p["label"] for p in bench_problems()}
    assert {r["arch"] for r in _traced(aot_rows)} == {90}


def test_every_config_compiles(aot_rows):
    failed = [f"sm_{r['arch']} {r['name']} ({r['source']}): {r['error'][:400]}" for r in aot_rows if not r["ok"]]
    assert not failed, "\n".join(failed)


def test_no_spills_in_benchmark_launches(aot_rows):
    spills = [f"{r['name']}: local={r['local']} B regs={r['registers']} ({r['source']})" for r in spilling(aot_rows)]
    assert not spills, "\n".join(spills)


def test_shared_memory_fits(aot_rows):
    over = [f"sm_{r['arch']} {r['name']}: {r['shared']} B > {r['shared_limit']} B" for r in aot_rows
            if r["ok"] and r["shared"] > r["shared_limit"]]
    assert not over, "\n".join(over)


def test_gemm_configs_use_tensor_cores(aot_rows):
    # tf32/bf16/fp16 GEMMs must reach wgmma (sm_90) or mma.sync (sm_80); IEEE fp32 must not
    for r in aot_rows:
        if not r["ok"] or not r["name"].startswith(("linear_", "conv2d_fwd", "conv2d_bwd_d")):
            continue
        if r["source"] == "static":
            assert r["tensor_cores"] == ("/ieee/" not in r["name"]), r["name"]
        else:
            assert r["tensor_cores"] == (not r["source"].endswith("/fp32")), (r["name"], r["source"])


def test_trace_specialises_like_the_jit_and_sees_spills():
    # The launch of a 4096^3 bf16 linear+gelu: unit strides become constants, sizes and aligned
    # pointers get divisibility hints. Its epilogue runs in two halves; the one-piece epilogue
    # spills on sm_90, and the check must see that (a spill check that never fires proves nothing).
    script = textwrap.dedent("""
        import json
        from tinydl.kernels import _aot
        from tinydl.kernels._common import AotSpec
        specs = _aot.trace([{"label": "big", "family": "linear", "dtype": "bf16",
                             "params": {"M": 4096, "N": 4096, "K": 4096, "act": "gelu"}}])
        mod, fwd = next((m, s) for m, s in specs if s.kernel.__name__ == "linear_fwd_kernel")
        idx = {n: i for i, n in enumerate(fwd.kernel.arg_names)}
        whole = AotSpec(fwd.name, fwd.kernel, fwd.signature, dict(fwd.constexprs, EPILOGUE_HALVES=False),
                        fwd.num_warps, fwd.num_stages, attrs=fwd.attrs, source="big")
        print(json.dumps({
            "kernels": sorted(s.kernel.__name__ for _, s in specs),
            "consts": {k: v for k, v in fwd.constexprs.items() if k.startswith("stride")},
            "halves": fwd.constexprs["EPILOGUE_HALVES"],
            "hinted": sorted(n for n in idx if (idx[n],) in fwd.attrs),
            "alpha": fwd.signature["alpha"],
            "rows": [_aot._compile_one(mod, s, 90) for s in (fwd, whole)],
        }))
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    # gelu's derivative at this size is one elementwise pass, then the GEMMs without an activation
    assert got["kernels"] == ["act_bwd_kernel", "linear_bwd_dw_kernel", "linear_bwd_dx_kernel", "linear_fwd_kernel"]
    assert got["consts"] == {"stride_xk": 1, "stride_wk": 1, "stride_yn": 1} and got["halves"] is True
    assert got["hinted"] == ["K", "M", "N", "b_ptr", "stride_wn", "stride_xm", "stride_ym", "w_ptr", "x_ptr",
                             "y_ptr", "z_ptr"]
    assert got["alpha"] == "fp32"
    halves, whole = got["rows"]
    assert halves["ok"] and whole["ok"] and halves["tensor_cores"]
    assert halves["local"] == 0 and whole["local"] > 0, (halves, whole)
    assert spilling([whole]) == [whole] and spilling([halves]) == []
