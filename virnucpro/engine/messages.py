"""The messages between the manager and a spawned worker, one small dataclass each.

Each worker has its own duplex pipe (a killed worker can corrupt nothing but its own channel).
From the worker, in order: :class:`Ready` (or :class:`LoadFailed`, then it exits); then for
each file, :class:`BatchesDone` at most every ``worker.PROGRESS_INTERVAL_S`` and :class:`FileDone`;
:class:`LogRecord` for each log line, any time; :class:`DeviceFailed` when its GPU failed beyond
recovery (then it exits with ``worker.EXIT_DEVICE_FAILURE``; the manager gives its file to
another worker). From the manager: :class:`Embed` and :class:`Stop`.

Nothing heavy is imported here: a spawned worker imports this module before CUDA_VISIBLE_DEVICES is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from virnucpro.engine.embed_file import FileResult


# -- worker -> manager --------------------------------------------------------------------
@dataclass(frozen=True)
class Ready:
    """The model is loaded: its stage name, identity and how it embeds (embed_file.run_settings)."""

    stage: str
    identity: dict[str, str]
    settings: dict[str, Any]


@dataclass(frozen=True)
class LoadFailed:
    """The model could not be loaded: one line (errors.model_load_failure) and the traceback."""

    message: str
    traceback: str


@dataclass(frozen=True)
class BatchesDone:
    """Sequences and tokens embedded since the last report."""

    sequences: int
    tokens: int


@dataclass(frozen=True)
class LogRecord:
    """One log record of the worker (the manager logs it, so a live display stays intact)."""

    level: int
    text: str


@dataclass(frozen=True)
class FileDone:
    """Item ``index`` is finished (written, kept on resume, or failed: see the result)."""

    index: int
    result: FileResult


@dataclass(frozen=True)
class DeviceFailed:
    """The device failed beyond recovery; the worker exits."""

    message: str


WorkerMessage = Ready | LoadFailed | BatchesDone | LogRecord | FileDone | DeviceFailed


# -- manager -> worker --------------------------------------------------------------------
@dataclass(frozen=True)
class Embed:
    """Embed the FASTA file ``path`` (item ``index``) into ``out_path``; ``resume``: keep a current output."""

    index: int
    path: str
    out_path: Path
    resume: bool


@dataclass(frozen=True)
class Stop:
    """No more work: exit."""
