"""One GPU per task on a shared node: claim a free GPU with a per-GPU lock file.

Nextflow's local executor (before 26.10) starts every GPU task with all GPUs visible, so
concurrent tasks would all land on GPU 0. A task that claims its GPU takes an exclusive
``flock`` on ``LOCK_DIR/gpu-<entry>.lock`` for one of the visible GPUs, waits while every GPU
is claimed, and then sees only that GPU (``CUDA_VISIBLE_DEVICES``). The lock belongs to the
process: it ends with it, however it ends (a SIGKILL too), so a crashed task never keeps a GPU.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from virnucpro.engine.devices import CUDA_VISIBLE_DEVICES
from virnucpro.errors import NoGpuError
from virnucpro.log import get_logger

log = get_logger("engine.gpu_claim")

_POLL_SECONDS = 2.0


@dataclass
class GpuClaim:
    """A claimed GPU: its CUDA_VISIBLE_DEVICES entry and the open lock that holds it."""

    entry: str
    lock_path: Path
    _fd: int

    def release(self) -> None:
        """Give the GPU back (also done by the operating system when the process ends)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def require_gpus(entries: list[str]) -> None:
    """Refuse to go on without a GPU: one line naming what the task sees."""
    if not entries:
        visible = os.environ.get(CUDA_VISIBLE_DEVICES)
        seen = f"CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "CUDA_VISIBLE_DEVICES unset"
        raise NoGpuError(
            f"a GPU was asked for (--require-gpu; the pipeline's -profile gpu / --use_gpu) but this task sees none "
            f"on {os.uname().nodename} ({seen}); run on a GPU node or without -profile gpu"
        )


def _lock_name(entry: str) -> str:
    return "gpu-" + re.sub(r"[^A-Za-z0-9._-]", "_", entry) + ".lock"


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def claim_gpu(entries: list[str], lock_dir: Path, timeout: float | None = None) -> GpuClaim:
    """Claim one of ``entries`` (CUDA_VISIBLE_DEVICES entries), waiting while all are claimed.

    ``timeout`` (seconds) bounds the wait; None waits as long as it takes (the scheduler's
    time limit still applies).
    """
    require_gpus(entries)
    lock_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    said = False
    while True:
        for entry in entries:
            path = lock_dir / _lock_name(entry)
            fd = _try_lock(path)
            if fd is not None:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()} {os.uname().nodename}\n".encode())
                log.info("claimed GPU %s (%s)", entry, path)
                return GpuClaim(entry, path, fd)
        if timeout is not None and time.monotonic() - start >= timeout:
            raise NoGpuError(f"no GPU of {', '.join(entries)} became free within {timeout:g} s ({lock_dir})")
        if not said:
            log.info("all %d GPU(s) are claimed by other tasks (%s): waiting for one", len(entries), lock_dir)
            said = True
        time.sleep(_POLL_SECONDS)


def claim_and_expose(entries: list[str], lock_dir: Path, timeout: float | None = None) -> GpuClaim:
    """:func:`claim_gpu`, then make the claimed GPU the only one this process and its workers see."""
    claim = claim_gpu(entries, lock_dir, timeout)
    os.environ[CUDA_VISIBLE_DEVICES] = claim.entry
    return claim
