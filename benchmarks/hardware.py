"""The machine: CPU model, cores, torch build and threads, and its measured fp32 GEMM rate."""

from __future__ import annotations

import os
import platform
import time

import torch

# (m, k, n): square sizes plus the shapes of the t6 models' layers with ~2k-token batches.
GEMM_SIZES = ((1024, 1024, 1024), (2048, 2048, 2048), (2048, 320, 1280), (2048, 1280, 320))
QUICK_GEMM_SIZES = ((512, 512, 512), (1024, 1024, 1024))


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """CPU, cores, torch version and build, linear backend, threads and the load when measured."""
    from virnucpro.embeddings.cpu_linear import cpu_linear_backend
    from virnucpro.embeddings.precision import cpu_has_native_bf16

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return {
        "cpu": cpu_model(),
        "cores": cores,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "blas": "MKL" if torch.backends.mkl.is_available() else "other",
        "onednn": torch.backends.mkldnn.is_available(),
        "linear_backend": cpu_linear_backend(),  # what the embedders' fp32 linears run on here
        "cpu_bf16": cpu_has_native_bf16(),  # AVX512_BF16 / AMX: --precision auto may choose bf16
        "python": platform.python_version(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def _best_seconds(run, repeats: int) -> float:
    run()  # warm-up (allocations, oneDNN primitive creation)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def measure_gemm(sizes=GEMM_SIZES, repeats: int = 5) -> dict:
    """Best-of-``repeats`` fp32 GEMM rate (GFLOP/s, wall clock, default threads) per size and backend.

    Backends: ``torch.matmul`` (the BLAS torch links, MKL in the official wheels) and oneDNN's
    fp32 linear (what our embedders use on AVX-512 CPUs, see virnucpro.embeddings.cpu_linear). The
    machine's rate is the best over both and all sizes: the limit to compare model work with.
    """
    from virnucpro.embeddings.cpu_linear import onednn_usable

    generator = torch.Generator().manual_seed(0)
    rows = []
    with torch.inference_mode():
        for m, k, n in sizes:
            a = torch.randn(m, k, generator=generator)
            b = torch.randn(k, n, generator=generator)
            flops = 2.0 * m * k * n
            seconds = _best_seconds(lambda: torch.matmul(a, b), repeats)
            row = {"m": m, "k": k, "n": n, "matmul_gflops": flops / seconds / 1e9}
            if onednn_usable():
                weight = b.t().contiguous()
                onednn = torch.ops.mkldnn._linear_pointwise
                seconds = _best_seconds(lambda: onednn(a, weight, None, "none", [], ""), repeats)
                row["onednn_gflops"] = flops / seconds / 1e9
            rows.append({key: round(value, 1) if isinstance(value, float) else value for key, value in row.items()})
    matmul = max(row["matmul_gflops"] for row in rows)
    onednn = max((row.get("onednn_gflops", 0.0) for row in rows), default=0.0)
    return {
        "sizes": rows,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "matmul_gflops": matmul,
        "onednn_gflops": onednn or None,
        "best_gflops": max(matmul, onednn),
    }
