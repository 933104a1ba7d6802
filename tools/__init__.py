"""Benchmark, profiling and GPU-resource tools (run as ``python tools/<name>.py``; see benchmarks/README.md)."""
