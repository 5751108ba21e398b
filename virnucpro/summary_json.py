"""What a run reports at its end: summary.json (counts, timings, models, versions, exit status)
and the closing log line of a run that did not fully succeed."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from virnucpro import __version__
from virnucpro.atomic import atomic_write_text
from virnucpro.contracts import EXIT_FAILED, EXIT_OK, SUMMARY_JSON, Failure
from virnucpro.log import get_logger

log = get_logger("summary")

_PACKAGES = ("torch", "fair-esm", "tokenizers", "biopython", "numpy")


def software_versions() -> dict[str, str]:
    """Versions of virnucpro, Python and the packages that determine the numbers."""
    versions = {"virnucpro": __version__, "python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


class StageTimer:
    """Collects wall-clock seconds per named stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


def log_outcome(what: str, exit_status: int, failures: list[Failure], failed_path: Path) -> None:
    """The last line of a run that did not fully succeed: the first failure and where the rest are.

    An error (shown even with ``--quiet``) when nothing usable came out, a warning for a partial result.
    """
    if exit_status == EXIT_OK or not failures:
        return
    more = f" and {len(failures) - 1} more" if len(failures) > 1 else ""
    text = f"{failures[0].line()}{more} (all in {failed_path})"
    if exit_status == EXIT_FAILED:
        log.error("%s: nothing usable: %s", what, text)
    else:
        log.warning("%s: partial result: %s", what, text)


def write_summary(outdir: Path, summary: dict[str, Any]) -> Path:
    """Write ``summary`` (plus software versions) as outdir/summary.json, atomically."""
    document = {**summary, "versions": software_versions()}
    path = outdir / SUMMARY_JSON
    atomic_write_text(path, json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
    return path
