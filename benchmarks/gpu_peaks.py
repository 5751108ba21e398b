"""The two limits every GPU figure is given against.

(a) the **datasheet** dense bf16 Tensor Core peak of the board that ran it, read from the
device's exact name and power limit (:func:`board_peak`; the table below, NVIDIA's datasheets,
dense = half the "with sparsity" figure), and (b) the best bf16 matrix-product rate **measured**
on the same GPU in the same run (:func:`measure_bf16_gemm`: large cuBLAS products).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class BoardPeak:
    """A board's datasheet dense bf16 peak, and how the board was told apart."""

    board: str
    dense_bf16_tflops: float
    source: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# (words the device name must contain, power limit in W at least / at most (None: any), peak). First match wins.
_DATASHEETS: tuple[tuple[tuple[str, ...], float | None, float | None, BoardPeak], ...] = (
    (("H200", "NVL"), None, None, BoardPeak("H200 NVL", 835.5, "NVIDIA H200 datasheet: NVL, BF16 1,671 TFLOPS with sparsity, up to 600 W")),
    (("H200",), None, 600.0, BoardPeak("H200 NVL", 835.5, "NVIDIA H200 datasheet: NVL (power limit <= 600 W), BF16 1,671 TFLOPS with sparsity")),
    (("H200",), 600.0, None, BoardPeak("H200 SXM", 989.4, "NVIDIA H200 datasheet: SXM, BF16 1,979 TFLOPS with sparsity, up to 700 W")),
    (("H100", "NVL"), None, None, BoardPeak("H100 NVL", 835.5, "NVIDIA H100 datasheet: NVL, BF16 1,671 TFLOPS with sparsity")),
    (("H100", "PCIe"), None, None, BoardPeak("H100 PCIe", 756.5, "NVIDIA H100 datasheet: PCIe, BF16 1,513 TFLOPS with sparsity")),
    (("H100",), None, None, BoardPeak("H100 SXM", 989.4, "NVIDIA H100 datasheet: SXM, BF16 1,979 TFLOPS with sparsity")),
    (("A100",), None, None, BoardPeak("A100", 312.0, "NVIDIA A100 datasheet: BF16 312 TFLOPS dense")),
    (("L40S",), None, None, BoardPeak("L40S", 362.05, "NVIDIA L40S datasheet: BF16 362.05 TFLOPS dense")),
    (("RTX 4090",), None, None, BoardPeak("GeForce RTX 4090", 165.2, "Ada Lovelace whitepaper: BF16 with FP32 accumulate, dense")),
)


def board_peak(name: str, power_limit_w: float | None) -> BoardPeak | None:
    """The datasheet peak of the board called ``name`` (as nvidia-smi says it) with this power limit.

    An H200 without "NVL" in its name is told apart by its power limit (SXM: up to 700 W, NVL: up
    to 600 W); when the limit is unknown the SXM figure is used and the source says so. None for a
    board not in the table.
    """
    for words, at_least, at_most, peak in _DATASHEETS:
        if not all(word.lower() in name.lower() for word in words):
            continue
        if power_limit_w is None and (at_least is not None or at_most is not None):
            if at_least is None:  # the NVL rule needs the limit: leave it to the SXM row, said below
                continue
            return BoardPeak(peak.board, peak.dense_bf16_tflops, peak.source + "; power limit unknown: SXM assumed")
        if power_limit_w is not None and at_least is not None and power_limit_w <= at_least:
            continue
        if power_limit_w is not None and at_most is not None and power_limit_w > at_most:
            continue
        return peak
    return None


def gpu_name_and_power_limit(index: int | None = None) -> tuple[str | None, float | None]:
    """Name and power limit (W) of a visible GPU from nvidia-smi, without initialising CUDA in this
    process; (None, None) where nvidia-smi cannot tell."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
    query = ["nvidia-smi", "--query-gpu=name,power.limit", "--format=csv,noheader,nounits", "-i", str(index or visible)]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True)
        name, power = (part.strip() for part in done.stdout.strip().splitlines()[0].rsplit(",", 1))
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return None, None
    try:
        return name, float(power)
    except ValueError:  # "[N/A]"
        return name, None


def measure_bf16_gemm(device: str, sizes: tuple[int, ...] = (8192, 16384), repeats: int = 5) -> dict[str, object]:
    """The best rate of square bf16 products ``n x n @ n x n`` on ``device`` (cuBLAS on a GPU), in TFLOP/s."""
    rates: dict[str, float] = {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        torch.matmul(a, b)  # warm-up: cuBLAS heuristics, clocks
        best = float("inf")
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            torch.matmul(a, b)
            _sync(device)
            best = min(best, time.perf_counter() - start)
        rates[str(n)] = 2 * n**3 / best / 1e12
        del a, b
    return {"tflops_by_size": rates, "best_tflops": max(rates.values()), "dtype": "bf16"}


def fractions(tflop_per_s: float, datasheet_tflops: float | None, gemm_tflops: float | None) -> dict[str, float | None]:
    """A rate as fractions of the datasheet peak and of the measured GEMM rate (None where unknown)."""
    return {
        "fraction_of_datasheet": tflop_per_s / datasheet_tflops if datasheet_tflops else None,
        "fraction_of_gemm": tflop_per_s / gemm_tflops if gemm_tflops else None,
    }


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
