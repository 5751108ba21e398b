"""Progress: periodic log lines without a terminal, nothing when quiet."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from virnucpro.engine import progress as progress_module
from virnucpro.engine.progress import Progress, resolve_mode

from helpers import captured_log


def test_log_mode_writes_one_plain_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    progress = Progress("log", "ESM-2", 3, ["gpu 0", "gpu 1"], interval_s=0.0)
    progress.set_state(0, "processing", "a.faa")
    progress.add(0, 10, 500)
    progress.file_done(0, failures=1)
    with captured_log(caplog):
        progress.tick()
    progress.close()
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("ESM-2: 1/3 files, 10 sequences, ") and line.endswith(" tokens/s, 1 failures, 1/2 workers busy")


def test_log_lines_come_no_more_often_than_the_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import virnucpro.engine.progress as progress_module

    clock = [1000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    progress = Progress("log", "ESM-2", 3, ["cpu"], interval_s=30.0)
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


def test_quiet_mode_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    progress = Progress("quiet", "ESM-2", 1, ["cpu"], interval_s=0.0)
    with captured_log(caplog):
        progress.add(0, 1, 1)
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
    import virnucpro.engine.progress as progress_module

    clock = [500.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    progress = Progress("quiet", "ESM-2", 4, ["gpu 0"], total_cost=1000)
    assert " files, " in progress.line() and "left" not in progress.line()  # nothing finished: no estimate
    clock[0] += 60.0
    progress.file_done(0, failures=0, cost=250)  # a quarter in a minute: three minutes to go
    assert progress.line().startswith("ESM-2: 1/4 files (25% of residues, about 3 min left), ")
    clock[0] += 180.0
    progress.file_done(0, failures=0, cost=750)
    assert progress.line().startswith("ESM-2: 2/4 files (100% of residues), ")


def test_files_skipped_on_resume_do_not_count_as_work_done(monkeypatch: pytest.MonkeyPatch) -> None:
    import virnucpro.engine.progress as progress_module

    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    progress = Progress("quiet", "ESM-2", 10, ["gpu 0"], total_cost=1000)
    for _ in range(9):  # up to date, found in no time
        progress.file_done(0, failures=0, cost=90, skipped=True)
    clock[0] += 2.0
    assert "left" not in progress.line()  # nothing embedded yet: no estimate (not "90%, 0 s left")
    clock[0] += 60.0
    progress.file_done(0, failures=0, cost=190)  # the one file embedded is all the work there was
    assert progress.line().startswith("ESM-2: 10/10 files (100% of residues), ")


def test_live_mode_shows_one_row_per_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal: a table with each worker's device, state, file, files, sequences and failures."""
    import io

    from rich.console import Console

    import virnucpro.engine.progress as progress_module

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, color_system=None, width=160)
    monkeypatch.setattr(progress_module, "stderr_console", console)
    display = Progress("live", "ESM-2", 3, ["gpu 0", "gpu 2"], total_cost=300)
    display.set_state(0, "processing", "shard_00001.fa")
    display.add(0, sequences=40, tokens=4000)
    display.file_done(0, failures=1, cost=100)
    display.set_state(1, "processing", "shard_00002.fa")
    display.close()
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in screen.getvalue().splitlines() if "shard_0000" in line]
    last = {row[1]: row for row in cells}  # the last drawing of each worker's row, by device
    assert set(last) == {"gpu 0", "gpu 2"}
    # worker, device, state, file, files, sequences, tokens/s, failures
    assert last["gpu 0"][:6] + last["gpu 0"][7:] == ["0", "gpu 0", "processing", "shard_00001.fa", "1", "40", "1"]
    assert last["gpu 2"][:6] + last["gpu 2"][7:] == ["1", "gpu 2", "processing", "shard_00002.fa", "0", "0", "0"]
    assert "ESM-2: 1/3 files (33% of residues" in screen.getvalue()
