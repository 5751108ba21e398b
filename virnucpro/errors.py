"""Errors that reach the user as one line and an exit code, never as a traceback."""

from __future__ import annotations

from virnucpro.contracts import EXIT_FAILED


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


MODEL_UNUSABLE = "the model cannot be used"  # modules/local/embed_*/main.nf look for these words


def model_load_failure(error: BaseException) -> str:
    """Why a worker has no model, as one line.

    A ModelError is the model's own problem (unreadable files, an unknown name, a download that
    failed): ``the model cannot be used: ...``, which no retry on another machine cures. Anything
    else (out of GPU or host memory, a device error) may be this machine's: ``could not load the
    model: <Type>: ...``.
    """
    text = describe(error, typed=True, limit=1000)
    return f"{MODEL_UNUSABLE}: {text}" if isinstance(error, ModelError) else f"could not load the model: {text}"
