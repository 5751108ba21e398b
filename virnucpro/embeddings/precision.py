"""Which floating-point type a model runs in, from ``--precision`` and the device.

``auto`` on a CUDA device tries bf16 then fp16 (compute capability 8.0 or newer: Ampere,
Hopper, ...) or fp16 alone (older GPUs) and keeps the first that matches fp32 on a probe set,
else fp32 (:mod:`virnucpro.embeddings.parity`). The CPU always runs in fp32, whatever is
asked: a request for bf16/fp16 there is overridden, with one log line per request.
"""

from __future__ import annotations

import torch

from virnucpro.contracts import PRECISIONS
from virnucpro.errors import VirnucproError
from virnucpro.log import get_logger

log = get_logger("precision")

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_overridden_logged: set[str] = set()


def is_cuda(device: str | torch.device) -> bool:
    """True for ``cuda`` / ``cuda:N`` devices."""
    return torch.device(device).type == "cuda"


def resolve_dtype(precision: str, device: str) -> torch.dtype:
    """The torch dtype for ``precision`` (auto, fp32, bf16, fp16) on ``device`` ("cpu", "cuda:N")."""
    if precision not in PRECISIONS:
        raise VirnucproError(f"unknown precision {precision!r} (choose one of {', '.join(PRECISIONS)})")
    if not is_cuda(device):
        if precision not in ("auto", "fp32") and precision not in _overridden_logged:
            _overridden_logged.add(precision)
            log.info("--precision %s ignored on the CPU: running in fp32", precision)
        return torch.float32
    if precision == "auto":
        major, _minor = torch.cuda.get_device_capability(torch.device(device))
        return torch.bfloat16 if major >= 8 else torch.float16
    return _DTYPES[precision]


def parity_candidates(precision: str, device: str) -> list[torch.dtype]:
    """Half precisions ``--precision auto`` tries on ``device``, best first; [] when nothing is checked
    (the CPU, or an explicit precision: the user's choice is used as given)."""
    if precision != "auto" or not is_cuda(device):
        return []
    major, _minor = torch.cuda.get_device_capability(torch.device(device))
    return [torch.bfloat16, torch.float16] if major >= 8 else [torch.float16]


def dtype_name(dtype: torch.dtype) -> str:
    """Short name used in embedding-file metadata: fp32, bf16 or fp16."""
    return {v: k for k, v in _DTYPES.items()}[dtype]
