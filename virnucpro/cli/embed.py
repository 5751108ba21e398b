"""``virnucpro embed-esm`` / ``embed-dna``: one embedding file per input FASTA (the worker engine)."""

from __future__ import annotations

from pathlib import Path

import click

from virnucpro.cli.options import (
    DeviceOptions,
    DnaOptions,
    EsmOptions,
    GpuTaskOptions,
    device_options,
    dna_model_options,
    esm_model_options,
    gpu_task_options,
    outdir_option,
    verbosity_options,
)

_fasta_argument = click.argument("fasta", nargs=-1, required=True, type=click.Path(dir_okay=False))
_outdir_option = outdir_option("Directory for <stem>.npz per input, failed_files.txt and summary.json.")


def _run(
    command: str, fasta: tuple[str, ...], outdir: Path, model: EsmOptions | DnaOptions, devices: DeviceOptions,
    gpu_task: GpuTaskOptions,
) -> int:
    """Run the engine, write OUTDIR/summary.json, return the exit code."""
    from virnucpro.engine import run_embedding
    from virnucpro.outdir import claimed_outdir
    from virnucpro.summary_json import write_summary

    spec = model.spec(devices.precision)
    spec.check()  # a mistyped model path or name stops here, before any worker starts
    gpus = gpu_task.apply(devices.gpus)
    with claimed_outdir(outdir):
        result = run_embedding(
            list(fasta), spec, outdir, model.batch_tokens, gpus=gpus, workers=devices.workers,
            resume=devices.resume,
        )
        summary = {"command": command, "model": repr(spec), "exit_status": result.exit_code}
        write_summary(outdir, {**summary, "engine": result.stats})
    return result.exit_code


@click.command("embed-esm", short_help="ESM-2 embeddings of protein FASTA files (all GPUs).")
@_fasta_argument
@_outdir_option
@esm_model_options
@device_options
@gpu_task_options
@verbosity_options
def embed_esm(
    fasta: tuple[str, ...], outdir: Path, esm: EsmOptions, devices: DeviceOptions, gpu_task: GpuTaskOptions
) -> int:
    """Embed protein FASTA files with ESM-2: OUTDIR/<stem>.npz per file; exit 0, 2 (partial) or 1."""
    return _run("embed-esm", fasta, outdir, esm, devices, gpu_task)


@click.command("embed-dna", short_help="DNABERT-S embeddings of nucleotide FASTA files (all GPUs).")
@_fasta_argument
@_outdir_option
@dna_model_options
@device_options
@gpu_task_options
@verbosity_options
def embed_dna(
    fasta: tuple[str, ...], outdir: Path, dna: DnaOptions, devices: DeviceOptions, gpu_task: GpuTaskOptions
) -> int:
    """Embed nucleotide FASTA files with DNABERT-S: OUTDIR/<stem>.npz per file; exit 0, 2 (partial) or 1."""
    return _run("embed-dna", fasta, outdir, dna, devices, gpu_task)
