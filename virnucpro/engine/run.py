"""``run_embedding``: embed many FASTA files on every selected device, one output per file."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virnucpro.contracts import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    FAILED_FILES,
    Failure,
    write_failures,
)
from virnucpro.embeddings.base import ModelSpec
from virnucpro.engine.devices import WorkerSlot, plan_workers
from virnucpro.engine.embed_file import FileResult
from virnucpro.engine.inprocess import InProcessRunner
from virnucpro.engine.manager import Manager
from virnucpro.engine.plan import WorkItem, plan_items
from virnucpro.engine.progress import Progress
from virnucpro.engine.state import RunOutcome, WorkerRecord, WorkerState
from virnucpro.log import get_logger
from virnucpro.outdir import make_outdir
from virnucpro.summary_json import log_outcome

log = get_logger("engine")


@dataclass
class EngineResult:
    """Outputs by input path (as given), failure records, exit code (0/2/1) and statistics."""

    outputs: dict[str, Path]
    failures: list[Failure]
    exit_code: int
    stats: dict[str, Any] = field(default_factory=dict)
    message: str | None = None  # the systemic-failure message, when the run stopped


def run_embedding(
    files: Sequence[str],
    spec: ModelSpec,
    outdir: Path,
    token_budget: int | None,
    gpus: str | None = None,
    workers: int | None = None,
    resume: bool = False,
    progress: str = "auto",
) -> EngineResult:
    """Embed every file into ``outdir/<stem>.npz`` with spawned workers loading ``spec`` once each.

    ``spec`` says what each worker loads (``EsmSpec``, ``DnaSpec``; any picklable ModelSpec).
    ``outdir/failed_files.txt`` lists the failures (and is removed when there are none).
    A single CPU worker runs in this process (:func:`runs_in_process`).
    """
    start = time.perf_counter()
    outdir = make_outdir(outdir)
    items = plan_items(list(files), outdir)
    slots = plan_workers(gpus, workers, limit=len(items))  # never more workers than files
    for item in items:
        _remove_stale_temporaries(item.out_path)
    records = [WorkerRecord(number, slot) for number, slot in enumerate(slots)]
    log.info("embedding %d file(s) with %s on %d worker(s): %s",
             len(items), spec, len(slots), ", ".join(record.label for record in records))
    display = Progress(progress, spec.stage, len(items), records, total_cost=sum(item.cost for item in items))
    try:
        if not items:  # nothing to embed: load no model
            outcome = RunOutcome()
        elif runs_in_process(slots):
            outcome = InProcessRunner(items, spec, token_budget, records[0], display, resume=resume).run()
        else:
            outcome = Manager(items, spec, token_budget, records, display, resume=resume).run()
    finally:
        display.close()
    stage = outcome.stage or spec.stage
    outputs, failures = _collect(items, outcome, stage)
    _remove_outputs_not_made(items, outputs)
    write_failures(outdir / FAILED_FILES, failures)
    exit_code = _exit_code(outcome, outputs, failures)
    stats = _stats(items, outcome, failures, stage, time.perf_counter() - start)
    _log_summary(stats)
    if not outcome.systemic:  # a systemic failure was logged as such already
        log_outcome(stage, exit_code, failures, outdir / FAILED_FILES)
    return EngineResult(outputs, failures, exit_code, stats, outcome.systemic)


def runs_in_process(slots: list[WorkerSlot]) -> bool:
    """A single CPU worker runs in this process: seconds faster than spawning one (no second torch
    import and model load); only a crash of the process itself is then not survivable."""
    return len(slots) == 1 and slots[0].device == "cpu"


def _remove_stale_temporaries(out_path: Path) -> None:
    """Temporary files an interrupted run left beside ``out_path`` (never under the final name)."""
    for stale in out_path.parent.glob(f".{out_path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def _remove_outputs_not_made(items: list[WorkItem], outputs: dict[str, Path]) -> None:
    """An earlier run's output of a file this run did not embed (it failed, or the run stopped) goes:
    it was made from other input or another model, and would be read as this run's."""
    for item in items:
        if item.path not in outputs and item.out_path.exists():
            log.info("%s: removed the output of an earlier run (%s was not embedded now)", item.out_path, item.path)
            item.out_path.unlink()


def _collect(items: list[WorkItem], outcome: RunOutcome, stage: str) -> tuple[dict[str, Path], list[Failure]]:
    """Outputs and failures in command-line order, whatever order the workers finished in."""
    outputs: dict[str, Path] = {}
    failures: list[Failure] = []
    for item in sorted(items, key=lambda item: item.index):
        result = outcome.results.get(item.index)
        if result is not None:
            failures.extend(result.failures)
            if result.output is not None:
                outputs[item.path] = result.output
        elif item.index in outcome.lost:
            failures.append(Failure(item.path, stage, outcome.lost[item.index]))
        else:
            failures.append(Failure(item.path, stage, f"not embedded: {outcome.systemic or 'the run stopped'}"))
    return outputs, failures


def _exit_code(outcome: RunOutcome, outputs: dict[str, Path], failures: list[Failure]) -> int:
    if outcome.systemic:
        return EXIT_FAILED
    if not failures:
        return EXIT_OK
    usable = any(result.embedded for result in outcome.results.values() if result.output is not None)
    return EXIT_PARTIAL if outputs and usable else EXIT_FAILED


def _stats(items: list[WorkItem], outcome: RunOutcome, failures: list[Failure], stage: str, wall_s: float) -> dict:
    """Counts for summary.json: totals, per worker and per device (sequences/s, tokens/s)."""
    results: list[FileResult] = list(outcome.results.values())
    devices: dict[str, dict[str, Any]] = {}
    for worker in outcome.workers:
        device = devices.setdefault(
            worker.label,
            {"workers": 0, "files": 0, "sequences": 0, "tokens": 0, "busy_s": 0.0, "failures": 0,
             "sequences_per_s": 0.0, "tokens_per_s": 0.0, "first_file_s": None, "tokens_per_s_after_first_file": None,
             "failed_workers": 0, "precision": None, "token_budget": None, "layout": None, "parity_checks": None},
        )
        device["workers"] += 1
        for key in ("precision", "token_budget", "layout", "parity_checks"):  # a worker that failed to load has none
            device[key] = device[key] or getattr(worker, key)
        device["failed_workers"] += worker.state == WorkerState.FAILED
        for key in ("files", "sequences", "tokens", "failures"):
            device[key] += getattr(worker, key)
        device["busy_s"] = round(device["busy_s"] + worker.busy_s, 3)
        if worker.busy_s > 0:  # workers sharing a device add their rates
            device["sequences_per_s"] = round(device["sequences_per_s"] + worker.sequences / worker.busy_s, 2)
            device["tokens_per_s"] = round(device["tokens_per_s"] + worker.tokens / worker.busy_s, 2)
        _add_steady_rate(device, worker)
    return {
        "stage": stage,
        "files": len(items),
        "files_written": sum(1 for r in results if r.output is not None and not r.skipped),
        "files_skipped": sum(1 for r in results if r.skipped),
        "files_failed": len({f.file_path for f in failures}),
        "records": sum(r.records for r in results),
        "embedded": sum(r.embedded for r in results),
        "tokens": sum(r.tokens for r in results),
        "oom_retries": sum(r.oom_retries for r in results),
        "failures": len(failures),
        "requeued": outcome.requeued,
        "failed_workers": sum(1 for w in outcome.workers if w.state == WorkerState.FAILED),
        "systemic_failure": outcome.systemic,
        "wall_s": round(wall_s, 3),
        "devices": devices,
    }


def _add_steady_rate(device: dict[str, Any], worker: WorkerRecord) -> None:
    """Add ``worker``'s first-file seconds and its tokens/s over the files after its first (the
    rate once the process's one-time start is paid) to ``device``'s; nothing when it embedded
    nothing after its first file."""
    if worker.first_file_s is None:
        return
    device["first_file_s"] = round((device["first_file_s"] or 0.0) + worker.first_file_s, 3)
    after_s, after_tokens = worker.busy_s - worker.first_file_s, worker.tokens - worker.first_file_tokens
    if after_s > 0 and after_tokens > 0:
        rate = after_tokens / after_s
        device["tokens_per_s_after_first_file"] = round((device["tokens_per_s_after_first_file"] or 0.0) + rate, 2)


def _log_summary(stats: dict) -> None:
    if stats["files_skipped"]:
        log.info("%s: %d of %d file(s) up to date (--resume), not embedded again",
                 stats["stage"], stats["files_skipped"], stats["files"])
    for label, device in stats["devices"].items():
        log.info(
            "%s %s: %d files, %d sequences, %.1f sequences/s, %.0f tokens/s, %d failures",
            stats["stage"], label, device["files"], device["sequences"], device["sequences_per_s"],
            device["tokens_per_s"], device["failures"],
        )
