"""Which devices the workers use, decided in the parent without initialising CUDA there.

Each worker is told a device string ("cpu" or "cuda:0") and an environment to apply before
anything in it touches CUDA: on GPUs, ``CUDA_VISIBLE_DEVICES`` is set to the one GPU the
worker owns, so every worker sees its GPU as ``cuda:0``. The parent only counts GPUs (through
NVML when torch offers it, which creates no CUDA context) and then spawns; it never creates
a CUDA context, so spawned workers start from a clean state.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from virnucpro.errors import InputError
from virnucpro.log import get_logger

log = get_logger("engine.devices")

CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class WorkerSlot:
    """Where one worker runs: ``device`` for the model and ``env`` to apply before CUDA starts."""

    device: str
    env: dict[str, str] = field(default_factory=dict)
    threads: int | None = None  # CPU threads for torch (CPU workers sharing the machine)

    @property
    def label(self) -> str:
        """Human name: ``cpu`` or ``gpu <CUDA_VISIBLE_DEVICES entry>``."""
        if self.device == "cpu":
            return "cpu"
        return f"gpu {self.env.get(CUDA_VISIBLE_DEVICES, '?')}"


def cuda_built() -> bool:
    """True when the installed torch was built with CUDA (or ROCm)."""
    import torch

    return torch.version.cuda is not None or getattr(torch.version, "hip", None) is not None


def visible_gpu_count() -> int:
    """GPUs visible under the current CUDA_VISIBLE_DEVICES, without creating a CUDA context."""
    if not cuda_built():
        return 0
    import torch

    count = -1
    nvml_count = getattr(torch.cuda, "_device_count_nvml", None)
    if nvml_count is not None:
        try:
            count = int(nvml_count())
        except Exception:  # noqa: BLE001  (no NVML: fall back to the runtime's count)
            count = -1
    if count < 0:
        count = torch.cuda.device_count()  # cudaGetDeviceCount: no context, torch stays uninitialised
    return max(count, 0)


def physical_gpu_count() -> int | None:
    """All GPUs of the machine, ignoring CUDA_VISIBLE_DEVICES (None when unknown)."""
    if not cuda_built():
        return 0
    import torch

    raw = getattr(torch.cuda, "_raw_device_count_nvml", None)
    if raw is None:
        return None
    try:
        count = int(raw())
    except Exception:  # noqa: BLE001
        return None
    return count if count >= 0 else None


def parse_gpus(gpus: str) -> list[str]:
    """``"0,2"`` -> ``["0", "2"]``; one-line InputError for anything else."""
    entries = [entry.strip() for entry in gpus.split(",")]
    if not gpus.strip() or any(not entry.isdigit() for entry in entries):
        raise InputError(f"--gpus {gpus!r}: expected comma-separated GPU indices such as 0,2")
    if len(set(entries)) != len(entries):
        raise InputError(f"--gpus {gpus!r}: a GPU is listed twice")
    return [str(int(entry)) for entry in entries]


def _visible_entries(count: int) -> list[str]:
    """The CUDA_VISIBLE_DEVICES entries of the ``count`` visible GPUs (indices, UUIDs or MIG ids)."""
    visible = os.environ.get(CUDA_VISIBLE_DEVICES)
    if visible is None:
        return [str(i) for i in range(count)]
    entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
    return entries[:count]


_said: set[str] = set()  # device messages already logged by this process


def _log_once(level: int, message: str) -> None:
    """Log ``message`` the first time only: ``predict`` plans workers twice (DNA, then ESM-2)."""
    if message not in _said:
        _said.add(message)
        log.log(level, message)


def select_gpus(gpus: str | None) -> list[str]:
    """The CUDA_VISIBLE_DEVICES entry of every GPU to use; empty means CPU (logged once per process)."""
    if gpus is not None:
        selected = parse_gpus(gpus)
        if not cuda_built():
            _log_once(logging.WARNING, f"no CUDA support in this torch build: --gpus {gpus} ignored, running on the CPU")
            return []
        total = physical_gpu_count()
        if total is not None:
            missing = [entry for entry in selected if int(entry) >= total]
            if total == 0:
                _log_once(logging.WARNING, f"no CUDA GPU found: --gpus {gpus} ignored, running on the CPU")
                return []
            if missing:
                raise InputError(f"--gpus {gpus}: no GPU {', '.join(missing)} on this machine ({total} found)")
        return selected
    count = visible_gpu_count()
    if count == 0:
        _log_once(logging.INFO, "no CUDA GPU visible: running on the CPU")
        return []
    return _visible_entries(count)


def plan_workers(gpus: str | None, workers: int | None, limit: int | None = None) -> list[WorkerSlot]:
    """One slot per worker: default one per selected GPU, 1 on CPU; ``workers`` cycles over the GPUs.

    ``limit`` caps the number of workers (no more workers than work items); on the CPU, the
    number of cores does too (a worker without a core of its own only costs memory).
    """
    if workers is not None and workers < 1:
        raise InputError(f"--workers {workers}: must be at least 1")
    selected = select_gpus(gpus)
    wanted = workers or len(selected) or 1
    count = min(wanted, max(1, limit)) if limit is not None else wanted
    if count < wanted and limit:
        log.info("%d worker(s), not %d: never more workers than files (%d)", count, wanted, limit)
    if not selected and count > _cpu_count():
        log.warning("%d worker(s), not %d: never more CPU workers than cores (%d)", _cpu_count(), count, _cpu_count())
        count = _cpu_count()
    if selected:
        return [WorkerSlot("cuda:0", {CUDA_VISIBLE_DEVICES: selected[i % len(selected)]}) for i in range(count)]
    if count == 1 or any(name in os.environ for name in _THREAD_VARIABLES):  # the user's thread setting wins
        return [WorkerSlot("cpu") for _ in range(count)]
    threads = max(1, _cpu_count() // count)
    return [WorkerSlot("cpu", {name: str(threads) for name in _THREAD_VARIABLES}, threads) for _ in range(count)]


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
