"""Errors from the device a model runs on, told apart by what they mean for the work.

- Out of memory: retry with smaller batches (:func:`is_out_of_memory`, :func:`release_cached_memory`).
- A device failure (illegal memory access, launch failure, device-side assert, ECC error): the
  GPU's context is unusable for the rest of the process, so the worker must stop and its file
  go to another worker (:func:`is_device_failure`, :class:`DeviceFailure`).
"""

from __future__ import annotations

import gc
import sys

# CUDA/HIP; torch's CPU allocator; cuBLAS failing to allocate its workspace.
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "cublas_status_alloc_failed")


def is_out_of_memory(error: BaseException) -> bool:
    """torch.OutOfMemoryError, or a RuntimeError whose message says the memory ran out."""
    if type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(message in text for message in _OOM_MESSAGES)


# Sticky CUDA/HIP errors and library failures that leave the context unusable (lower case).
_DEVICE_FAILURE_MESSAGES = (
    "cuda error",
    "hip error",
    "illegal memory access",
    "unspecified launch failure",
    "device-side assert",
    "uncorrectable ecc",
    "cublas_status_execution_failed",
    "cudnn_status_execution_failed",
)


class DeviceFailure(RuntimeError):
    """The device failed in a way the process cannot recover from; the message is one line."""


def is_device_failure(error: BaseException) -> bool:
    """An accelerator error (torch.AcceleratorError, or a CUDA/HIP RuntimeError) other than out of memory."""
    if is_out_of_memory(error):
        return False
    if type(error).__name__ == "AcceleratorError":
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(message in text for message in _DEVICE_FAILURE_MESSAGES)


def release_cached_memory(collect: bool = False) -> None:
    """Give cached CUDA blocks back (no-op without CUDA); ``collect`` first frees unreachable objects."""
    if collect:
        gc.collect()
    torch = sys.modules.get("torch")  # never imports torch, never initialises CUDA
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
