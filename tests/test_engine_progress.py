"""Progress: drawn from the workers' records; periodic log lines without a terminal, nothing when quiet."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from virnucpro.engine import progress as progress_module
from virnucpro.engine.devices import WorkerSlot
from virnucpro.engine.embed_file import FileResult
from virnucpro.engine.plan import WorkItem
from virnucpro.engine.progress import Progress, resolve_mode
from virnucpro.engine.state import WorkerRecord

from helpers import captured_log


def _workers(*labels: str) -> list[WorkerRecord]:
    """Records of workers on ``gpu N`` (or ``cpu``) devices."""
    slots = [WorkerSlot("cpu") if label == "cpu" else WorkerSlot("cuda:0", {"CUDA_VISIBLE_DEVICES": label[4:]})
             for label in labels]
    return [WorkerRecord(number, slot) for number, slot in enumerate(slots)]


def _item(name: str, cost: int = 0) -> WorkItem:
    return WorkItem(0, name, Path(f"{name}.npz"), cost)


def _finish(worker: WorkerRecord, name: str, cost: int = 0, failures: int = 0, skipped: bool = False) -> None:
    """``worker`` takes file ``name`` (of ``cost``) and finishes it."""
    worker.take(_item(name, cost))
    worker.file_done(FileResult(name, skipped=skipped, failures=[None] * failures))  # type: ignore[list-item]


@pytest.fixture()
def no_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """A log line at every tick."""
    monkeypatch.setattr(progress_module, "LOG_INTERVAL_S", 0.0)


def test_log_mode_writes_one_plain_line_per_interval(caplog: pytest.LogCaptureFixture, no_interval: None) -> None:
    workers = _workers("gpu 0", "gpu 1")
    progress = Progress("log", "ESM-2", 3, workers)
    workers[0].add_progress(10, 500)
    _finish(workers[0], "a.faa", failures=1)
    workers[0].take(_item("b.faa"))
    with captured_log(caplog):
        progress.tick()
    progress.close()
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("ESM-2: 1/3 files, 10 sequences, ") and line.endswith(" tokens/s, 1 failures, 1/2 workers busy")


def test_log_lines_come_no_more_often_than_the_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    assert progress_module.LOG_INTERVAL_S == 30.0
    progress = Progress("log", "ESM-2", 3, _workers("cpu"))
    with captured_log(caplog):
        for seconds in (1.0, 10.0, 29.0):  # 1 s, 11 s, 40 s after the start: one line, at 40 s
            clock[0] += seconds
            progress.tick()
        clock[0] += 25.0  # 65 s: only 25 s after that line
        progress.tick()
        clock[0] += 5.0  # 70 s: 30 s after it
        progress.tick()
    progress.close()
    assert len(caplog.records) == 2


def test_quiet_mode_says_nothing(caplog: pytest.LogCaptureFixture, no_interval: None) -> None:
    workers = _workers("cpu")
    progress = Progress("quiet", "ESM-2", 1, workers)
    with captured_log(caplog):
        workers[0].add_progress(1, 1)
        progress.tick()
    assert caplog.records == []


@pytest.mark.parametrize(("terminal", "expected"), [(True, "live"), (False, "log")])
def test_auto_is_live_on_a_terminal_plain_elsewhere_and_quiet_at_error_level(
    monkeypatch: pytest.MonkeyPatch, terminal: bool, expected: str
) -> None:
    monkeypatch.setattr(progress_module, "stderr_console", SimpleNamespace(is_terminal=terminal))
    logger = logging.getLogger("virnucpro")
    level = logger.level
    try:
        logger.setLevel(logging.INFO)
        assert resolve_mode("auto") == expected
        logger.setLevel(logging.ERROR)
        assert resolve_mode("auto") == "quiet"
    finally:
        logger.setLevel(level)
    with pytest.raises(ValueError):
        resolve_mode("fancy")


def test_the_line_says_how_much_is_done_and_about_how_long_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [500.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    workers = _workers("gpu 0")
    progress = Progress("quiet", "ESM-2", 4, workers, total_cost=1000)
    assert " files, " in progress.line() and "left" not in progress.line()  # nothing finished: no estimate
    clock[0] += 60.0
    _finish(workers[0], "a", cost=250)  # a quarter in a minute: three minutes to go
    assert progress.line().startswith("ESM-2: 1/4 files (25% of residues, about 3 min left), ")
    clock[0] += 180.0
    _finish(workers[0], "b", cost=750)
    assert progress.line().startswith("ESM-2: 2/4 files (100% of residues), ")


def test_files_skipped_on_resume_do_not_count_as_work_done(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    workers = _workers("gpu 0")
    progress = Progress("quiet", "ESM-2", 10, workers, total_cost=1000)
    for number in range(9):  # up to date, found in no time
        _finish(workers[0], f"kept{number}", cost=90, skipped=True)
    clock[0] += 2.0
    assert "left" not in progress.line()  # nothing embedded yet: no estimate (not "90%, 0 s left")
    clock[0] += 60.0
    _finish(workers[0], "new", cost=190)  # the one file embedded is all the work there was
    assert progress.line().startswith("ESM-2: 10/10 files (100% of residues), ")


def test_live_mode_shows_one_row_per_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal: a table with each worker's device, state, file, files, sequences and failures."""
    import io

    from rich.console import Console

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, color_system=None, width=160)
    monkeypatch.setattr(progress_module, "stderr_console", console)
    workers = _workers("gpu 0", "gpu 2")
    display = Progress("live", "ESM-2", 3, workers, total_cost=300)
    workers[0].add_progress(sequences=40, tokens=4000)
    _finish(workers[0], "shard_00000.fa", cost=100, failures=1)
    workers[0].take(_item("dir/shard_00001.fa"))
    workers[1].take(_item("dir/shard_00002.fa"))
    display.close()
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in screen.getvalue().splitlines() if "shard_0000" in line]
    last = {row[1]: row for row in cells}  # the last drawing of each worker's row, by device
    assert set(last) == {"gpu 0", "gpu 2"}
    # worker, device, state, file, files, sequences, tokens/s, failures
    assert last["gpu 0"][:6] + last["gpu 0"][7:] == ["0", "gpu 0", "processing", "shard_00001.fa", "1", "40", "1"]
    assert last["gpu 2"][:6] + last["gpu 2"][7:] == ["1", "gpu 2", "processing", "shard_00002.fa", "0", "0", "0"]
    assert "ESM-2: 1/3 files (33% of residues" in screen.getvalue()
