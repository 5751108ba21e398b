"""Progress of an embedding run: a live table on a terminal, periodic log lines elsewhere, or nothing.

``auto`` picks the live display when stderr is a terminal, plain log lines otherwise
(Nextflow's .command.log, CI) and nothing when logging is at error level (``--quiet``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from virnucpro.engine.state import WorkerRecord, WorkerState
from virnucpro.log import get_logger, stderr_console

log = get_logger("engine")

MODES = ("auto", "live", "log", "quiet")
LOG_INTERVAL_S = 30.0


def resolve_mode(mode: str) -> str:
    """``auto`` -> live, log or quiet; other modes are returned as they are."""
    if mode not in MODES:
        raise ValueError(f"unknown progress mode {mode!r} (choose one of {', '.join(MODES)})")
    if mode != "auto":
        return mode
    if not log.isEnabledFor(logging.INFO):
        return "quiet"
    return "live" if stderr_console.is_terminal else "log"


class Progress:
    """Shows the workers' records (:mod:`virnucpro.engine.state`) in the chosen mode.

    It keeps no counters of its own: the runners update the records, the live table redraws
    from them four times a second and the log line reads them at each :meth:`tick`.
    """

    def __init__(
        self,
        mode: str,
        stage: str,
        total_files: int,
        workers: list[WorkerRecord],
        total_cost: int = 0,
    ):
        self.mode = resolve_mode(mode)
        self.stage = stage
        self.total_files = total_files
        self.total_cost = total_cost  # residues + boundary tokens of every file (engine.plan.estimate_cost)
        self.workers = workers
        self.interval_s = LOG_INTERVAL_S
        self.start = time.monotonic()
        self.last_log = self.start
        self._live = None
        if self.mode == "live":
            from rich.live import Live

            self._live = Live(get_renderable=self._table, console=stderr_console, refresh_per_second=4, transient=False)
            self._live.start()

    def tick(self) -> None:
        """Called regularly: emits a log line every ``interval_s`` in log mode."""
        now = time.monotonic()
        if self.mode == "log" and now - self.last_log >= self.interval_s:
            self.last_log = now
            log.info("%s", self.line(now))

    def close(self) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None

    # -- rendering --------------------------------------------------------------------
    def line(self, now: float | None = None) -> str:
        """One plain progress line over all workers."""
        now = time.monotonic() if now is None else now
        workers = self.workers
        files = sum(w.files for w in workers)
        sequences = sum(w.sequences for w in workers)
        tokens = sum(w.tokens for w in workers)
        failures = sum(w.failures for w in workers)
        elapsed = max(now - self.start, 1e-9)
        busy = sum(1 for w in workers if w.state == WorkerState.PROCESSING)
        return (
            f"{self.stage}: {files}/{self.total_files} files{self._done_and_eta(elapsed)}, {sequences} sequences, "
            f"{tokens / elapsed:.0f} tokens/s, {failures} failures, {busy}/{len(workers)} workers busy"
        )

    def _done_and_eta(self, elapsed: float) -> str:
        """`` (42% of residues, about 3 min left)``: by the size of the finished files (up-to-date
        files found by --resume are left out of both the share and the estimate)."""
        done = sum(w.cost_done for w in self.workers)
        total = self.total_cost - sum(w.cost_skipped for w in self.workers)
        if not total or not done:
            return ""
        fraction = min(1.0, done / total)
        if fraction >= 1.0:
            return " (100% of residues)"
        left = elapsed * (1 - fraction) / fraction
        when = f"{left:.0f} s" if left < 90 else f"{left / 60:.0f} min" if left < 5400 else f"{left / 3600:.1f} h"
        return f" ({100 * fraction:.0f}% of residues, about {when} left)"

    def _table(self):  # noqa: ANN202  (a rich Table; rich is imported lazily)
        from rich.table import Table

        now = time.monotonic()
        table = Table(title=self.line(now), title_justify="left", expand=False)
        for column in ("worker", "device", "state", "file", "files", "sequences", "tokens/s", "failures"):
            table.add_column(column, justify="right" if column in ("files", "sequences", "tokens/s", "failures") else "left")
        for worker in self.workers:
            item = worker.item  # read once: the runner may clear it meanwhile (the table is drawn in a thread)
            table.add_row(
                str(worker.number),
                worker.label,
                str(worker.state),
                Path(item.path).name if item is not None else "",
                str(worker.files),
                str(worker.sequences),
                f"{worker.tokens_per_s(now):.0f}",
                str(worker.failures),
            )
        return table
