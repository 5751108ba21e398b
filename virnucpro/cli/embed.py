"""``virnucpro embed-esm`` / ``embed-dna``: one embedding file per input FASTA (the worker engine)."""

from __future__ import annotations

from pathlib import Path

import click

from virnucpro.cli import cli
from virnucpro.cli.options import (
    device_options,
    dna_model_options,
    esm_model_options,
    init_logging,
    outdir_option,
    verbosity_options,
)
from virnucpro.embeddings.base import ModelSpec
from virnucpro.embeddings.dna import DnaSpec
from virnucpro.embeddings.esm import EsmSpec
from virnucpro.engine import run_embedding
from virnucpro.outdir import claimed_outdir
from virnucpro.summary import write_summary

_fasta_argument = click.argument("fasta", nargs=-1, required=True, type=click.Path(dir_okay=False))
_outdir_option = outdir_option("Directory for <stem>.npz per input, failed_files.txt and summary.json.")


def _run(
    command: str, fasta: tuple[str, ...], outdir: Path, spec: ModelSpec, budget: int | None,
    gpus: str | None, workers: int | None, resume: bool, quiet: bool,
) -> int:
    """Run the engine, write OUTDIR/summary.json, return the exit code."""
    spec.check()  # a mistyped model path or name stops here, before any worker starts
    progress = "quiet" if quiet else "auto"
    with claimed_outdir(outdir):
        result = run_embedding(
            list(fasta), spec, outdir, budget, gpus=gpus, workers=workers, resume=resume, progress=progress
        )
        summary = {"command": command, "model": repr(spec), "exit_status": result.exit_code}
        write_summary(outdir, {**summary, "engine": result.stats})
    return result.exit_code


@cli.command("embed-esm", short_help="ESM-2 embeddings of protein FASTA files (all GPUs).")
@_fasta_argument
@_outdir_option
@esm_model_options
@device_options
@verbosity_options
def embed_esm(
    fasta: tuple[str, ...],
    outdir: Path,
    esm_model: str,
    esm_layer: int | None,
    esm_batch_size: int | None,
    gpus: str | None,
    workers: int | None,
    precision: str,
    resume: bool,
    verbose: bool,
    quiet: bool,
) -> int:
    """Embed protein FASTA files with ESM-2: OUTDIR/<stem>.npz per file; exit 0, 2 (partial) or 1."""
    init_logging(verbose, quiet)
    spec = EsmSpec(esm_model, layer=esm_layer, precision=precision)
    return _run("embed-esm", fasta, outdir, spec, esm_batch_size, gpus, workers, resume, quiet)


@cli.command("embed-dna", short_help="DNABERT-S embeddings of nucleotide FASTA files (all GPUs).")
@_fasta_argument
@_outdir_option
@dna_model_options
@device_options
@verbosity_options
def embed_dna(
    fasta: tuple[str, ...],
    outdir: Path,
    dna_model: str,
    dna_batch_size: int | None,
    gpus: str | None,
    workers: int | None,
    precision: str,
    resume: bool,
    verbose: bool,
    quiet: bool,
) -> int:
    """Embed nucleotide FASTA files with DNABERT-S: OUTDIR/<stem>.npz per file; exit 0, 2 (partial) or 1."""
    init_logging(verbose, quiet)
    spec = DnaSpec(dna_model, precision=precision)
    return _run("embed-dna", fasta, outdir, spec, dna_batch_size, gpus, workers, resume, quiet)
