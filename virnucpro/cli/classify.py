"""``virnucpro classify``: prediction files from a prepared sample and its embeddings."""

from __future__ import annotations

from pathlib import Path

import click

from virnucpro.cli.options import ClassifierOptions, classifier_options, outdir_option, verbosity_options

_dir = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command("classify", short_help="Score a prepared sample's frames and call chunks and sequences.")
@click.option("--prepared", required=True, type=_dir, help="Output directory of `virnucpro prepare`.")
@click.option("--dna-embeddings", required=True, type=click.Path(path_type=Path), help="Directory of DNABERT-S shard embeddings.")
@click.option("--esm-embeddings", required=True, type=click.Path(path_type=Path), help="Directory of ESM-2 shard embeddings.")
@outdir_option("Where to write the prediction files.")
@click.option(
    "--failed",
    "failed_files",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="failed_files.txt of an embedding task (repeatable; missing files are ignored).",
)
@classifier_options
@verbosity_options
def classify_command(
    prepared: Path,
    dna_embeddings: Path,
    esm_embeddings: Path,
    outdir: Path,
    failed_files: tuple[Path, ...],
    classifier: ClassifierOptions,
) -> int:
    """Score the frames of a prepared sample and call chunks and sequences (exit 0/2/1)."""
    from virnucpro.classifier.reference import resolve_classifier
    from virnucpro.classify import CallRule, classify_prepared, classify_summary
    from virnucpro.contracts import read_failures
    from virnucpro.outdir import claimed_outdir
    from virnucpro.prepare import read_prepare_info
    from virnucpro.summary_json import StageTimer, write_summary

    timer = StageTimer()
    chunk_length = read_prepare_info(prepared)["chunk_length"]
    with timer.stage("load_classifier"):
        loaded = resolve_classifier(classifier.classifier or str(chunk_length), chunk_length)
    upstream = [failure for path in failed_files for failure in read_failures(path)]
    rule = CallRule(classifier.virus_fraction)
    with claimed_outdir(outdir):
        with timer.stage("classify"):
            result = classify_prepared(
                prepared, dna_embeddings, esm_embeddings, outdir, loaded, chunk_length, classifier.batch_size, rule,
                upstream,
            )
        summary = classify_summary(result, loaded[1], rule)
        summary.update(command="classify", prepared=str(prepared), chunk_length=chunk_length, timings_s=timer.seconds)
        write_summary(outdir, summary)
    return result.exit_status
