"""One CPU worker in the calling process: no spawn, so no second torch import and model load.

Used by run_embedding when the plan is a single CPU worker (a laptop, a CPU-only task) unless
the caller asks for isolation. Same results, statistics and failure accounting as the
spawned path; only a crash of the process itself is not survivable here.
"""

from __future__ import annotations

from pathlib import Path

from virnucpro.device_errors import DeviceFailure
from virnucpro.embeddings.base import Embedder, ModelSpec
from virnucpro.engine.cpu_batches import batches_side_by_side
from virnucpro.engine.devices import WorkerSlot
from virnucpro.engine.embed_file import embed_file, run_settings
from virnucpro.engine.manager import COMPLETED, FAILED, PROCESSING, ManagerOutcome, WorkerRecord, systemic_failure
from virnucpro.engine.plan import WorkItem
from virnucpro.engine.progress import Progress
from virnucpro.errors import model_load_failure, raise_interruption_behind
from virnucpro.log import get_logger

log = get_logger("engine")


class InProcessRunner:
    """Runs ``items`` one after another with the model loaded once in this process."""

    def __init__(
        self,
        items: list[WorkItem],
        spec: ModelSpec,
        token_budget: int | None,
        slot: WorkerSlot,
        progress: Progress,
        resume: bool = False,
    ) -> None:
        self.items, self.spec, self.token_budget = items, spec, token_budget
        self.progress, self.resume = progress, resume
        self.worker = WorkerRecord(0, slot)
        self.outcome = ManagerOutcome(workers=[self.worker])

    def _batch_done(self, sequences: int, tokens: int) -> None:
        self.worker.add_progress(sequences, tokens)
        self.progress.add(0, sequences, tokens)

    def run(self) -> ManagerOutcome:
        """Load the model, embed every item; a model that cannot load is a systemic failure."""
        worker = self.worker
        try:
            embedder = self.spec.load(worker.slot.device)
        except Exception as error:  # noqa: BLE001  (reported as the systemic failure, as from a worker)
            raise_interruption_behind(error)
            worker.state, worker.cause = FAILED, model_load_failure(error)
            self.progress.set_state(0, FAILED)
            self.outcome.systemic = systemic_failure([worker])
            log.error("%s", self.outcome.systemic)
            return self.outcome
        self.outcome.stage = embedder.stage
        worker.model_loaded(embedder.identity(), run_settings(embedder, self.token_budget))
        with batches_side_by_side(worker.slot.device, worker.slot.threads) as parallel:
            return self._embed_items(embedder, parallel)

    def _embed_items(self, embedder: Embedder, parallel: int) -> ManagerOutcome:
        """Embed every item, ``parallel`` batches at a time."""
        worker = self.worker
        for item in self.items:
            worker.state, worker.item = PROCESSING, item
            self.progress.set_state(0, PROCESSING, Path(item.path).name)
            try:
                result = embed_file(
                    item.path,
                    embedder,
                    item.out_path,
                    self.token_budget,
                    skip_if_current=self.resume,
                    on_batch=self._batch_done,
                    parallel_batches=parallel,
                )
            except DeviceFailure as failure:  # the only worker cannot go on: a systemic failure
                worker.state, worker.cause = FAILED, f"device failure while embedding {item.path}: {failure}"
                self.progress.set_state(0, FAILED)
                self.outcome.systemic = systemic_failure([worker])
                log.error("%s", self.outcome.systemic)
                return self.outcome
            self.outcome.results[item.index] = result
            worker.file_done(result)
            self.progress.file_done(0, len(result.failures), item.cost, skipped=result.skipped)
            self.progress.tick()
        worker.state = COMPLETED
        self.progress.set_state(0, COMPLETED)
        return self.outcome
