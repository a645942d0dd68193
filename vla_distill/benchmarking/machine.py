"""Facts about the machine a benchmark ran on: CPU, library versions, dense matmul rate."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import time

import numpy as np

# CPU flags that decide which kernels ONNX Runtime and PyTorch can use.
RELEVANT_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "sve")
PACKAGES = ("vla-distill", "torch", "transformers", "onnx", "onnxruntime", "numpy", "mujoco", "gymnasium")


def cpu_info() -> dict:
    """Return the CPU model name, the relevant instruction-set flags and the core count."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() in ("flags", "Features"):
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "flags": [f for f in RELEVANT_FLAGS if f in flags], "logical_cores": os.cpu_count(), "machine": platform.machine()}


def library_versions() -> dict:
    """Return the installed versions of the packages that affect the measurements."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def single_core_matmul_gflops(size: int = 256, repeats: int = 20) -> dict:
    """Measure the dense float32 matmul rate of one core, in GFLOP/s (median over repeats).

    Uses torch with one intra-op thread when torch is installed, else numpy (whose BLAS may
    use several threads; the result then records that backend).
    """
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        torch = None
    if torch is not None:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        t = torch.from_numpy(a)
        backend, multiply = "torch, 1 thread", lambda: torch.mm(t, t)
    else:
        backend, multiply = "numpy", lambda: a @ a
    for _ in range(3):
        multiply()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        multiply()
        rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
    if torch is not None:
        torch.set_num_threads(previous)
    return {"gflops": statistics.median(rates), "size": size, "backend": backend}
