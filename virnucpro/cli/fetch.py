"""``virnucpro fetch-model``: a model given by name, fetched once into a directory."""

from __future__ import annotations

from pathlib import Path

import click

from virnucpro.cli import cli
from virnucpro.cli.options import init_logging, outdir_option, verbosity_options
from virnucpro.contracts import EXIT_OK


@cli.command("fetch-model", short_help="Fetch a model given by name (ESM-2, DNABERT-S, classifier) into a directory.")
@click.argument("kind", type=click.Choice(["esm", "dna", "classifier"]))
@click.argument("name")
@outdir_option("Directory for the model's files (ESM-2: NAME.pt and its contact regression; DNA: a folder).")
@verbosity_options
def fetch_model(kind: str, name: str, outdir: Path, verbose: bool, quiet: bool) -> int:
    """Fetch model NAME of KIND (a fair-esm name, a Hugging Face hub id, or 300/500) into OUTDIR.

    The files come from the usual caches (TORCH_HOME, HF_HOME, VIRNUCPRO_CACHE), downloaded
    there first when missing; the paths written are printed, one per line.
    """
    from virnucpro.fetch import fetch_model as fetch

    init_logging(verbose, quiet)
    for path in fetch(kind, name, outdir):
        click.echo(str(path))
    return EXIT_OK
