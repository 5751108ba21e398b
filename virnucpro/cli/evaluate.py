"""``virnucpro evaluate``, ``evaluate-embedded`` and ``evaluate-predictions``: a classifier measured on labelled data."""

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
    shard_size_option,
    verbosity_options,
)
from virnucpro.cli.training_options import (
    EmbeddedInputs,
    calibrate_options,
    embeddings_options,
    evaluation_options,
    existing_directory,
    genbank_frames_option,
    sheet_argument,
)

_OUTDIR_HELP = "Directory for the prediction files, metrics.json/.tsv, thresholds.tsv and plots/."


@click.command("evaluate", short_help="Everything: a labelled sheet classified on all GPUs and measured.")
@sheet_argument
@outdir_option(_OUTDIR_HELP + " work/ for --resume.")
@classifier_chunk_length_option
@classifier_options
@genbank_frames_option
@evaluation_options
@calibrate_options
@esm_model_options
@dna_model_options
@device_options
@shard_size_option
@verbosity_options
def evaluate_command(
    sheet: Path, outdir: Path, chunk_length: int | None, classifier: ClassifierOptions, genbank_frames: str,
    evaluation, calibrate, esm: EsmOptions, dna: DnaOptions, devices: DeviceOptions, shard_size: int,
) -> int:  # fmt: skip
    """Classify the labelled files of SHEET (path,label[,group][,date]) as predict does and measure the calls (exit 0, 2, 1)."""
    from virnucpro.classify import CallRule
    from virnucpro.training.labelled import LabelledOptions
    from virnucpro.training.run import run_evaluate

    settings = predict_options(
        esm, dna, devices, shard_size, chunk_length=chunk_length, classifier=classifier.classifier,
        batch_size=classifier.batch_size, rule=CallRule(classifier.virus_fraction),
    )  # fmt: skip
    labelled = LabelledOptions(shard_size=shard_size, genbank_frames=genbank_frames, split=None)
    return run_evaluate(sheet, outdir, labelled, settings, evaluation, calibrate)


@click.command("evaluate-embedded", short_help="Classify and measure a labelled prepared directory's embeddings.")
@embeddings_options
@outdir_option(_OUTDIR_HELP)
@classifier_options
@evaluation_options
@calibrate_options
@verbosity_options
def evaluate_embedded_command(
    embedded: EmbeddedInputs, outdir: Path, classifier: ClassifierOptions, evaluation, calibrate
) -> int:
    """The prediction files and metrics of a `prepare-labelled --no-split` directory and its embeddings (exit 0, 2, 1)."""
    from virnucpro.classifier.checkpoints import load_training_info
    from virnucpro.classifier.reference import resolve_classifier
    from virnucpro.classify import CallRule
    from virnucpro.outdir import claimed_outdir
    from virnucpro.prepare import read_prepare_info
    from virnucpro.summary_json import StageTimer, write_summary
    from virnucpro.training.run import evaluate_embedded

    chunk_length = read_prepare_info(embedded.prepared)["chunk_length"]
    path = classifier.classifier
    timer = StageTimer()
    with timer.stage("load_classifier"):
        loaded = resolve_classifier(path or str(chunk_length), chunk_length)
    training = load_training_info(Path(path)) if path and Path(path).is_file() else None
    with claimed_outdir(outdir):
        with timer.stage("evaluate"):
            result = evaluate_embedded(embedded.prepared, embedded.dna, embedded.esm, outdir, loaded, evaluation,
                                       batch_size=classifier.batch_size, rule=CallRule(classifier.virus_fraction),
                                       failures=embedded.failures(), training=training,
                                       calibrate=calibrate)  # fmt: skip
        write_summary(outdir, {**result.summary, "command": "evaluate-embedded", "timings_s": timer.seconds})
    return result.exit_status


@click.command("evaluate-predictions", short_help="Measure an earlier predict output against a labelled sheet.")
@click.argument("predictions", type=existing_directory)
@click.option("--sheet", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The labelled sheet.")
@outdir_option("Directory for metrics.json/.tsv, thresholds.tsv and plots/.")
@evaluation_options
@verbosity_options
def evaluate_predictions_command(predictions: Path, sheet: Path, outdir: Path, evaluation) -> int:
    """Metrics of the prediction files in PREDICTIONS (a predict --outdir) for the labels of SHEET (exit 0 or 1)."""
    from virnucpro.outdir import claimed_outdir
    from virnucpro.training.run import evaluate_existing

    with claimed_outdir(outdir):
        evaluate_existing(predictions, sheet, outdir, evaluation)
    return 0
