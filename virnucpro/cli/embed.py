"""``virnucpro embed-esm`` / ``embed-dna``: one embedding file per input FASTA (the worker engine)."""

from __future__ import annotations

from pathlib import Path

import click

from virnucpro.cli import cli
from virnucpro.cli.options import (
    device_options,
    dna_model_options,
    esm_model_options,
    gpu_task_options,
    init_logging,
    outdir_option,
    verbosity_options,
)
from virnucpro.embeddings.base import EmbedderSpec
from virnucpro.engine import run_embedding
from virnucpro.outdir import claimed_outdir
from virnucpro.summary import write_summary

_fasta_argument = click.argument("fasta", nargs=-1, required=True, type=click.Path(dir_okay=False))
_outdir_option = outdir_option("Directory for <stem>.npz per input, failed_files.txt and summary.json.")


def _run(
    fasta: tuple[str, ...], outdir: Path, spec: EmbedderSpec, budget: int | None,
    gpus: str | None, workers: int | None, resume: bool, quiet: bool,
    require_gpu: bool = False, claim_gpu_dir: Path | None = None,
) -> int:
    """Run the engine, write OUTDIR/summary.json, return the exit code."""
    spec.check()  # a mistyped model path or name stops here, before any worker starts
    progress = "quiet" if quiet else "auto"
    if require_gpu or claim_gpu_dir is not None:
        from virnucpro.engine.devices import select_gpus
        from virnucpro.engine.gpu_claim import claim_and_expose, require_gpus

        entries = select_gpus(gpus)
        require_gpus(entries)
        if claim_gpu_dir is not None:
            claim_and_expose(entries, claim_gpu_dir)  # held until this process ends
            gpus = None  # the claimed GPU is now the only one visible
    with claimed_outdir(outdir):
        result = run_embedding(
            list(fasta), spec, outdir, budget, gpus=gpus, workers=workers, resume=resume, progress=progress
        )
        summary = {"command": f"embed-{spec.kind}", "model": repr(spec), "exit_status": result.exit_code}
        write_summary(outdir, {**summary, "engine": result.stats})
    return result.exit_code


@cli.command("embed-esm", short_help="ESM-2 embeddings of protein FASTA files (all GPUs).")
@_fasta_argument
@_outdir_option
@esm_model_options
@device_options
@gpu_task_options
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
    require_gpu: bool,
    claim_gpu_dir: Path | None,
    verbose: bool,
    quiet: bool,
) -> int:
    """Embed protein FASTA files with ESM-2: OUTDIR/<stem>.npz per file; exit 0, 2 (partial) or 1."""
    init_logging(verbose, quiet)
    spec = EmbedderSpec("esm", esm_model, layer=esm_layer, precision=precision)
    return _run(fasta, outdir, spec, esm_batch_size, gpus, workers, resume, quiet, require_gpu, claim_gpu_dir)


@cli.command("embed-dna", short_help="DNABERT-S embeddings of nucleotide FASTA files (all GPUs).")
@_fasta_argument
@_outdir_option
@dna_model_options
@device_options
@gpu_task_options
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
    require_gpu: bool,
    claim_gpu_dir: Path | None,
    verbose: bool,
    quiet: bool,
) -> int:
    """Embed nucleotide FASTA files with DNABERT-S: OUTDIR/<stem>.npz per file; exit 0, 2 (partial) or 1."""
    init_logging(verbose, quiet)
    spec = EmbedderSpec("dna", dna_model, precision=precision)
    return _run(fasta, outdir, spec, dna_batch_size, gpus, workers, resume, quiet, require_gpu, claim_gpu_dir)
