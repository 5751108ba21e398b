"""The run-level status over many samples (`virnucpro summarize`, the pipeline's last step)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virnucpro import contracts as c
from virnucpro.cli import main
from virnucpro.errors import InputError
from virnucpro.summarize import RUN_STATUS, RUN_SUMMARY_JSON, read_sample, run_status, summarize_run


def make_sample(root: Path, name: str, status: int | None, failures: list[str] = (), calls: dict | None = None) -> Path:
    """A sample directory as classify leaves it (status None: no summary.json)."""
    directory = root / name
    directory.mkdir(parents=True)
    if status is not None:
        summary = {"exit_status": status, "records": sum((calls or {}).values()), "calls": calls or {}}
        (directory / c.SUMMARY_JSON).write_text(json.dumps(summary))
    if failures:
        (directory / c.FAILED_FILES).write_text("".join(line + "\n" for line in failures))
    return directory


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([0], 0),
        ([0, 0], 0),
        ([0, 2], 2),
        ([2, 2], 2),
        ([0, 1], 2),
        ([2, 1], 2),
        ([1], 1),
        ([1, 1], 1),
        ([], 1),
    ],
)
def test_run_status(statuses: list[int], expected: int) -> None:
    assert run_status(statuses) == expected


def test_run_of_partial_and_lost_samples(tmp_path: Path) -> None:
    ok = make_sample(tmp_path, "ok", 0, calls={"virus": 2, "others": 1})
    partial = make_sample(tmp_path, "partial", 2, ["shard_00001.fa|ESM-2|CUDA out of memory"], {"virus": 1, "failed": 2})
    lost = tmp_path / "lost"  # the sample's directory never appeared
    out = tmp_path / "pipeline_info"

    run = summarize_run([ok, partial, lost], out)

    assert run.exit_status == 2 and run.status == "partial"
    assert (out / RUN_STATUS).read_text() == "2\n"
    lines = (out / c.FAILED_FILES).read_text().splitlines()
    assert lines[0] == "partial:shard_00001.fa|ESM-2|CUDA out of memory"
    assert lines[1].startswith(f"lost:{lost}|{c.STAGE_CLASSIFY}|no summary.json")
    document = json.loads((out / RUN_SUMMARY_JSON).read_text())
    assert document["exit_status"] == 2 and document["status"] == "partial"
    assert [(s["sample"], s["exit_status"]) for s in document["samples"]] == [("ok", 0), ("partial", 2), ("lost", 1)]
    totals = document["totals"]
    assert (totals["samples_ok"], totals["samples_partial"], totals["samples_failed"]) == (1, 1, 1)
    assert totals["records"] == 6 and totals["calls"]["virus"] == 3 and totals["calls"]["failed"] == 2
    assert totals["failures"] == 2
    assert "virnucpro" in document["versions"]


def test_complete_run_removes_a_stale_failure_list(tmp_path: Path) -> None:
    out = tmp_path / "pipeline_info"
    out.mkdir()
    (out / c.FAILED_FILES).write_text("old|ESM-2|from an earlier run\n")
    run = summarize_run([make_sample(tmp_path, "a", 0), make_sample(tmp_path, "b", 0)], out)
    assert run.exit_status == 0
    assert (out / RUN_STATUS).read_text() == "0\n"
    assert not (out / c.FAILED_FILES).exists()


def test_all_failed(tmp_path: Path) -> None:
    run = summarize_run([make_sample(tmp_path, "a", 1, ["x.fa|DNABERT-S|boom"]), tmp_path / "b"], tmp_path / "out")
    assert run.exit_status == 1


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no summary.json"),
        ("{not json", "unreadable summary.json"),
        ('{"records": 3}', "unreadable summary.json"),
        ('{"exit_status": 7}', "invalid exit_status 7"),
        ('["exit_status"]', "unreadable summary.json"),
    ],
)
def test_broken_sample_counts_as_failed(tmp_path: Path, content: str | None, problem: str) -> None:
    directory = tmp_path / "s"
    directory.mkdir()
    if content is not None:
        (directory / c.SUMMARY_JSON).write_text(content)
    sample = read_sample(directory)
    assert sample.exit_status == c.EXIT_FAILED
    assert problem in sample.problem
    assert sample.failures[-1].stage == c.STAGE_CLASSIFY


def test_recorded_failures_are_never_reported_complete(tmp_path: Path) -> None:
    sample = read_sample(make_sample(tmp_path, "s", 0, ["a.fa|ESM-2|lost"]))
    assert sample.exit_status == c.EXIT_PARTIAL


def test_malformed_failure_line_is_kept(tmp_path: Path) -> None:
    sample = read_sample(make_sample(tmp_path, "s", 2, ["no separators here", "b.fa|ESM-2|ok line"]))
    assert [f.file_path for f in sample.failures] == [str(tmp_path / "s" / c.FAILED_FILES), "b.fa"]
    assert "malformed failure line 1" in sample.failures[0].message


def test_sample_names_must_be_distinct(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="distinct names: s"):
        summarize_run([make_sample(tmp_path / "x", "s", 0), make_sample(tmp_path / "y", "s", 0)], tmp_path / "out")
    with pytest.raises(InputError):
        summarize_run([], tmp_path / "out")


@pytest.mark.parametrize(
    ("statuses", "flags", "exit_code"),
    [
        ([0], [], 0),
        ([0, 2], [], 0),
        ([0, 2], ["--fail-on-partial"], 1),
        ([1], [], 1),
        ([0], ["--fail-on-partial"], 0),
    ],
)
def test_cli_exit_codes(tmp_path: Path, statuses: list[int], flags: list[str], exit_code: int) -> None:
    dirs = [str(make_sample(tmp_path, f"s{i}", status)) for i, status in enumerate(statuses)]
    out = tmp_path / "out"
    assert main(["summarize", *dirs, "--outdir", str(out), "--quiet", *flags]) == exit_code
    assert (out / RUN_STATUS).read_text() == f"{run_status(statuses)}\n"


def test_cli_requires_a_sample(tmp_path: Path) -> None:
    assert main(["summarize", "--outdir", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()
