"""Progress of an embedding run: a live table on a terminal, periodic log lines elsewhere, or nothing.

``auto`` picks the live display when stderr is a terminal, plain log lines otherwise
(Nextflow's .command.log, CI) and nothing when logging is at error level (``--quiet``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from virnucpro.log import get_logger, stderr_console

log = get_logger("engine")

MODES = ("auto", "live", "log", "quiet")
LOG_INTERVAL_S = 30.0


@dataclass
class WorkerView:
    """What the display shows about one worker."""

    label: str
    state: str = "starting"
    file: str = ""
    files: int = 0
    sequences: int = 0
    tokens: int = 0
    failures: int = 0
    busy_since: float | None = None
    busy_s: float = 0.0

    def tokens_per_s(self, now: float) -> float:
        busy = self.busy_s + (now - self.busy_since if self.busy_since is not None else 0.0)
        return self.tokens / busy if busy > 0 else 0.0


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
    """Collects per-worker counters from the manager and shows them in the chosen mode."""

    def __init__(
        self,
        mode: str,
        stage: str,
        total_files: int,
        labels: list[str],
        interval_s: float = LOG_INTERVAL_S,
        total_cost: int = 0,
    ):
        self.mode = resolve_mode(mode)
        self.stage = stage
        self.total_files = total_files
        self.total_cost = total_cost  # residues + boundary tokens of every file (engine.plan.estimate_cost)
        self.done_cost = 0
        self.workers = [WorkerView(label) for label in labels]
        self.interval_s = interval_s
        self.start = time.monotonic()
        self.last_log = self.start
        self._live = None
        if self.mode == "live":
            from rich.live import Live

            self._live = Live(self._table(), console=stderr_console, refresh_per_second=4, transient=False)
            self._live.start()

    # -- updates from the manager ------------------------------------------------------
    def set_state(self, worker: int, state: str, file: str = "") -> None:
        view = self.workers[worker]
        now = time.monotonic()
        if state == "processing" and view.busy_since is None:
            view.busy_since = now
        elif state != "processing" and view.busy_since is not None:
            view.busy_s += now - view.busy_since
            view.busy_since = None
        view.state, view.file = state, file
        self._refresh()

    def add(self, worker: int, sequences: int, tokens: int) -> None:
        view = self.workers[worker]
        view.sequences += sequences
        view.tokens += tokens
        self._refresh()

    def file_done(self, worker: int, failures: int, cost: int = 0, skipped: bool = False) -> None:
        """A file is finished; ``skipped`` (up to date, --resume) leaves it out of the share and the estimate."""
        view = self.workers[worker]
        if skipped:
            self.total_cost -= cost
        else:
            self.done_cost += cost
        view.files += 1
        view.failures += failures
        self._refresh()

    def tick(self) -> None:
        """Called regularly: emits a log line every ``interval_s`` in log mode."""
        now = time.monotonic()
        if self.mode == "log" and now - self.last_log >= self.interval_s:
            self.last_log = now
            log.info("%s", self.line(now))

    def close(self) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.stop()
            self._live = None

    # -- rendering --------------------------------------------------------------------
    def line(self, now: float | None = None) -> str:
        """One plain progress line over all workers."""
        now = time.monotonic() if now is None else now
        files = sum(v.files for v in self.workers)
        sequences = sum(v.sequences for v in self.workers)
        tokens = sum(v.tokens for v in self.workers)
        failures = sum(v.failures for v in self.workers)
        elapsed = max(now - self.start, 1e-9)
        busy = sum(1 for v in self.workers if v.state == "processing")
        return (
            f"{self.stage}: {files}/{self.total_files} files{self._done_and_eta(elapsed)}, {sequences} sequences, "
            f"{tokens / elapsed:.0f} tokens/s, {failures} failures, {busy}/{len(self.workers)} workers busy"
        )

    def _done_and_eta(self, elapsed: float) -> str:
        """`` (42% of residues, about 3 min left)``: by the size of the finished files."""
        if not self.total_cost or not self.done_cost:
            return ""
        fraction = min(1.0, self.done_cost / self.total_cost)
        if fraction >= 1.0:
            return " (100% of residues)"
        left = elapsed * (1 - fraction) / fraction
        when = f"{left:.0f} s" if left < 90 else f"{left / 60:.0f} min" if left < 5400 else f"{left / 3600:.1f} h"
        return f" ({100 * fraction:.0f}% of residues, about {when} left)"

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._table())

    def _table(self):  # noqa: ANN202  (a rich Table; rich is imported lazily)
        from rich.table import Table

        now = time.monotonic()
        table = Table(title=self.line(now), title_justify="left", expand=False)
        for column in ("worker", "device", "state", "file", "files", "sequences", "tokens/s", "failures"):
            table.add_column(column, justify="right" if column in ("files", "sequences", "tokens/s", "failures") else "left")
        for number, view in enumerate(self.workers):
            table.add_row(
                str(number),
                view.label,
                view.state,
                view.file,
                str(view.files),
                str(view.sequences),
                f"{view.tokens_per_s(now):.0f}",
                str(view.failures),
            )
        return table
