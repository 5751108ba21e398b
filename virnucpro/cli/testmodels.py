"""``virnucpro make-test-models``: tiny random ESM-2, DNA BERT and classifier in the real formats."""

from __future__ import annotations

from pathlib import Path

import click

from virnucpro.cli.options import chunk_length_option, verbosity_options

_SIZES = ("tiny", "t6")  # testmodels.SIZES, without importing torch for --help (a test keeps them equal)


@click.command("make-test-models", short_help="Write tiny random models in the real formats (tests, demos).")
@click.argument("outdir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--size", type=click.Choice(list(_SIZES)), default="tiny", show_default=True, help="Model size.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same weights).")
@chunk_length_option
@verbosity_options
def make_test_models_command(outdir: Path, size: str, seed: int, chunk_length: int) -> int:
    """Write test models to OUTDIR and print their paths (ESM-2 .pt, DNA directory, classifier)."""
    from virnucpro.contracts import EXIT_OK
    from virnucpro.testmodels import make_test_models

    models = make_test_models(outdir, size=size, seed=seed, chunk_length=chunk_length)
    click.echo(f"esm\t{models.esm}\ndna\t{models.dna}\nclassifier\t{models.classifier}")
    return EXIT_OK
