"""``virnucpro predict``: every stage on one machine, all its GPUs."""

from __future__ import annotations

from pathlib import Path

from virnucpro.cli import cli
from virnucpro.cli.options import (
    chunk_length_option,
    classifier_options,
    device_options,
    dna_model_options,
    esm_model_options,
    init_logging,
    outdir_option,
    sequence_inputs_argument,
    shard_size_option,
    verbosity_options,
)
from virnucpro.cli.output_options import OutputChoices, output_options
from virnucpro.embeddings.base import EmbedderSpec
from virnucpro.pipeline import PredictOptions, run_predict


@cli.command("predict", short_help="Everything: prepare, embed with both models, classify.")
@sequence_inputs_argument
@outdir_option("Output directory.")
@chunk_length_option
@classifier_options
@esm_model_options
@dna_model_options
@device_options
@shard_size_option
@output_options()
@verbosity_options
def predict_command(
    inputs: tuple[str, ...],
    outdir: Path,
    chunk_length: int,
    classifier: str | None,
    batch_size: int,
    virus_fraction: float,
    esm_model: str,
    esm_layer: int | None,
    esm_batch_size: int | None,
    dna_model: str,
    dna_batch_size: int | None,
    gpus: str | None,
    workers: int | None,
    precision: str,
    resume: bool,
    shard_size: int,
    verbose: bool,
    quiet: bool,
    **outputs: object,
) -> int:
    """Predict viral sequences in FASTA/FASTQ INPUT... (plain, gzip, bzip2 or xz; - for standard input); exit 0 ok, 2 partial, 1 failed."""
    init_logging(verbose, quiet)
    choices = OutputChoices.from_options(outputs)
    options = PredictOptions(
        chunk_length=chunk_length,
        classifier=classifier,
        esm=EmbedderSpec("esm", esm_model, esm_layer, precision),
        dna=EmbedderSpec("dna", dna_model, None, precision),
        esm_batch_tokens=esm_batch_size,
        dna_batch_tokens=dna_batch_size,
        batch_size=batch_size,
        gpus=gpus,
        workers=workers,
        resume=resume,
        shard_size=shard_size,
        rule=choices.call_rule(virus_fraction),
        progress="quiet" if quiet else "auto",
        pairing=choices.pairing,
        regions=choices.regions,
        extract=choices.extract,
    )
    return run_predict(list(inputs), outdir, options)
