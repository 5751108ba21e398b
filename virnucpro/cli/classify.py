"""``virnucpro classify``: prediction files from a prepared sample and its embeddings."""

from __future__ import annotations

from pathlib import Path

import click

from virnucpro.cli.options import ClassifierOptions, classifier_options, outdir_option, verbosity_options
from virnucpro.cli.output_options import OutputChoices, output_options

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
@click.option(
    "--input",
    "input_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="An input file of the sample, for --extract (repeatable: every input, in the order prepare was given "
    "them) [default: the paths prepare recorded]. Checked to be the prepared files.",
)
@classifier_options
@output_options(pairing=False)
@verbosity_options
def classify_command(
    prepared: Path,
    dna_embeddings: Path,
    esm_embeddings: Path,
    outdir: Path,
    failed_files: tuple[Path, ...],
    input_files: tuple[str, ...],
    classifier: ClassifierOptions,
    outputs: OutputChoices,
) -> int:
    """Score the frames of a prepared sample and call chunks and sequences; write the viral
    regions and extract the sequences of the chosen calls (exit 0/2/1)."""
    from virnucpro.classifier.reference import resolve_classifier
    from virnucpro.classify import classify_prepared, classify_summary
    from virnucpro.contracts import SEQUENCE_PREDICTIONS, read_failures
    from virnucpro.extract import extract_sequences, plan_extraction
    from virnucpro.outdir import claimed_outdir
    from virnucpro.prepare import read_prepare_info
    from virnucpro.summary_json import StageTimer, write_summary

    timer = StageTimer()
    chunk_length = read_prepare_info(prepared)["chunk_length"]
    extraction = plan_extraction(prepared, outputs.extract, list(input_files) if input_files else None)
    with timer.stage("load_classifier"):
        loaded = resolve_classifier(classifier.classifier or str(chunk_length), chunk_length)
    upstream = [failure for path in failed_files for failure in read_failures(path)]
    rule = outputs.call_rule(classifier.virus_fraction)
    with claimed_outdir(outdir):
        with timer.stage("classify"):
            result = classify_prepared(
                prepared, dna_embeddings, esm_embeddings, outdir, loaded, chunk_length, classifier.batch_size, rule,
                upstream, outputs.regions,
            )  # fmt: skip
        with timer.stage("extract"):
            extracted = extract_sequences(extraction, outdir / SEQUENCE_PREDICTIONS, outdir)
        summary = classify_summary(result, loaded[1], rule, outputs.regions)
        summary.update(command="classify", prepared=str(prepared), chunk_length=chunk_length, timings_s=timer.seconds)
        summary.update(extract=extracted.to_dict())
        write_summary(outdir, summary)
    return result.exit_status
