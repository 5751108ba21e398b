"""``virnucpro evaluate``, ``evaluate-embedded`` and ``evaluate-predictions``: a classifier measured on labelled data."""

from __future__ import annotations

from pathlib import Path

import click

from virnucpro.cli import cli
from virnucpro.cli.options import (
    classifier_chunk_length_option,
    classifier_options,
    init_logging,
    outdir_option,
    verbosity_options,
)
from virnucpro.cli.training_options import (
    calibrate_options,
    embedding_options,
    embeddings_options,
    evaluation_options,
    existing_directory,
    genbank_frames_option,
    sheet_argument,
)

_OUTDIR_HELP = "Directory for the prediction files, metrics.json/.tsv, thresholds.tsv and plots/."


@cli.command("evaluate", short_help="Everything: a labelled sheet classified on all GPUs and measured.")
@sheet_argument
@outdir_option(_OUTDIR_HELP + " work/ for --resume.")
@classifier_chunk_length_option
@classifier_options
@genbank_frames_option
@evaluation_options
@calibrate_options
@embedding_options
@verbosity_options
def evaluate_command(
    sheet: Path, outdir: Path, chunk_length: int | None, classifier: str | None, batch_size: int,
    virus_fraction: float, genbank_frames: str, evaluation, calibrate, settings, verbose: bool, quiet: bool,
) -> int:  # fmt: skip
    """Classify the labelled files of SHEET (path,label[,group][,date]) as predict does and measure the calls (exit 0, 2, 1)."""
    from virnucpro.classify import CallRule
    from virnucpro.training.labelled import LabelledOptions
    from virnucpro.training.run import run_evaluate

    init_logging(verbose, quiet)
    settings.chunk_length, settings.classifier, settings.batch_size = chunk_length, classifier, batch_size
    settings.rule, settings.progress = CallRule(virus_fraction), "quiet" if quiet else "auto"
    labelled = LabelledOptions(shard_size=settings.shard_size, genbank_frames=genbank_frames, split=None)
    return run_evaluate(sheet, outdir, labelled, settings, evaluation, calibrate)


@cli.command("evaluate-embedded", short_help="Classify and measure a labelled prepared directory's embeddings.")
@embeddings_options
@outdir_option(_OUTDIR_HELP)
@classifier_options
@evaluation_options
@calibrate_options
@verbosity_options
def evaluate_embedded_command(
    embedded, outdir: Path, classifier: str | None, batch_size: int, virus_fraction: float, evaluation, calibrate,
    verbose: bool, quiet: bool,
) -> int:  # fmt: skip
    """The prediction files and metrics of a `prepare-labelled --no-split` directory and its embeddings (exit 0, 2, 1)."""
    from virnucpro.classifier.checkpoints import load_training_info
    from virnucpro.classifier.reference import resolve_classifier
    from virnucpro.classify import CallRule
    from virnucpro.contracts import read_failures
    from virnucpro.outdir import claimed_outdir
    from virnucpro.prepare import read_prepare_info
    from virnucpro.summary import StageTimer, write_summary
    from virnucpro.training.run import evaluate_embedded

    init_logging(verbose, quiet)
    prepared, dna, esm, failed_files = embedded
    chunk_length = read_prepare_info(prepared)["chunk_length"]
    timer = StageTimer()
    with timer.stage("load_classifier"):
        loaded = resolve_classifier(classifier or str(chunk_length), chunk_length)
    training = load_training_info(Path(classifier)) if classifier and Path(classifier).is_file() else None
    failures = [failure for path in failed_files for failure in read_failures(path)]
    with claimed_outdir(outdir):
        with timer.stage("evaluate"):
            result = evaluate_embedded(prepared, dna, esm, outdir, loaded, evaluation, batch_size=batch_size,
                                       rule=CallRule(virus_fraction), failures=failures, training=training,
                                       calibrate=calibrate)  # fmt: skip
        write_summary(outdir, {**result.summary, "command": "evaluate-embedded", "timings_s": timer.seconds})
    return result.exit_status


@cli.command("evaluate-predictions", short_help="Measure an earlier predict output against a labelled sheet.")
@click.argument("predictions", type=existing_directory)
@click.option("--sheet", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The labelled sheet.")
@outdir_option("Directory for metrics.json/.tsv, thresholds.tsv and plots/.")
@evaluation_options
@verbosity_options
def evaluate_predictions_command(
    predictions: Path, sheet: Path, outdir: Path, evaluation, verbose: bool, quiet: bool
) -> int:
    """Metrics of the prediction files in PREDICTIONS (a predict --outdir) for the labels of SHEET (exit 0 or 1)."""
    from virnucpro.outdir import claimed_outdir
    from virnucpro.training.run import evaluate_existing

    init_logging(verbose, quiet)
    with claimed_outdir(outdir):
        evaluate_existing(predictions, sheet, outdir, evaluation)
    return 0
