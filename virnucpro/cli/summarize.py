"""``virnucpro summarize``: one status for a run of many samples (the pipeline's last step)."""

from __future__ import annotations

from pathlib import Path

import click

from virnucpro import contracts as c
from virnucpro.cli.options import outdir_option, verbosity_options


def summarize_exit_code(run_status: int, fail_on_partial: bool) -> int:
    """0 unless the run failed, or was partial and ``fail_on_partial`` is set (then 1)."""
    if run_status == c.EXIT_FAILED or (run_status == c.EXIT_PARTIAL and fail_on_partial):
        return c.EXIT_FAILED
    return c.EXIT_OK


@click.command("summarize", short_help="Run status over many samples (0 ok, 2 partial, 1 failed).")
@click.argument("sample_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@outdir_option(
    "Where to write run_status.txt, run_summary.json, failed_files.txt, virnucpro_report.html and multiqc/."
)
@click.option("--fail-on-partial", is_flag=True, help="Exit 1 when the run status is 2 (partial), not only when it is 1.")
@click.option(
    "--engine-summary",
    "engine_summaries",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="summary.json of an embed-dna or embed-esm run, for the report's throughput per device and stage (repeatable).",
)
@verbosity_options
def summarize_command(
    sample_dirs: tuple[Path, ...], outdir: Path, fail_on_partial: bool, engine_summaries: tuple[Path, ...]
) -> int:
    """Combine the results of SAMPLE_DIR... (each with summary.json) into the run's status 0/2/1,
    an HTML report over every sample and each sample's MultiQC files.

    The status is written to OUTDIR/run_status.txt; the command exits 0 once it is written,
    unless the run failed (status 1) or --fail-on-partial is set and the status is 2.
    """
    from virnucpro.outdir import claimed_outdir
    from virnucpro.report import write_run_outputs  # matplotlib: imported when the command runs
    from virnucpro.summarize import read_run, write_run

    run = read_run(list(sample_dirs))  # a missing sample directory is named before anything is written
    with claimed_outdir(outdir):
        write_run_outputs(run.samples, outdir, engine_summaries)
        write_run(run, outdir)
    return summarize_exit_code(run.exit_status, fail_on_partial)
