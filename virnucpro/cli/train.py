"""``virnucpro prepare-labelled``, ``fit`` and ``train``: training a classifier on labelled data."""

from __future__ import annotations

from pathlib import Path

import click

from virnucpro.cli.options import (
    ClassifierOptions,
    DeviceOptions,
    DnaOptions,
    EsmOptions,
    chunk_length_option,
    device_options,
    dna_model_options,
    esm_model_options,
    outdir_option,
    predict_options,
    scoring_options,
    shard_size_option,
    verbosity_options,
)
from virnucpro.cli.training_options import (
    EmbeddedInputs,
    embeddings_options,
    evaluation_options,
    fit_options,
    genbank_frames_option,
    sheet_argument,
    split_options,
)


@click.command("prepare-labelled", short_help="Labelled sheet -> prepared frames and shards, labels, split.")
@sheet_argument
@outdir_option("Directory for the files of `prepare` plus labels.tsv and split.tsv.")
@chunk_length_option
@shard_size_option
@genbank_frames_option
@split_options
@click.option("--no-split", is_flag=True, help="Evaluation data: write no split.")
@verbosity_options
def prepare_labelled_command(
    sheet: Path, outdir: Path, chunk_length: int, shard_size: int, genbank_frames: str, split, no_split: bool
) -> int:
    """Chunk and translate the files of SHEET (path,label[,group][,date]) and split them (exit 0 or 1)."""
    from virnucpro.outdir import claimed_outdir
    from virnucpro.training.labelled import LabelledOptions, prepare_labelled
    from virnucpro.training.sheet import read_sheet

    read = read_sheet(sheet)
    if not no_split:
        read.require_both_labels()
    options = LabelledOptions(chunk_length, shard_size, genbank_frames, None if no_split else split)
    with claimed_outdir(outdir):
        prepare_labelled(read, outdir, options)
    return 0


@click.command("fit", short_help="Train the classifier on the embeddings of a labelled prepared directory.")
@embeddings_options
@outdir_option("Directory for classifier.pt, the training log, metrics, plots and predictions/.")
@fit_options
@evaluation_options
@scoring_options
@verbosity_options
def fit_command(
    embedded: EmbeddedInputs, outdir: Path, fit, evaluation, scoring: ClassifierOptions
) -> int:
    """Train, calibrate and measure the MLP on embedded frames; write OUTDIR/classifier.pt (exit 0, 2, 1)."""
    from virnucpro.classify import CallRule
    from virnucpro.outdir import claimed_outdir
    from virnucpro.summary_json import StageTimer, write_summary
    from virnucpro.training.fit import fit as run_fit

    failures = embedded.failures()
    timer = StageTimer()
    with claimed_outdir(outdir):
        with timer.stage("fit"):
            result = run_fit(embedded.prepared, embedded.dna, embedded.esm, outdir, fit, evaluation, failures,
                             scoring.batch_size, CallRule(scoring.virus_fraction))  # fmt: skip
        write_summary(outdir, {**result.summary, "timings_s": timer.seconds})
    return result.exit_status


@click.command("train", short_help="Everything: prepare a labelled sheet, embed on all GPUs, fit, measure.")
@sheet_argument
@outdir_option("Output directory (classifier.pt, metrics, plots; work/ for --resume).")
@chunk_length_option
@genbank_frames_option
@split_options
@fit_options
@evaluation_options
@esm_model_options
@dna_model_options
@device_options
@shard_size_option
@verbosity_options
def train_command(
    sheet: Path, outdir: Path, chunk_length: int, genbank_frames: str, split, fit, evaluation,
    esm: EsmOptions, dna: DnaOptions, devices: DeviceOptions, shard_size: int,
) -> int:  # fmt: skip
    """Train a classifier on the labelled files of SHEET (path,label[,group][,date]); exit 0, 2 (frames left out) or 1."""
    from virnucpro.training.labelled import LabelledOptions
    from virnucpro.training.run import run_train

    settings = predict_options(esm, dna, devices, shard_size, chunk_length=chunk_length)
    labelled = LabelledOptions(chunk_length, shard_size, genbank_frames, split)
    return run_train(sheet, outdir, labelled, settings, fit, evaluation)
