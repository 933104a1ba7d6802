"""The benchmark shape sweep and its analytic cost model, shared by bench.py and kernel_report.py.

Every case is one kernel family at one shape. ``flops`` and ``min_bytes`` are lower bounds for an
ideal implementation (each input read once, each output written once, nothing re-read), so the
roofline time ``max(flops / peak_flops, bytes / peak_bandwidth)`` is what no kernel can beat.
Modes: ``fwd``, ``bwd`` (gradients w.r.t. every input and parameter), ``fwd+bwd``, and ``step``
for optimizers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: peak dense throughput (TFLOP/s) and memory bandwidth (TB/s) per device. The first key that is a
#: substring of torch.cuda.get_device_name() wins (so "H100 PCIe" must come before "H100").
PEAKS: dict[str, dict[str, float]] = {
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "tbps": 2.0},
    "H100": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "tbps": 3.35},  # SXM5 (the targets' reference)
    "H200": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "tbps": 4.8},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "tbps": 2.039},
}
REFERENCE_DEVICE = "H100"

#: bytes per element of each benchmark precision; tf32 keeps fp32 storage
DTYPE_BYTES = {"fp32": 4, "tf32": 4, "bf16": 2}
FAMILIES = ("linear", "cross_entropy", "softmax", "conv2d", "max_pool2d", "sgd", "adam")
#: families whose math is a GEMM: tf32 is a separate precision for them and nothing else
GEMM_FAMILIES = ("linear", "conv2d")


def peaks_for(device_name: str | None) -> tuple[str, dict[str, float]]:
    """(matched key, peaks) for a device name; the H100 SXM figures when nothing matches."""
    for key, p in PEAKS.items():
        if device_name and key in device_name:
            return key, p
    return REFERENCE_DEVICE, PEAKS[REFERENCE_DEVICE]


@dataclass(frozen=True)
class Case:
    family: str
    name: str  # what the shape is (mnist-mlp1, resnet-conv3x3, ...)
    params: dict = field(hash=False)
    #: which precisions this case runs at
    dtypes: tuple[str, ...] = ("fp32", "tf32", "bf16")
    #: part of the --quick subset on a GPU
    quick: bool = False
    #: small enough for the CPU interpreter smoke test (seconds, not minutes)
    tiny: bool = False

    @property
    def shape(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.params.items() if k != "act")

    @property
    def modes(self) -> tuple[str, ...]:
        return ("step",) if self.family in ("sgd", "adam") else ("fwd", "bwd", "fwd+bwd")


def _conv_out(h: int, r: int, stride: int, pad: int) -> int:
    return (h + 2 * pad - r) // stride + 1


def _pool_out(h: int, k: int, stride: int, pad: int) -> int:
    return (h + 2 * pad - k) // stride + 1


def _c(family, name, dtypes=None, quick=False, tiny=False, **params):
    if dtypes is None:
        dtypes = ("fp32", "tf32", "bf16") if family in GEMM_FAMILIES else ("fp32", "bf16")
    return Case(family, name, params, tuple(dtypes), quick, tiny)


#: the sweep: MNIST-sized (what the CLI trains) and large (where a GPU kernel shows its throughput)
CASES: list[Case] = [
    # linear: M x K input, N outputs, fused activation; torch runs F.linear then the activation
    _c("linear", "tiny", ("fp32",), tiny=True, M=33, N=17, K=40, act="relu"),
    _c("linear", "mnist-mlp1", quick=True, M=128, N=512, K=784, act="relu"),
    _c("linear", "mnist-mlp2", M=128, N=10, K=512, act="none"),
    _c("linear", "large-4096^3", quick=True, M=4096, N=4096, K=4096, act="gelu"),
    _c("linear", "large-8192x4096x4096", M=8192, N=4096, K=4096, act="relu"),
    # cross-entropy over C classes, mean reduction, int64 targets
    _c("cross_entropy", "tiny", ("fp32",), tiny=True, N=37, C=11),
    _c("cross_entropy", "mnist", quick=True, N=128, C=10),
    _c("cross_entropy", "imagenet", N=4096, C=1000),
    _c("cross_entropy", "large-16k x 32k", quick=True, N=16384, C=32768),
    # softmax over the last dim
    _c("softmax", "tiny", ("fp32",), tiny=True, N=37, C=11),
    _c("softmax", "mnist", N=128, C=10),
    _c("softmax", "attention-4k", quick=True, N=4096, C=4096),
    _c("softmax", "large-16k x 32k", N=16384, C=32768),
    # conv2d: N x C x H x W input, K filters R x S, stride, padding
    _c("conv2d", "tiny", ("fp32",), tiny=True, N=2, C=3, H=9, W=9, K=4, R=3, S=3, stride=1, pad=1),
    _c("conv2d", "lenet-conv1", quick=True, N=128, C=1, H=28, W=28, K=6, R=5, S=5, stride=1, pad=2),
    _c("conv2d", "lenet-conv2", N=128, C=6, H=14, W=14, K=16, R=5, S=5, stride=1, pad=0),
    _c("conv2d", "resnet-56x56x64", quick=True, N=64, C=64, H=56, W=56, K=64, R=3, S=3, stride=1, pad=1),
    _c("conv2d", "resnet-28x28x128", N=64, C=128, H=28, W=28, K=128, R=3, S=3, stride=1, pad=1),
    # max-pool: kernel k, stride s, padding p
    _c("max_pool2d", "tiny", ("fp32",), tiny=True, N=2, C=3, H=9, W=9, k=2, s=2, p=0),
    _c("max_pool2d", "lenet-pool", quick=True, N=128, C=6, H=28, W=28, k=2, s=2, p=0),
    _c("max_pool2d", "resnet-stem", quick=True, N=64, C=64, H=112, W=112, k=3, s=2, p=1),
    # optimizer step over n fp32 parameters (one tensor)
    _c("sgd", "tiny", ("fp32",), tiny=True, n=1000),
    _c("sgd", "mnist-mlp", ("fp32",), quick=True, n=407_050),
    _c("sgd", "large-100M", ("fp32",), n=100_000_000),
    _c("adam", "tiny", ("fp32",), tiny=True, n=1000),
    _c("adam", "mnist-mlp", ("fp32",), quick=True, n=407_050),
    _c("adam", "large-100M", ("fp32",), n=100_000_000),
]


def select(families=None, quick: bool = False, tiny: bool = False, name_filter: str | None = None) -> list[Case]:
    """The cases to run: ``tiny`` for the CPU interpreter, ``quick`` for a short GPU run, else all
    non-tiny cases; optionally only some families and names containing ``name_filter``."""
    out = []
    for c in CASES:
        if families and c.family not in families:
            continue
        if tiny != c.tiny or (quick and not c.quick and not tiny):
            continue
        if name_filter and name_filter not in c.name:
            continue
        out.append(c)
    return out


# ------------------------------------------------------------------------------------------------
# Cost model
# ------------------------------------------------------------------------------------------------


def flops(case: Case, mode: str) -> float:
    """Useful floating-point operations (a multiply-add counts 2); 0 for memory-bound families."""
    p = case.params
    if case.family == "linear":
        fwd = 2.0 * p["M"] * p["N"] * p["K"]
        return {"fwd": fwd, "bwd": 2 * fwd, "fwd+bwd": 3 * fwd}[mode]  # bwd: dX and dW GEMMs
    if case.family == "conv2d":
        P, Q = _conv_out(p["H"], p["R"], p["stride"], p["pad"]), _conv_out(p["W"], p["S"], p["stride"], p["pad"])
        fwd = 2.0 * p["N"] * p["K"] * P * Q * p["C"] * p["R"] * p["S"]
        return {"fwd": fwd, "bwd": 2 * fwd, "fwd+bwd": 3 * fwd}[mode]
    return 0.0


def min_bytes(case: Case, mode: str, dtype: str) -> float:
    """Minimum DRAM traffic in bytes: every input read once and every output written once."""
    b = DTYPE_BYTES[dtype]
    p = case.params
    f = case.family
    if f == "linear":
        M, N, K = p["M"], p["N"], p["K"]
        x, w, y, bias = M * K, N * K, M * N, N
        fwd = x + w + bias + y
        bwd = y + y + x + w + x + w + bias  # read dy, saved y/z, x, w; write dx, dw, db
        total = x + w + bias + y + y + x + w + bias  # fused ideal: read x, w, b, dy; write y, dx, dw, db
        return b * {"fwd": fwd, "bwd": bwd, "fwd+bwd": total}[mode]
    if f == "conv2d":
        P, Q = _conv_out(p["H"], p["R"], p["stride"], p["pad"]), _conv_out(p["W"], p["S"], p["stride"], p["pad"])
        x, w = p["N"] * p["C"] * p["H"] * p["W"], p["K"] * p["C"] * p["R"] * p["S"]
        y, bias = p["N"] * p["K"] * P * Q, p["K"]
        fwd = x + w + bias + y
        bwd = y + x + w + x + w + bias
        return b * {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + y + x + w + bias}[mode]
    if f == "cross_entropy":
        N, C = p["N"], p["C"]
        # logits in the benchmark dtype, targets int64; the scalar loss is negligible
        fwd = N * C * b + N * 8
        bwd = N * C * b + N * 8 + N * C * b  # recompute from logits, write dlogits
        return {"fwd": fwd, "bwd": bwd, "fwd+bwd": bwd}[mode]  # fused: read once, write dlogits once
    if f == "softmax":
        n = p["N"] * p["C"]
        return b * {"fwd": 2 * n, "bwd": 3 * n, "fwd+bwd": 5 * n}[mode]  # bwd reads y, dy; writes dx
    if f == "max_pool2d":
        x = p["N"] * p["C"] * p["H"] * p["W"]
        y = p["N"] * p["C"] * _pool_out(p["H"], p["k"], p["s"], p["p"]) * _pool_out(p["W"], p["k"], p["s"], p["p"])
        return b * {"fwd": x + y, "bwd": y + x + x, "fwd+bwd": x + y + y + x}[mode]  # bwd: dy, x; write dx
    if f == "sgd":
        return 4.0 * 3 * p["n"]  # read p, g; write p (fp32 master weights)
    if f == "adam":
        return 4.0 * 7 * p["n"]  # read p, g, m, v; write p, m, v
    raise KeyError(f"unknown family {f!r}")


def roofline_ms(case: Case, mode: str, dtype: str, peaks: dict[str, float] | None = None) -> tuple[float, str]:
    """(lower-bound milliseconds, "compute" or "memory") on the device with ``peaks``."""
    peaks = peaks or PEAKS[REFERENCE_DEVICE]
    t_flop = flops(case, mode) / (peaks[dtype] * 1e12) if flops(case, mode) else 0.0
    t_mem = min_bytes(case, mode, dtype) / (peaks["tbps"] * 1e12)
    return 1e3 * max(t_flop, t_mem), ("compute" if t_flop > t_mem else "memory")


def numel_label(n: float) -> str:
    """1234567 -> '1.23M' for tables."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


__all__ = ["Case", "CASES", "PEAKS", "DTYPE_BYTES", "FAMILIES", "GEMM_FAMILIES", "select", "flops", "min_bytes",
           "roofline_ms", "peaks_for", "numel_label"]
