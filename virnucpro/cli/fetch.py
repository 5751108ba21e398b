"""``virnucpro fetch-model``: a model given by name, fetched once into a directory."""

from __future__ import annotations

from pathlib import Path

import click

from virnucpro.cli.options import outdir_option, verbosity_options
from virnucpro.contracts import EXIT_OK


@click.command("fetch-model", short_help="Fetch a model given by name (ESM-2, DNABERT-S, classifier) into a directory.")
@click.argument("kind", type=click.Choice(["esm", "dna", "classifier"]))
@click.argument("name")
@outdir_option("Directory for the model's files (ESM-2: NAME.pt and its contact regression; DNA: a folder).")
@verbosity_options
def fetch_model_command(kind: str, name: str, outdir: Path) -> int:
    """Fetch model NAME of KIND (a fair-esm name, a Hugging Face hub id, or 300/500) into OUTDIR.

    The files come from the usual caches (TORCH_HOME, HF_HOME, VIRNUCPRO_CACHE), downloaded
    there first when missing; the paths written are printed, one per line.
    """
    from virnucpro.fetch import fetch_model

    for path in fetch_model(kind, name, outdir):
        click.echo(str(path))
    return EXIT_OK
