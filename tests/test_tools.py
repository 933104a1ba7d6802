"""The benchmark/profile/report tools run (CPU: interpreter smoke test, report mode) and write
well-formed outputs; the CUDA-graph helper fails clearly without a GPU and matches eager on one.

Benchmarks are never timed assertions: these tests check structure only.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tinydl as td
from tinydl import _runtime
from tools import _shapes, bench, kernel_report
from tools import profile as prof_tool

ROOT = Path(__file__).resolve().parent.parent
GPU = _runtime.DEVICE == "cuda" and not _runtime.INTERPRET


def _csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        return list(r.fieldnames or []), list(r)


def _is_png(path: Path) -> bool:
    return path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


# ------------------------------------------------------------------------------------------------
# Shared sweep and cost model
# ------------------------------------------------------------------------------------------------


def test_cost_model():
    lin = next(c for c in _shapes.CASES if c.name == "large-4096^3")
    n = 4096
    assert _shapes.flops(lin, "fwd") == 2 * n**3
    assert _shapes.flops(lin, "fwd+bwd") == 6 * n**3
    ms, bound = _shapes.roofline_ms(lin, "fwd", "bf16")
    assert bound == "compute" and ms == pytest.approx(2 * n**3 / 989.4e12 * 1e3)
    assert _shapes.min_bytes(lin, "fwd", "bf16") == 2 * (3 * n * n + n)
    ce = next(c for c in _shapes.CASES if c.family == "cross_entropy" and c.name.startswith("large"))
    assert (ce.params["N"], ce.params["C"]) == (16384, 32768)
    ms, bound = _shapes.roofline_ms(ce, "fwd+bwd", "fp32")
    assert bound == "memory" and ms == pytest.approx((2 * 4 * 16384 * 32768 + 8 * 16384) / 3.35e12 * 1e3)
    conv = next(c for c in _shapes.CASES if c.name == "resnet-56x56x64")
    assert _shapes.flops(conv, "fwd") == 2 * 64 * 64 * 56 * 56 * 64 * 9
    opt = next(c for c in _shapes.CASES if c.family == "adam" and not c.tiny)
    assert opt.modes == ("step",) and _shapes.min_bytes(opt, "step", "fp32") == 28 * opt.params["n"]
    # every family has exactly one interpreter-sized case and at least one quick GPU case
    tiny = _shapes.select(tiny=True)
    assert sorted(c.family for c in tiny) == sorted(_shapes.FAMILIES)
    assert {c.family for c in _shapes.select(quick=True)} == set(_shapes.FAMILIES)
    assert all(not c.tiny for c in _shapes.select())
    assert _shapes.peaks_for("NVIDIA H100 PCIe")[0] == "H100 PCIe"
    assert _shapes.peaks_for("NVIDIA H100 80GB HBM3")[0] == "H100"
    assert _shapes.peaks_for("Some Future GPU")[0] == "H100"


# ------------------------------------------------------------------------------------------------
# bench.py
# ------------------------------------------------------------------------------------------------


@pytest.mark.skipif(GPU, reason="the CPU smoke test; on a GPU run tools/bench.py itself")
def test_bench_quick_cpu_smoke(tmp_path, capsys):
    rc = bench.main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    assert "INTERPRETER SMOKE TEST" in out and "not performance" in out
    cols, rows = _csv(tmp_path / "bench.csv")
    assert cols == bench.CSV_COLUMNS
    present = set(_shapes.FAMILIES)
    assert {r["kernel"] for r in rows} == present
    assert {r["provider"] for r in rows} == {"torch", "tinydl"}  # torch.compile is skipped on CPU
    for r in rows:
        assert r["error"] == "", r
        assert float(r["p20_ms"]) <= float(r["p50_ms"]) <= float(r["p80_ms"])
        assert r["tflops"] == r["gbps"] == r["pct_peak"] == ""  # no speed claims from the interpreter
        assert "perf_counter" in r["timer"] and r["device"].startswith("cpu") and r["torch"] == torch.__version__
        if r["provider"] == "tinydl":
            assert r["correct"] == "True"
    for fam in present - {"sgd", "adam"}:
        assert {r["mode"] for r in rows if r["kernel"] == fam} == {"fwd", "bwd", "fwd+bwd"}
    data = json.loads((tmp_path / "bench.json").read_text())
    assert set(data) == {"meta", "rows"} and len(data["rows"]) == len(rows)
    assert data["meta"]["gpu"] is False and "SMOKE TEST" in data["meta"]["note"]
    for key in ("kernel", "provider", "mode", "shape", "dtype", "p20_ms", "p50_ms", "p80_ms", "tflops", "gbps",
                "device", "torch", "triton", "tinydl", "date"):
        assert key in data["rows"][0]
    for fam in present:
        assert _is_png(tmp_path / f"{fam}.png"), fam


def test_bench_reports_mismatch(tmp_path, capsys, monkeypatch):
    # a wrong tinydl result is reported (and not timed), and the exit code says so
    monkeypatch.setattr(bench, "make_problem", _wrong_softmax(bench.make_problem))
    rc = bench.main(["--quick", "--family", "softmax", "--no-plots", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 1 and "MISMATCH" in out
    _, rows = _csv(tmp_path / "bench.csv")
    td_rows = [r for r in rows if r["provider"] == "tinydl"]
    assert td_rows and all(r["correct"] == "False" and r["p50_ms"] == "" and "mismatch" in r["error"]
                           for r in td_rows)


def test_bench_gpu_code_paths(monkeypatch, capsys):
    # The GPU branches (do_bench quantiles, throughput, % of peak, speedups) run here with a stand-in
    # do_bench, so their plumbing is checked on a CPU too; the numbers mean nothing.
    import triton.testing

    calls = []

    def fake_do_bench(fn, warmup=25, rep=100, grad_to_none=None, quantiles=None, return_mode="mean"):
        assert quantiles == [0.2, 0.5, 0.8]
        for x in grad_to_none or ():
            x.grad = None
        fn()
        calls.append(fn)
        return [0.5, 1.0, 2.0]

    monkeypatch.setattr(triton.testing, "do_bench", fake_do_bench)
    case = next(c for c in _shapes.select(["linear"], tiny=True))
    rows = bench.run_case(case, "fp32", ["fwd", "bwd", "fwd+bwd"], ["torch", "tinydl"], bench.Timer(gpu=True),
                          _runtime.DEVICE)
    assert len(calls) == 6 and len(rows) == 6 and all(r["p50_ms"] == 1.0 for r in rows)
    env = dict(bench.environment(False), device="NVIDIA H100 80GB HBM3")
    bench.add_throughput(rows, True, env)
    for r in rows:
        assert r["tflops"] == pytest.approx(_shapes.flops(case, r["mode"]) / 1e-3 / 1e12)
        assert r["pct_peak"] == pytest.approx(100 * max(r["tflops"] / 66.9, r["gbps"] / 3350))
        assert r["peaks_of"] == "H100" and r["roofline_ms"] > 0
    from rich.console import Console

    bench.print_table(rows, True, Console(width=220))
    out = capsys.readouterr().out
    assert "1.00x" in out and "TFLOP/s" in out and "smoke" not in out


def _wrong_softmax(make_problem):
    def make(case, dtype, device):
        p = make_problem(case, dtype, device)
        p.td_fn = lambda x: td.functional.softmax(td.functional.leaky_relu(x, 0.5), dim=-1)
        return p

    return make


# ------------------------------------------------------------------------------------------------
# profile.py
# ------------------------------------------------------------------------------------------------


@pytest.mark.skipif(GPU, reason="the CPU smoke test; on a GPU run tools/profile.py itself")
def test_profile_smoke_cpu(tmp_path, capsys):
    rc = prof_tool.main(["--smoke", "--cuda-graph", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    assert "INTERPRETER SMOKE TEST" in out and "needs a CUDA GPU" in out
    data = json.loads((tmp_path / "profile.json").read_text())
    assert data["meta"]["gpu"] is False and data["meta"]["mode"] == "interpreter"
    models = {m["model"]: m for m in data["models"]}
    assert set(models) == {"mlp", "lenet5"}
    for name, m in models.items():
        assert "error" not in m, m
        assert set(m["profile"]) == {"tinydl", "torch"}  # no CUDA graph on a CPU
        assert any("tinydl+graph skipped" in n for n in m["notes"])
        assert set(m["e2e_ms"]) == {"torch eager", "tinydl"} and all(v > 0 for v in m["e2e_ms"].values())
        for impl, p in m["profile"].items():
            assert p["kernels_per_step"] > 0 and p["step_ms_profiled"] > 0 and p["peak_mem_mb"] is None
            assert abs(sum(g["count"] for g in p["groups"].values()) - p["kernels_per_step"]) < 1e-9
            trace = json.loads(Path(p["trace"]).read_text())
            assert trace["traceEvents"], (name, impl)
        groups = m["profile"]["tinydl"]["groups"]
        # tinydl's linear layers: one fused kernel per layer forward, two in backward (minus the first dx)
        assert set(groups["gemm/linear"]["names"]) >= {"linear_fwd_kernel", "linear_bwd_dw_kernel"}
        assert "optimizer" in groups
    from rich.console import Console

    prof_tool.print_model(models["lenet5"], True, Console(width=200))  # the GPU table layout, from these rows
    assert "vs torch eager" in capsys.readouterr().out
    assert "conv" in models["lenet5"]["profile"]["tinydl"]["groups"]
    assert "pool" in models["lenet5"]["profile"]["tinydl"]["groups"]
    assert {p.name for p in tmp_path.glob("*.trace.json")} == {
        "mlp-tinydl.trace.json", "mlp-torch.trace.json", "lenet5-tinydl.trace.json", "lenet5-torch.trace.json"}


def test_profile_op_groups_and_torch_twin():
    g = prof_tool.op_group
    assert g("linear_fwd_kernel") == "gemm/linear"
    assert g("sm90_xmma_gemm_f32f32_tf32f32_f32_tn_n_tilesize128x128x32") == "gemm/linear"
    assert g("sm90_xmma_fprop_implicit_gemm_indexed_tf32f32") == "conv"
    assert g("aten::convolution_backward") == "conv"
    assert g("max_pool2d_bwd_kernel") == "pool"
    assert g("cross_entropy_fwd_kernel") == "softmax/loss"
    assert g("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float>") == "softmax/loss"
    assert g("adam_kernel") == g("sgd_kernel") == g("void at::native::multi_tensor_apply_kernel") == "optimizer"
    assert g("void at::native::vectorized_elementwise_kernel<4, relu>") == "activation/elementwise"
    assert g("Memset (Device)") == "memory"
    # the torch twin computes what the tinydl model computes, from the same weights
    model, twin = prof_tool.build_models("mlp", _runtime.DEVICE)
    x = torch.randn(3, 1, 28, 28, device=_runtime.DEVICE)
    with td.no_grad():
        got = model(td.Tensor(x)).data
    torch.testing.assert_close(got, twin(x), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# kernel_report.py
# ------------------------------------------------------------------------------------------------


def test_kernel_report_linear_sm90(tmp_path, capsys):
    rc = kernel_report.main(["--arch", "90", "--filter", r"linear_fwd_kernel\[(fp32/ieee|bf16/tf32)/small/act6",
                             "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    assert "linear_fwd_kernel[fp32/ieee/small/act6]" in out  # names are not eaten as rich markup
    cols, rows = _csv(tmp_path / "kernels.csv")
    assert cols == kernel_report.KERNEL_COLUMNS
    assert {r["name"] for r in rows} == {"linear_fwd_kernel[fp32/ieee/small/act6]",
                                          "linear_fwd_kernel[bf16/tf32/small/act6]"}
    for r in rows:
        assert r["ok"] == "True" and r["arch"] == "90" and int(r["registers"]) > 0 and r["local"] == "0"
        assert int(r["shared"]) <= int(r["shared_limit"])
        assert r["tensor_cores"] == str("bf16" in r["name"])  # IEEE fp32 must not use tensor cores
    rcols, roof = _csv(tmp_path / "roofline.csv")
    assert rcols == kernel_report.ROOFLINE_COLUMNS
    assert len(roof) == sum(len(c.dtypes) * len(c.modes) for c in _shapes.select())
    big = next(r for r in roof if r["case"] == "large-4096^3" and r["dtype"] == "bf16" and r["mode"] == "fwd")
    assert big["bound"] == "compute" and float(big["min_us"]) == pytest.approx(2 * 4096**3 / 989.4e12 * 1e6)
    data = json.loads((tmp_path / "kernel_report.json").read_text())
    assert set(data) == {"meta", "kernels", "roofline"} and data["meta"]["archs"] == [90]


def test_spill_rule():
    # a traced sm_90 launch spills if ptxas was forced (255 registers) or spilled more than a slack
    # it may choose itself for occupancy; static (unhinted) configurations are reported, not judged
    def row(regs, local, source="linear/x/bf16", arch=90):
        return dict(ok=True, arch=arch, registers=regs, local=local, source=source)

    flagged = [row(255, 8), row(128, kernel_report.SPILL_SLACK_BYTES + 8), row(200, 288)]
    passed = [row(255, 0), row(128, 8), row(255, 288, source="static"), row(255, 288, arch=80)]
    assert kernel_report.spilling(flagged + passed) == flagged


def test_kernel_report_script_roofline_only(tmp_path):
    # as a script (python tools/kernel_report.py): imports resolve, nothing is compiled
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "kernel_report.py"), "--no-compile", "--family",
                           "max_pool2d", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=dict(os.environ, COLUMNS="200"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "kernels.csv").exists()
    _, roof = _csv(tmp_path / "roofline.csv")
    assert roof and {r["kernel"] for r in roof} == {"max_pool2d"} and all(r["bound"] == "memory" for r in roof)


def test_profile_script_help():
    # tools/profile.py must not shadow the stdlib `profile` module when run as a script
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "profile.py"), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--cuda-graph" in proc.stdout


# ------------------------------------------------------------------------------------------------
# CUDA graphs
# ------------------------------------------------------------------------------------------------


@pytest.mark.skipif(GPU, reason="checks the CPU error")
def test_cuda_graph_step_needs_a_gpu():
    from tinydl.cuda_graph import CudaGraphStep, cuda_graphs_available

    assert not cuda_graphs_available()
    with pytest.raises(RuntimeError, match="CudaGraphStep needs a CUDA GPU.*interpreter"):
        CudaGraphStep(lambda x: x)


@pytest.mark.cuda
def test_cuda_graph_training_matches_eager():
    from tinydl import functional as F
    from tinydl import nn, optim
    from tinydl.cuda_graph import CudaGraphStep

    def make():
        td.manual_seed(0)
        model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 5))
        return model, optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    batches = [(torch.randn(16, 20, device="cuda"), torch.randn(16, 5, device="cuda")) for _ in range(6)]
    eager, eopt = make()
    graphed, gopt = make()

    def step_fn(model, opt):
        # the loss is sum(out * y) / numel, its gradient y / numel: no host-side loss validation
        def step(x, y):
            opt.zero_grad(set_to_none=True)
            out = model(x)
            out.backward(F.softmax(y, dim=-1).data / out.numel())
            opt.step()
            return out

        return step

    estep = step_fn(eager, eopt)
    graph = CudaGraphStep(step_fn(graphed, gopt), warmup=2)
    for i, (x, y) in enumerate(batches):  # calls 1-2 eager, call 3 captures and replays, then replays
        eloss = estep(td.Tensor(x), td.Tensor(y))
        gloss = graph(td.Tensor(x), td.Tensor(y))
        assert (graph.graph is not None) == (i >= 2)
        torch.testing.assert_close(gloss.data, eloss.data, rtol=1e-5, atol=1e-6)
    for pe, pg in zip(eager.parameters(), graphed.parameters()):  # the same number of steps on each side
        torch.testing.assert_close(pg.data, pe.data, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="set up for shape"):
        graph(td.Tensor(batches[0][0][:8]), td.Tensor(batches[0][1][:8]))
    # a changed lr takes effect after recapture(); until then the graph replays the old one
    for g in (eopt.param_groups[0], gopt.param_groups[0]):
        g["lr"] = 0.01
    graph.recapture()
    for x, y in batches[:2]:
        estep(td.Tensor(x), td.Tensor(y))
        graph(td.Tensor(x), td.Tensor(y))
    for pe, pg in zip(eager.parameters(), graphed.parameters()):
        torch.testing.assert_close(pg.data, pe.data, rtol=1e-5, atol=1e-6)

    # inference: a graph of the forward under no_grad replays the eager result on new inputs
    with td.no_grad():
        infer = CudaGraphStep(lambda x: graphed(x), warmup=1)
        for _ in range(3):
            x = torch.randn(16, 20, device="cuda")
            torch.testing.assert_close(infer(x).data, graphed(td.Tensor(x)).data)


@pytest.mark.cuda
def test_cuda_graph_capturable_adam_and_schedule_match_eager():
    # the default `tinydl train` step (LeNet-5, cross-entropy, Adam, a per-epoch lr change) under a graph
    from tinydl import functional as F
    from tinydl import models, optim
    from tinydl.cuda_graph import CudaGraphStep

    def make(capturable):
        td.manual_seed(0)
        model = models.lenet5()
        return model, optim.Adam(model.parameters(), lr=5e-3, capturable=capturable)

    def step_fn(model, opt):
        def step(x, y):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss
        return step

    (em, eo), (gm, go) = make(False), make(True)
    estep, gstep = step_fn(em, eo), CudaGraphStep(step_fn(gm, go))
    for _epoch in range(2):
        for _ in range(6):
            x = td.Tensor(torch.randn(32, 1, 28, 28, device="cuda"))
            y = td.Tensor(torch.randint(0, 10, (32,), device="cuda"))
            torch.testing.assert_close(gstep(x, y).data, estep(x, y).data, rtol=1e-4, atol=1e-5)
        for o in (eo, go):
            o.param_groups[0]["lr"] *= 0.5
        gstep.recapture()
    for pe, pg in zip(em.parameters(), gm.parameters()):
        torch.testing.assert_close(pg.data, pe.data, rtol=1e-4, atol=1e-5)
    assert go.state[next(iter(gm.parameters()))]["step"].item() == 12
