"""The queue manager: spawns the workers, hands out work, watches for deaths, collects results.

Every worker is a spawned process with its own duplex pipe, created here. The manager keeps
the pending items (largest first) and gives the next one to whichever worker is idle, so it
always knows which item each worker holds. Worker states: starting -> idle <-> processing ->
completed, or failed (could not load its model, or died). A worker that dies holding an item
has that item re-queued once (at the front, for another worker); a second death on the same
item records the file as failed. When 3 or more workers have failed, or all of them, the run
stops: a systemic failure.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import pickle
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from virnucpro.embeddings.base import ModelSpec
from virnucpro.engine.devices import WorkerSlot
from virnucpro.engine.embed_file import FileResult
from virnucpro.engine.plan import WorkItem
from virnucpro.engine.progress import Progress
from virnucpro.engine.worker import worker_main
from virnucpro.log import get_logger

log = get_logger("engine")

STARTING, IDLE, PROCESSING, COMPLETED, FAILED = "starting", "idle", "processing", "completed", "failed"
SYSTEMIC_FAILED_WORKERS = 3  # this many failed workers (or all of them) stop the run
MAX_DEATHS_PER_ITEM = 2  # an item is re-queued once; the second death fails the file
_POLL_S = 0.25
_STOP_GRACE_S = 10.0


@dataclass
class WorkerRecord:
    """The manager's view of one worker."""

    number: int
    slot: WorkerSlot
    process: BaseProcess | None = None
    conn: Connection | None = None
    state: str = STARTING
    item: WorkItem | None = None
    cause: str | None = None  # why it failed
    files: int = 0
    sequences: int = 0
    tokens: int = 0
    busy_s: float = 0.0
    failures: int = 0
    precision: str | None = None  # what the loaded model runs in (fp32, bf16, fp16)
    parity_checks: list[dict] | None = None  # --precision auto on a GPU: what was measured
    token_budget: int | None = None  # tokens per batch it starts each file with
    layout: str | None = None  # ESM-2's batches: packed or padded
    first_file_s: float | None = None  # its first embedded file, which carries the process's
    first_file_tokens: int = 0  # one-time start (on a GPU: kernels loaded on first use, ~5 s)

    def model_loaded(self, identity: dict[str, str], settings: dict[str, Any]) -> None:
        """The worker's model is loaded: note how it embeds (embed_file.run_settings); the worker is idle."""
        self.precision = identity.get("precision")
        self.parity_checks = settings["parity_checks"]
        self.token_budget, self.layout = settings["token_budget"], settings["layout"]
        self.state = IDLE

    def add_progress(self, sequences: int, tokens: int) -> None:
        """Count a batch the worker embedded."""
        self.sequences += sequences
        self.tokens += tokens

    def file_done(self, result: FileResult) -> None:
        """Count a finished file; the worker is idle again."""
        self.item = None
        if self.first_file_s is None and not result.skipped:
            self.first_file_s, self.first_file_tokens = result.seconds, result.tokens
        self.files += 1
        self.busy_s += result.seconds
        self.failures += len(result.failures)
        self.state = IDLE


@dataclass
class ManagerOutcome:
    """What the manager hands back to run_embedding."""

    results: dict[int, FileResult] = field(default_factory=dict)  # by item index
    lost: dict[int, str] = field(default_factory=dict)  # item index -> why (died twice)
    systemic: str | None = None  # the systemic-failure message, when the run stopped
    stage: str | None = None  # the embedder's stage name, once a worker loaded
    requeued: int = 0
    workers: list[WorkerRecord] = field(default_factory=list)


class Manager:
    """Runs ``items`` on one spawned worker per ``slots`` entry; see the module docstring."""

    def __init__(
        self,
        items: list[WorkItem],
        spec: ModelSpec,
        token_budget: int | None,
        slots: list[WorkerSlot],
        progress: Progress,
        resume: bool = False,
    ) -> None:
        self.pending: deque[WorkItem] = deque(items)
        self.spec = spec
        self.token_budget = token_budget
        self.progress = progress
        self.resume = resume
        self.workers = [WorkerRecord(number, slot) for number, slot in enumerate(slots)]
        self.outcome = ManagerOutcome(workers=self.workers)
        self._context = multiprocessing.get_context("spawn")
        self._log_level = logging.getLogger("virnucpro").getEffectiveLevel()

    # -- main loop ----------------------------------------------------------------------
    def run(self) -> ManagerOutcome:
        """Process every item (or stop on a systemic failure); workers are always cleaned up."""
        try:
            self._start_workers()
            while self.pending or any(w.state == PROCESSING for w in self.workers):
                self._receive(_POLL_S)
                self._reap_dead()
                self.outcome.systemic = self._systemic_failure()
                if self.outcome.systemic:
                    log.error("%s", self.outcome.systemic)
                    break
                self._start_deferred()
                self._dispatch()
                self.progress.tick()
        finally:
            self._shutdown()
        return self.outcome

    def _start_workers(self) -> None:
        """All at once when the spec can prefetch its files; else one first, the rest once it loaded.

        Loading one model first means a model download happens once, not in every worker at once.
        """
        prefetch = getattr(self.spec, "prefetch", None)
        if callable(prefetch):
            prefetch()
            for worker in self.workers:
                self._spawn(worker)
        else:
            self._spawn(self.workers[0])

    def _start_deferred(self) -> None:
        if any(w.process is None for w in self.workers) and self.workers[0].state != STARTING:
            for worker in self.workers:
                if worker.process is None:
                    self._spawn(worker)

    def _spawn(self, worker: WorkerRecord) -> None:
        parent_end, child_end = self._context.Pipe(duplex=True)
        slot = worker.slot
        process = self._context.Process(
            target=worker_main,
            # the spec travels pickled: the worker unpickles it (importing the model's module) only
            # once its environment is set, so nothing can touch CUDA before CUDA_VISIBLE_DEVICES
            args=(slot.device, slot.env, slot.threads, pickle.dumps(self.spec), self.token_budget, child_end,
                  self._log_level),
            name=f"virnucpro-worker-{worker.number}",
            daemon=True,
        )
        process.start()
        child_end.close()  # so the worker's death reads as end-of-file here
        worker.process, worker.conn = process, parent_end
        self.progress.set_state(worker.number, STARTING)
        log.debug("worker %d (%s) started, pid %s", worker.number, slot.label, process.pid)

    # -- messages -------------------------------------------------------------------------
    def _receive(self, timeout: float) -> None:
        """Wait up to ``timeout`` for messages or deaths, then handle every message available."""
        live = [w for w in self.workers if w.conn is not None]
        if not live:
            time.sleep(timeout)
            return
        objects: list[Any] = [w.conn for w in live] + [w.process.sentinel for w in live if w.process is not None]
        wait(objects, timeout)
        for worker in live:
            self._drain(worker)

    def _drain(self, worker: WorkerRecord) -> None:
        """Handle every message waiting on ``worker``'s pipe; a broken pipe is closed."""
        conn = worker.conn
        try:
            while conn is not None and conn.poll():
                self._handle(worker, conn.recv())
        except (EOFError, OSError):
            conn.close()
            worker.conn = None

    def _handle(self, worker: WorkerRecord, message: tuple) -> None:
        kind = message[0]
        if kind == "ready":
            _, stage, fingerprint, settings = message
            self.outcome.stage = self.outcome.stage or stage
            worker.model_loaded(json.loads(fingerprint), settings)
            self.progress.set_state(worker.number, IDLE)
            log.debug("worker %d (%s) loaded the model", worker.number, worker.slot.label)
        elif kind == "load_failed":
            _, text, trace = message
            log.debug("worker %d (%s) could not load the model:\n%s", worker.number, worker.slot.label, trace)
            self._fail(worker, text)
        elif kind == "progress":
            _, sequences, tokens = message
            worker.add_progress(sequences, tokens)
            self.progress.add(worker.number, sequences, tokens)
        elif kind == "log":
            _, level, text = message
            log.log(level, "worker %d (%s): %s", worker.number, worker.slot.label, text)
        elif kind == "device_failed":
            _, text = message
            where = f" while embedding {worker.item.path}" if worker.item else ""
            self._fail(worker, f"device failure{where}: {text}")
        elif kind == "done":
            _, index, result = message
            self.outcome.results[index] = result
            cost = worker.item.cost if worker.item is not None else 0
            worker.file_done(result)
            self.progress.file_done(worker.number, len(result.failures), cost, skipped=result.skipped)
            self.progress.set_state(worker.number, IDLE)

    # -- deaths and systemic failure ----------------------------------------------------------
    def _reap_dead(self) -> None:
        for worker in self.workers:
            process = worker.process
            if process is None or process.is_alive() or worker.state in (FAILED, COMPLETED):
                continue
            self._drain(worker)  # messages sent just before dying still count
            if worker.state in (FAILED, COMPLETED):
                continue
            where = f" while embedding {worker.item.path}" if worker.item else ""
            self._fail(worker, f"{exit_description(process.exitcode)}{where}")

    def _fail(self, worker: WorkerRecord, cause: str) -> None:
        """Mark ``worker`` failed and give its item to another worker (once)."""
        worker.state, worker.cause = FAILED, cause
        self.progress.set_state(worker.number, FAILED)
        log.warning("worker %d (%s) failed: %s", worker.number, worker.slot.label, cause)
        item, worker.item = worker.item, None
        if item is None:
            return
        item.deaths += 1
        if item.deaths < MAX_DEATHS_PER_ITEM:
            self.outcome.requeued += 1
            self.pending.appendleft(item)
            log.info("%s re-queued for another worker", item.path)
        else:
            self.outcome.lost[item.index] = f"worker died twice while embedding this file (last: {cause})"

    def _systemic_failure(self) -> str | None:
        return systemic_failure(self.workers)

    # -- dispatch and shutdown ---------------------------------------------------------------
    def _dispatch(self) -> None:
        for worker in self.workers:
            if worker.state != IDLE or worker.conn is None:
                continue
            if not self.pending:
                break
            item = self.pending.popleft()
            try:
                worker.conn.send(("embed", item.index, item.path, item.out_path, self.resume))
            except OSError:  # died before taking it: the item goes back untouched
                self.pending.appendleft(item)
                continue
            worker.state, worker.item = PROCESSING, item
            self.progress.set_state(worker.number, PROCESSING, Path(item.path).name)

    def _shutdown(self) -> None:
        """Stop idle workers politely, terminate the rest, and make sure every process is gone."""
        for worker in self.workers:
            if worker.process is None:
                continue
            if worker.state == IDLE and worker.conn is not None:
                try:
                    worker.conn.send(("stop",))
                    worker.state = COMPLETED
                    self.progress.set_state(worker.number, COMPLETED)
                    continue
                except OSError:
                    pass
            if worker.process.is_alive():
                worker.process.terminate()
                if worker.state != FAILED:
                    self.progress.set_state(worker.number, "stopped")
        deadline = time.monotonic() + _STOP_GRACE_S
        for worker in self.workers:
            if worker.process is not None:
                worker.process.join(max(0.0, deadline - time.monotonic()))
                if worker.process.is_alive():
                    worker.process.kill()
                    worker.process.join()
            if worker.conn is not None:
                worker.conn.close()
                worker.conn = None


def systemic_failure(workers: list[WorkerRecord]) -> str | None:
    """The stop message when 3 or more workers (or all of them) have failed, else None."""
    failed = [w for w in workers if w.state == FAILED]
    if len(failed) < SYSTEMIC_FAILED_WORKERS and len(failed) < len(workers):
        return None
    causes = "; ".join(f"worker {w.number} ({w.slot.label}): {w.cause}" for w in failed)
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
