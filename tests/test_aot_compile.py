"""Every kernel configuration compiles for real GPUs (sm_90 and sm_80) on this CPU-only machine.

Runs ``python -m tinydl.kernels._aot`` once (in a subprocess with the interpreter off) and checks
each row: compiled, no register spills (local memory) where an H100 would launch it, and shared
memory within the SM's limit.
"""

import json
import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def aot_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("aot") / "rows.json"
    env = dict(os.environ, TINYDL_AOT="1", TINYDL_DEVICE="cpu")
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, "-m", "tinydl.kernels._aot", "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=1200)
    assert out.exists(), f"AOT check produced no report:\n{proc.stderr[-4000:]}"
    return json.loads(out.read_text())


def test_every_module_has_specs(aot_rows):
    from tinydl.kernels import KERNEL_MODULES

    seen = {r["module"] for r in aot_rows}
    assert seen == set(KERNEL_MODULES)
    assert {r["arch"] for r in aot_rows} == {80, 90}


def test_every_config_compiles(aot_rows):
    failed = [f"sm_{r['arch']} {r['name']}: {r['error'][:400]}" for r in aot_rows if not r["ok"]]
    assert not failed, "\n".join(failed)


def test_no_spills_on_h100_configs(aot_rows):
    spills = [f"{r['name']}: local={r['local']} regs={r['registers']}" for r in aot_rows
              if r["ok"] and r["arch"] == 90 and r["h100"] and r["local"] > 0]
    assert not spills, "\n".join(spills)


def test_shared_memory_fits(aot_rows):
    over = [f"sm_{r['arch']} {r['name']}: {r['shared']} B > {r['shared_limit']} B" for r in aot_rows
            if r["ok"] and r["shared"] > r["shared_limit"]]
    assert not over, "\n".join(over)


def test_gemm_configs_use_tensor_cores(aot_rows):
    # tf32/bf16/fp16 GEMMs must reach wgmma (sm_90) or mma.sync (sm_80); IEEE fp32 must not
    for r in aot_rows:
        if r["ok"] and r["name"].startswith("linear_"):
            assert r["tensor_cores"] == ("/ieee/" not in r["name"]), r["name"]
