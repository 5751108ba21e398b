"""The state of an embedding run: one record per worker, the run's outcome, and the rules on them.

Both runners (spawned workers, :mod:`virnucpro.engine.manager`; one CPU worker in this process,
:mod:`virnucpro.engine.inprocess`) keep their books here, and the progress display and
summary.json's statistics read them. A worker goes starting -> idle <-> processing ->
completed, or failed (it could not load its model, its device failed, or it died); a worker
still busy when the run is stopped ends stopped. When :data:`SYSTEMIC_FAILED_WORKERS` or more
workers have failed, or all of them, the run stops: a systemic failure.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from enum import Enum
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from virnucpro.embeddings.store import META_PRECISION
from virnucpro.engine.devices import WorkerSlot
from virnucpro.engine.plan import WorkItem
from virnucpro.log import get_logger

if TYPE_CHECKING:
    from virnucpro.engine.embed_file import FileResult

log = get_logger("engine")

SYSTEMIC_FAILED_WORKERS = 3  # this many failed workers (or all of them) stop the run


class WorkerState(str, Enum):
    """Where a worker is in its life; the value is what the progress display shows."""

    STARTING = "starting"
    IDLE = "idle"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"  # terminated while busy when the run ended

    def __str__(self) -> str:
        return self.value


@dataclass
class WorkerRecord:
    """One worker: where it runs, its state, the item it holds and what it has done so far."""

    number: int
    slot: WorkerSlot
    process: BaseProcess | None = None  # spawned workers only
    conn: Connection | None = None
    state: WorkerState = WorkerState.STARTING
    item: WorkItem | None = None
    cause: str | None = None  # why it failed
    files: int = 0
    sequences: int = 0
    tokens: int = 0
    busy_s: float = 0.0  # seconds its finished files took
    failures: int = 0
    cost_done: int = 0  # scheduling cost (residues) of the files it embedded ...
    cost_skipped: int = 0  # ... and of those it found up to date (--resume)
    busy_since: float | None = None  # time.monotonic() when its current file started
    precision: str | None = None  # what the loaded model runs in (fp32, bf16, fp16)
    parity_checks: list[dict] | None = None  # --precision auto on a GPU: what was measured
    token_budget: int | None = None  # tokens per batch it starts each file with
    layout: str | None = None  # ESM-2's batches: packed or padded
    first_file_s: float | None = None  # its first embedded file, which carries the process's
    first_file_tokens: int = 0  # one-time start (on a GPU: kernels loaded on first use)

    @property
    def label(self) -> str:
        """Its device's name: ``cpu`` or ``gpu N``."""
        return self.slot.label

    def model_loaded(self, identity: dict[str, str], settings: dict[str, Any]) -> None:
        """The worker's model is loaded: note how it embeds (embed_file.run_settings); the worker is idle."""
        self.precision = identity.get(META_PRECISION)
        self.parity_checks = settings["parity_checks"]
        self.token_budget, self.layout = settings["token_budget"], settings["layout"]
        self.state = WorkerState.IDLE

    def take(self, item: WorkItem) -> None:
        """The worker starts on ``item``."""
        self.state, self.item, self.busy_since = WorkerState.PROCESSING, item, time.monotonic()

    def add_progress(self, sequences: int, tokens: int) -> None:
        """Count a batch the worker embedded."""
        self.sequences += sequences
        self.tokens += tokens

    def file_done(self, result: FileResult) -> None:
        """Count a finished file (the item it held); the worker is idle again."""
        cost = self.item.cost if self.item is not None else 0
        if result.skipped:
            self.cost_skipped += cost
        else:
            self.cost_done += cost
        if self.first_file_s is None and not result.skipped:
            self.first_file_s, self.first_file_tokens = result.seconds, result.tokens
        self.files += 1
        self.busy_s += result.seconds
        self.failures += len(result.failures)
        self.item, self.busy_since, self.state = None, None, WorkerState.IDLE

    def fail(self, cause: str) -> WorkItem | None:
        """The worker failed for ``cause``; returns the item it held (None if idle)."""
        item = self.item
        self.state, self.cause, self.item, self.busy_since = WorkerState.FAILED, cause, None, None
        return item

    def end(self, state: WorkerState) -> None:
        """The run is over for this worker: ``COMPLETED`` (asked to stop when idle) or ``STOPPED``."""
        self.state, self.busy_since = state, None

    def tokens_per_s(self, now: float) -> float:
        """Tokens per second of busy time, the current file included."""
        busy = self.busy_s + (now - self.busy_since if self.busy_since is not None else 0.0)
        return self.tokens / busy if busy > 0 else 0.0


@dataclass
class RunOutcome:
    """What a runner hands back to run_embedding: results by item, lost items, the workers."""

    results: dict[int, FileResult] = field(default_factory=dict)  # by item index
    lost: dict[int, str] = field(default_factory=dict)  # item index -> why (died twice)
    systemic: str | None = None  # the systemic-failure message, when the run stopped
    stage: str | None = None  # the embedder's stage name, once a worker loaded
    requeued: int = 0
    workers: list[WorkerRecord] = field(default_factory=list)

    def worker_ready(self, worker: WorkerRecord, stage: str, identity: dict[str, str], settings: dict[str, Any]) -> None:
        """``worker`` loaded its model (see WorkerRecord.model_loaded)."""
        self.stage = self.stage or stage
        worker.model_loaded(identity, settings)

    def file_done(self, worker: WorkerRecord, index: int, result: FileResult) -> None:
        """``worker`` finished item ``index`` with ``result``."""
        self.results[index] = result
        worker.file_done(result)

    def stop_if_systemic(self) -> bool:
        """Set (and log) the systemic-failure message when the failed workers call for one."""
        self.systemic = systemic_failure(self.workers)
        if self.systemic:
            log.error("%s", self.systemic)
        return self.systemic is not None


def systemic_failure(workers: list[WorkerRecord]) -> str | None:
    """The stop message when 3 or more workers (or all of them) have failed, else None."""
    failed = [w for w in workers if w.state == WorkerState.FAILED]
    if len(failed) < SYSTEMIC_FAILED_WORKERS and len(failed) < len(workers):
        return None
    causes = "; ".join(f"worker {w.number} ({w.label}): {w.cause}" for w in failed)
    return f"systemic failure: {len(failed)} of {len(workers)} workers failed, stopping ({causes})"


def exit_description(exitcode: int | None) -> str:
    """``-9`` -> ``killed by SIGKILL``; ``3`` -> ``exited with code 3``."""
    if exitcode is None:
        return "stopped responding"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of host memory?)" if -exitcode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with code {exitcode}"
