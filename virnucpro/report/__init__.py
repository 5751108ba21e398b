"""The HTML report: one self-contained file over one sample (``predict``: ``report.html``) or a
whole run (``summarize``: ``virnucpro_report.html``), made by the same function."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from virnucpro import contracts as c
from virnucpro.atomic import atomic_write_text
from virnucpro.log import get_logger
from virnucpro.multiqc import write_multiqc
from virnucpro.report.data import gather, read_engine_summaries
from virnucpro.report.html import render
from virnucpro.summarize import SampleStatus, read_run

log = get_logger("report")


def write_report(
    samples: Sequence[SampleStatus], path: Path, title: str, engine_summaries: Sequence[Path] = ()
) -> Path:
    """Write the report over ``samples`` to ``path``; ``engine_summaries``: summary.json files of
    embed-dna / embed-esm runs made apart (the pipeline's embedding tasks)."""
    engines = read_engine_summaries(engine_summaries)
    atomic_write_text(Path(path), render(gather(samples), title, engines))
    log.info("report -> %s", path)
    return Path(path)


def write_sample_outputs(outdir: Path) -> None:
    """``predict``'s report.html and MultiQC files, from the files it wrote into ``outdir``."""
    run = read_run([outdir])
    write_report(run.samples, Path(outdir) / c.REPORT_HTML, f"VirNucPro: {run.samples[0].sample}")
    write_multiqc(run.samples, Path(outdir) / c.MULTIQC_DIR)


def write_run_outputs(samples: Sequence[SampleStatus], outdir: Path, engine_summaries: Sequence[Path] = ()) -> None:
    """``summarize``'s run report (virnucpro_report.html) and every sample's MultiQC files."""
    write_report(samples, Path(outdir) / c.RUN_REPORT_HTML, "VirNucPro run report", engine_summaries)
    write_multiqc(samples, Path(outdir) / c.MULTIQC_DIR)
