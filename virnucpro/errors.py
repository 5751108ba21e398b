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
