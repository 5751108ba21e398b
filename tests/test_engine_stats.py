"""summary.json's per-device figures from the workers' records: rates add up across workers
sharing a device, and the rate after each worker's first file (which carries the process's
one-time start: ~5 s on a GPU, docs/performance.md) is reported beside the average."""

from __future__ import annotations

from virnucpro.engine.devices import WorkerSlot
from virnucpro.engine.embed_file import FileResult
from virnucpro.engine.run import _stats
from virnucpro.engine.state import RunOutcome, WorkerRecord

GPU0 = WorkerSlot("cuda:0", {"CUDA_VISIBLE_DEVICES": "0"})


def _worker(number: int, files: list[tuple[float, int, bool]]) -> WorkerRecord:
    """A worker that did ``files``: (seconds, tokens, skipped by --resume) each, in order."""
    worker = WorkerRecord(number, GPU0)
    for index, (seconds, tokens, skipped) in enumerate(files):
        worker.add_progress(1, tokens)
        worker.file_done(FileResult(f"f{number}_{index}", skipped=skipped, tokens=tokens, seconds=seconds))
    return worker


def _device(*workers: WorkerRecord) -> dict:
    return _stats([], RunOutcome(workers=list(workers)), [], "esm", wall_s=20.0)["devices"]["gpu 0"]


def test_the_rate_after_each_worker_s_first_file_adds_up_across_workers() -> None:
    slow_start = _worker(0, [(5.0, 1000, False), (0.5, 1000, False), (0.5, 1000, False)])
    other = _worker(1, [(4.0, 500, False), (0.5, 1000, False)])
    device = _device(slow_start, other)
    assert device["first_file_s"] == 9.0
    assert device["tokens_per_s_after_first_file"] == 2000.0 + 2000.0  # 2000 tokens in 1 s; 1000 in 0.5 s
    assert device["tokens_per_s"] == round(3000 / 6.0 + 1500 / 4.5, 2)  # the average, start included


def test_a_worker_with_one_file_has_no_rate_after_it() -> None:
    device = _device(_worker(0, [(5.0, 1000, False)]))
    assert device["first_file_s"] == 5.0 and device["tokens_per_s_after_first_file"] is None


def test_a_file_kept_by_resume_is_not_the_first_file() -> None:
    """A skipped file costs a hash, not a model call: the first embedded file carries the start."""
    device = _device(_worker(0, [(0.01, 0, True), (5.0, 1000, False), (0.5, 1000, False)]))
    assert device["first_file_s"] == 5.0
    assert device["tokens_per_s_after_first_file"] == round(1000 / 0.51, 2)


def test_a_worker_that_embedded_nothing_adds_nothing() -> None:
    device = _device(WorkerRecord(0, GPU0))
    assert device["first_file_s"] is None and device["tokens_per_s_after_first_file"] is None


def test_files_kept_by_resume_after_the_first_give_no_rate() -> None:
    """Nothing embedded after the first file: no rate (not 0 tokens/s over a hash's time)."""
    device = _device(_worker(0, [(5.0, 1000, False), (0.01, 0, True)]))
    assert device["first_file_s"] == 5.0 and device["tokens_per_s_after_first_file"] is None
