"""Every exception of the package, and the one line an error reads as.

The hierarchy::

    BaseException
    ├── Terminated        SIGTERM (a scheduler's limit, Nextflow stopping a task): unwinds like Ctrl-C
    └── Exception
        ├── VirnucproError    a problem the user can fix: one line and an exit code, never a traceback
        │   ├── InputError    unreadable or invalid input (the message names the file and record)
        │   ├── ModelError    a model or checkpoint that cannot be found, loaded or trusted
        │   └── NoGpuError    a GPU was required (--require-gpu) and none is visible or became free
        └── RuntimeError
            └── DeviceFailure the GPU failed for good: its worker stops, its file goes to another

:func:`error_line` turns any error into the one line a user reads, on the console and in
failed_files.txt alike. Errors from the device a model runs on are told apart by what they
mean for the work: out of memory (retry with smaller batches: :func:`is_out_of_memory`,
:func:`release_cached_memory`) or a device failure (illegal memory access, launch failure,
device-side assert, ECC error: :func:`is_device_failure`), after which the GPU's context is
unusable for the rest of the process.
"""

from __future__ import annotations

import gc
import sys

from virnucpro.contracts import EXIT_FAILED, MODEL_UNUSABLE


class VirnucproError(Exception):
    """A problem the user can fix (bad input, bad option, missing model).

    The CLI prints ``str(error)`` on one line and exits with ``exit_code``.
    """

    exit_code: int = EXIT_FAILED

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InputError(VirnucproError):
    """Unreadable or invalid input sequences; the message names the file (and record)."""


class ModelError(VirnucproError):
    """A model or checkpoint that cannot be found, loaded or trusted."""


class NoGpuError(VirnucproError):
    """A GPU was required (``--require-gpu``) and none is visible or none became free."""


class DeviceFailure(RuntimeError):
    """The device failed in a way the process cannot recover from; the message is one line."""


class Terminated(BaseException):
    """SIGTERM (a scheduler's time limit, Nextflow stopping a task): unwind like Ctrl-C, so
    workers are stopped, temporary files removed and the output directory released. Not a
    KeyboardInterrupt, which click would turn into Abort with a blank line of its own."""

    received = False  # set by the CLI's handler: a SIGTERM ends the run as terminated even if
    # some library code it interrupted turned the exception into an ordinary error


def describe(error: BaseException, *, typed: bool = False, limit: int = 500) -> str:
    """An exception as one line for a message: whitespace collapsed, at most ``limit`` characters.

    With ``typed``, errors that are not ours are prefixed by their type name
    (``RuntimeError: ...``); an exception without a message gives its type name.
    """
    text = " ".join(str(error).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    if not text:
        return type(error).__name__
    if typed and not isinstance(error, VirnucproError):
        return f"{type(error).__name__}: {text}"
    return text


def interruption_behind(error: BaseException) -> BaseException | None:
    """The interruption (Ctrl-C, SIGTERM, an exit) that ``error`` was raised during, if any.

    Cleanup code can fail while an interruption unwinds through it: a zip file closed while the
    signal left a member half open raises ``ValueError``, whose context is the interruption. Code
    that turns errors into data (a failed file, a fallback, a one-line message) must let such an
    interruption go on instead of recording it as an ordinary error. ``GeneratorExit`` (a
    generator closed) is not an interruption.
    """
    pending: list[BaseException | None] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if not isinstance(current, (Exception, GeneratorExit)):
            return current
        pending += [current.__cause__, current.__context__]
    return None


def raise_interruption_behind(error: BaseException) -> None:
    """Raise the interruption behind ``error`` (:func:`interruption_behind`), if there is one."""
    interruption = interruption_behind(error)
    if interruption is not None:
        raise interruption


def error_line(error: BaseException) -> str:
    """The one line a user reads for ``error``, on the console and in failed_files.txt alike.

    Ours as they are; a file the system refused as ``{file}: {reason}``; text that is not text
    as such; anything else as its message, prefixed by its type unless it is a ValueError
    (whose message says what was wrong with the data).
    """
    if isinstance(error, VirnucproError):
        return " ".join(str(error).split())
    if isinstance(error, UnicodeDecodeError):
        return "binary content, not a FASTA text file"
    if isinstance(error, OSError) and error.strerror:  # reading an input, writing an output
        reason = "no such file" if isinstance(error, FileNotFoundError) else error.strerror
        return f"{error.filename}: {reason}" if error.filename else reason
    return describe(error, typed=not isinstance(error, ValueError))


def model_load_failure(error: BaseException) -> str:
    """Why a worker has no model, as one line.

    A ModelError is the model's own problem (unreadable files, an unknown name, a download that
    failed): ``the model cannot be used: ...``, which no retry on another machine cures. Anything
    else (out of GPU or host memory, a device error) may be this machine's: ``could not load the
    model: <Type>: ...``.
    """
    text = describe(error, typed=True, limit=1000)
    return f"{MODEL_UNUSABLE}: {text}" if isinstance(error, ModelError) else f"could not load the model: {text}"


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
