"""The queue manager: spawns the workers, hands out work, watches for deaths, collects results.

Every worker is a spawned process with its own duplex pipe, created here. The manager keeps
the pending items (largest first) and gives the next one to whichever worker is idle, so it
always knows which item each worker holds. A worker that dies holding an item has that item
re-queued once (at the front, for another worker); a second death on the same item records
the file as failed. The workers' records, and the rule that stops the run on too many failed
workers, are in :mod:`virnucpro.engine.state`.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import time
from collections import deque
from multiprocessing.connection import wait
from typing import Any

from virnucpro.embeddings.base import ModelSpec
from virnucpro.engine import messages as msg
from virnucpro.engine.plan import WorkItem
from virnucpro.engine.progress import Progress
from virnucpro.engine.state import RunOutcome, WorkerRecord, WorkerState, exit_description
from virnucpro.engine.worker import worker_main
from virnucpro.log import get_logger

log = get_logger("engine")

MAX_DEATHS_PER_ITEM = 2  # an item is re-queued once; the second death fails the file
_POLL_S = 0.25
_STOP_GRACE_S = 10.0


class Manager:
    """Runs ``items`` on one spawned worker per record of ``workers``; see the module docstring."""

    def __init__(
        self,
        items: list[WorkItem],
        spec: ModelSpec,
        token_budget: int | None,
        workers: list[WorkerRecord],
        progress: Progress,
        resume: bool = False,
    ) -> None:
        self.pending: deque[WorkItem] = deque(items)
        self.spec = spec
        self.token_budget = token_budget
        self.progress = progress
        self.resume = resume
        self.workers = workers
        self.outcome = RunOutcome(workers=self.workers)
        self._context = multiprocessing.get_context("spawn")
        self._log_level = logging.getLogger("virnucpro").getEffectiveLevel()

    # -- main loop ----------------------------------------------------------------------
    def run(self) -> RunOutcome:
        """Process every item (or stop on a systemic failure); workers are always cleaned up."""
        try:
            self._start_workers()
            while self.pending or any(w.state == WorkerState.PROCESSING for w in self.workers):
                self._receive(_POLL_S)
                self._reap_dead()
                if self.outcome.stop_if_systemic():
                    break
                self._start_deferred()
                self._dispatch()
                self.progress.tick()
        finally:
            self._shutdown()
        return self.outcome

    def _start_workers(self) -> None:
        """One worker first, the rest once it loaded its model: a model download happens once,
        not in every worker at once."""
        self._spawn(self.workers[0])

    def _start_deferred(self) -> None:
        if any(w.process is None for w in self.workers) and self.workers[0].state != WorkerState.STARTING:
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
        log.debug("worker %d (%s) started, pid %s", worker.number, worker.label, process.pid)

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

    def _handle(self, worker: WorkerRecord, message: msg.WorkerMessage) -> None:
        match message:
            case msg.Ready(stage, identity, settings):
                self.outcome.worker_ready(worker, stage, identity, settings)
                log.debug("worker %d (%s) loaded the model", worker.number, worker.label)
            case msg.LoadFailed(text, trace):
                log.debug("worker %d (%s) could not load the model:\n%s", worker.number, worker.label, trace)
                self._fail(worker, text)
            case msg.BatchesDone(sequences, tokens):
                worker.add_progress(sequences, tokens)
            case msg.LogRecord(level, text):
                log.log(level, "worker %d (%s): %s", worker.number, worker.label, text)
            case msg.DeviceFailed(text):
                where = f" while embedding {worker.item.path}" if worker.item else ""
                self._fail(worker, f"device failure{where}: {text}")
            case msg.FileDone(index, result):
                self.outcome.file_done(worker, index, result)

    # -- deaths ----------------------------------------------------------------------------
    def _reap_dead(self) -> None:
        for worker in self.workers:
            process = worker.process
            if process is None or process.is_alive() or worker.state in (WorkerState.FAILED, WorkerState.COMPLETED):
                continue
            self._drain(worker)  # messages sent just before dying still count
            if worker.state in (WorkerState.FAILED, WorkerState.COMPLETED):
                continue
            where = f" while embedding {worker.item.path}" if worker.item else ""
            self._fail(worker, f"{exit_description(process.exitcode)}{where}")

    def _fail(self, worker: WorkerRecord, cause: str) -> None:
        """Mark ``worker`` failed and give its item to another worker (once)."""
        item = worker.fail(cause)
        log.warning("worker %d (%s) failed: %s", worker.number, worker.label, cause)
        if item is None:
            return
        item.deaths += 1
        if item.deaths < MAX_DEATHS_PER_ITEM:
            self.outcome.requeued += 1
            self.pending.appendleft(item)
            log.info("%s re-queued for another worker", item.path)
        else:
            self.outcome.lost[item.index] = f"worker died twice while embedding this file (last: {cause})"

    # -- dispatch and shutdown ---------------------------------------------------------------
    def _dispatch(self) -> None:
        for worker in self.workers:
            if worker.state != WorkerState.IDLE or worker.conn is None:
                continue
            if not self.pending:
                break
            item = self.pending.popleft()
            try:
                worker.conn.send(msg.Embed(item.index, item.path, item.out_path, self.resume))
            except OSError:  # died before taking it: the item goes back untouched
                self.pending.appendleft(item)
                continue
            worker.take(item)

    def _shutdown(self) -> None:
        """Stop idle workers politely, terminate the rest, and make sure every process is gone."""
        for worker in self.workers:
            if worker.process is None:
                continue
            if worker.state == WorkerState.IDLE and worker.conn is not None:
                try:
                    worker.conn.send(msg.Stop())
                    worker.end(WorkerState.COMPLETED)
                    continue
                except OSError:
                    pass
            if worker.process.is_alive():
                worker.process.terminate()
                if worker.state != WorkerState.FAILED:
                    worker.end(WorkerState.STOPPED)
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
