"""``virnucpro predict``: every stage on one machine, all its GPUs."""

from __future__ import annotations

from pathlib import Path

import click

from virnucpro.cli.options import (
    ClassifierOptions,
    DeviceOptions,
    DnaOptions,
    EsmOptions,
    classifier_chunk_length_option,
    classifier_options,
    device_options,
    dna_model_options,
    esm_model_options,
    outdir_option,
    predict_options,
    sequence_inputs_argument,
    shard_size_option,
    verbosity_options,
)
from virnucpro.cli.output_options import OutputChoices, output_options


@click.command("predict", short_help="Everything: prepare, embed with both models, classify.")
@sequence_inputs_argument
@outdir_option("Output directory.")
@classifier_chunk_length_option
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
    chunk_length: int | None,
    classifier: ClassifierOptions,
    esm: EsmOptions,
    dna: DnaOptions,
    devices: DeviceOptions,
    shard_size: int,
    outputs: OutputChoices,
) -> int:
    """Predict viral sequences in FASTA/FASTQ INPUT... (plain, gzip, bzip2 or xz; - for standard input); exit 0 ok, 2 partial, 1 failed."""
    from virnucpro.predict import run_predict

    options = predict_options(
        esm,
        dna,
        devices,
        shard_size,
        chunk_length=chunk_length,
        classifier=classifier.classifier,
        batch_size=classifier.batch_size,
        rule=outputs.call_rule(classifier.virus_fraction),
        pairing=outputs.pairing,
        regions=outputs.regions,
        extract=outputs.extract,
    )
    return run_predict(list(inputs), outdir, options)
