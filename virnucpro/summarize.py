"""Run-level status over many samples: the last step of the Nextflow pipeline.

Each sample directory holds what ``virnucpro classify`` (or ``predict``) wrote: ``summary.json``
(with ``exit_status``) and, when anything failed, ``failed_files.txt``. The run's status is

- 0 when every sample is 0,
- 1 when every sample is 1 (nothing was classified anywhere),
- 2 otherwise (some results, some failures).

A sample directory without a readable ``summary.json`` (its task was lost) counts as failed.
Run-level failure lines keep the per-sample format with the sample name prefixed to the file
field: ``{sample}:{file}|{stage}|{message}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virnucpro import contracts as c
from virnucpro.atomic import atomic_write_text
from virnucpro.errors import InputError
from virnucpro.log import get_logger
from virnucpro.summary_json import software_versions

log = get_logger("summarize")

RUN_STATUS = "run_status.txt"
RUN_SUMMARY_JSON = "run_summary.json"
STATUS_WORDS = {c.EXIT_OK: "ok", c.EXIT_PARTIAL: "partial", c.EXIT_FAILED: "failed"}


@dataclass
class SampleStatus:
    """What one sample directory says about itself."""

    sample: str
    directory: Path
    exit_status: int
    failures: list[c.Failure] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    problem: str = ""  # why the sample counts as failed without saying so itself

    def to_dict(self) -> dict[str, Any]:
        """The sample's entry in run_summary.json."""
        entry: dict[str, Any] = {
            "sample": self.sample,
            "exit_status": self.exit_status,
            "status": STATUS_WORDS[self.exit_status],
            "records": self.summary.get("records", 0),
            "calls": self.summary.get("calls", {}),
            "failures": len(self.failures),
        }
        if self.problem:
            entry["problem"] = self.problem
        return entry


@dataclass
class RunSummary:
    """The run's status, its samples and every failure, sample-prefixed."""

    exit_status: int
    samples: list[SampleStatus]
    failures: list[c.Failure]

    @property
    def status(self) -> str:
        """``ok``, ``partial`` or ``failed``."""
        return STATUS_WORDS[self.exit_status]

    def to_dict(self) -> dict[str, Any]:
        """The content of run_summary.json."""
        calls: dict[str, int] = {call: 0 for call in c.CALLS}
        for sample in self.samples:
            for call, count in sample.summary.get("calls", {}).items():
                calls[call] = calls.get(call, 0) + int(count)
        return {
            "exit_status": self.exit_status,
            "status": self.status,
            "totals": {
                "samples": len(self.samples),
                "samples_ok": sum(s.exit_status == c.EXIT_OK for s in self.samples),
                "samples_partial": sum(s.exit_status == c.EXIT_PARTIAL for s in self.samples),
                "samples_failed": sum(s.exit_status == c.EXIT_FAILED for s in self.samples),
                "records": sum(int(s.summary.get("records", 0)) for s in self.samples),
                "calls": calls,
                "failures": len(self.failures),
            },
            "samples": [sample.to_dict() for sample in self.samples],
            "versions": software_versions(),
        }


def run_status(sample_statuses: Sequence[int]) -> int:
    """0 when all samples are 0, 1 when all are 1 (or there are none), else 2."""
    statuses = set(sample_statuses)
    if not statuses or statuses == {c.EXIT_FAILED}:
        return c.EXIT_FAILED
    if statuses == {c.EXIT_OK}:
        return c.EXIT_OK
    return c.EXIT_PARTIAL


def _lost(sample: str, directory: Path, failures: list[c.Failure], problem: str) -> SampleStatus:
    lost = c.Failure(str(directory), c.STAGE_CLASSIFY, problem)
    return SampleStatus(sample, directory, c.EXIT_FAILED, [*failures, lost], problem=problem)


def read_sample(directory: Path) -> SampleStatus:
    """The status of one sample directory (never raises for a missing or broken sample)."""
    directory = Path(directory)
    sample = directory.name
    failures = c.read_failures(directory / c.FAILED_FILES)
    summary_path = directory / c.SUMMARY_JSON
    if not summary_path.is_file():
        return _lost(sample, directory, failures, f"no {c.SUMMARY_JSON}: the sample was not classified")
    try:
        summary = json.loads(summary_path.read_text())
        status = summary["exit_status"]
    except (ValueError, KeyError, TypeError) as error:
        return _lost(sample, directory, failures, f"unreadable {c.SUMMARY_JSON}: {error}")
    if status not in STATUS_WORDS:
        return _lost(sample, directory, failures, f"{c.SUMMARY_JSON} has an invalid exit_status {status!r}")
    if status == c.EXIT_OK and failures:  # recorded failures are never reported as complete
        status = c.EXIT_PARTIAL
    return SampleStatus(sample, directory, status, failures, summary)


def _prefixed(sample: str, failure: c.Failure) -> c.Failure:
    return c.Failure(f"{sample}:{failure.file_path}", failure.stage, failure.message)


def summarize_run(sample_dirs: Sequence[Path], outdir: Path) -> RunSummary:
    """Read every sample directory and write run_status.txt, run_summary.json and failed_files.txt."""
    run = read_run(sample_dirs)
    write_run(run, outdir)
    return run


def read_run(sample_dirs: Sequence[Path]) -> RunSummary:
    """The run's status, samples and failures, from the sample directories (nothing is written)."""
    if not sample_dirs:
        raise InputError("summarize needs at least one sample directory")
    names = [Path(d).name for d in sample_dirs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(f"sample directories must have distinct names: {', '.join(duplicates)}")
    samples = [read_sample(Path(d)) for d in sample_dirs]
    failures = [_prefixed(s.sample, f) for s in samples for f in s.failures]
    return RunSummary(run_status([s.exit_status for s in samples]), samples, failures)


def write_run(run: RunSummary, outdir: Path) -> None:
    """Write failed_files.txt (only when something failed; a stale one is removed),
    run_summary.json and, last, run_status.txt: its presence means the summary is complete."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    c.write_failures(outdir / c.FAILED_FILES, run.failures)
    atomic_write_text(outdir / RUN_SUMMARY_JSON, json.dumps(run.to_dict(), indent=2, sort_keys=True) + "\n")
    atomic_write_text(outdir / RUN_STATUS, f"{run.exit_status}\n")
    for sample in run.samples:
        log.info("sample %s: %s (%d failures)", sample.sample, STATUS_WORDS[sample.exit_status], len(sample.failures))
    log.info(
        "run status %d (%s): %d samples, %d failures", run.exit_status, run.status, len(run.samples), len(run.failures)
    )
