"""One CPU worker in the calling process: no spawn, so no second torch import and model load.

Used by run_embedding when the plan is a single CPU worker (a laptop, a CPU-only task) unless
the caller asks for isolation. Same results, statistics and failure accounting as the
spawned path (the same books, :mod:`virnucpro.engine.state`); only a crash of the process
itself is not survivable here.
"""

from __future__ import annotations

from virnucpro.embeddings.base import Embedder, ModelSpec
from virnucpro.engine.cpu_batches import batches_side_by_side
from virnucpro.engine.embed_file import embed_file, run_settings
from virnucpro.engine.plan import WorkItem
from virnucpro.engine.progress import Progress
from virnucpro.engine.state import RunOutcome, WorkerRecord, WorkerState
from virnucpro.errors import DeviceFailure, model_load_failure, raise_interruption_behind


class InProcessRunner:
    """Runs ``items`` one after another with the model loaded once in this process."""

    def __init__(
        self,
        items: list[WorkItem],
        spec: ModelSpec,
        token_budget: int | None,
        worker: WorkerRecord,
        progress: Progress,
        resume: bool = False,
    ) -> None:
        self.items, self.spec, self.token_budget = items, spec, token_budget
        self.progress, self.resume = progress, resume
        self.worker = worker
        self.outcome = RunOutcome(workers=[worker])

    def run(self) -> RunOutcome:
        """Load the model, embed every item; a model that cannot load is a systemic failure."""
        worker = self.worker
        try:
            embedder = self.spec.load(worker.slot.device)
        except Exception as error:  # noqa: BLE001  (reported as the systemic failure, as from a worker)
            raise_interruption_behind(error)
            return self._failed(model_load_failure(error))
        self.outcome.worker_ready(worker, embedder.stage, embedder.identity(), run_settings(embedder, self.token_budget))
        with batches_side_by_side(worker.slot.device, worker.slot.threads) as parallel:
            return self._embed_items(embedder, parallel)

    def _embed_items(self, embedder: Embedder, parallel: int) -> RunOutcome:
        """Embed every item, ``parallel`` batches at a time."""
        worker = self.worker
        for item in self.items:
            worker.take(item)
            try:
                result = embed_file(
                    item.path,
                    embedder,
                    item.out_path,
                    self.token_budget,
                    skip_if_current=self.resume,
                    on_batch=worker.add_progress,
                    parallel_batches=parallel,
                )
            except DeviceFailure as failure:  # the only worker cannot go on: a systemic failure
                return self._failed(f"device failure while embedding {item.path}: {failure}")
            self.outcome.file_done(worker, item.index, result)
            self.progress.tick()
        worker.end(WorkerState.COMPLETED)
        return self.outcome

    def _failed(self, cause: str) -> RunOutcome:
        """The only worker failed for ``cause``: the run stops (a systemic failure)."""
        self.worker.fail(cause)
        self.outcome.stop_if_systemic()
        return self.outcome
