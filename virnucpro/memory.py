"""Running out of memory: recognising it, and giving cached device memory back."""

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


def release_cached_memory(collect: bool = False) -> None:
    """Give cached CUDA blocks back (no-op without CUDA); ``collect`` first frees unreachable objects."""
    if collect:
        gc.collect()
    torch = sys.modules.get("torch")  # never imports torch, never initialises CUDA
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
