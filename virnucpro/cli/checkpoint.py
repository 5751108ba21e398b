"""``virnucpro convert-checkpoint`` and ``virnucpro fetch-classifier``."""

from __future__ import annotations

from pathlib import Path

import click

from virnucpro.cli.options import verbosity_options
from virnucpro.contracts import CHUNK_LENGTHS, EXIT_OK

_CHUNK_CHOICE = click.Choice([str(n) for n in CHUNK_LENGTHS])


@click.command("convert-checkpoint", short_help="Reference classifier pickle -> native checkpoint, no code run.")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option(
    "--chunk-length",
    type=_CHUNK_CHOICE,
    required=True,
    help="Chunk length the reference model was trained for (300_model.pth: 300, 500_model.pth: 500).",
)
@verbosity_options
def convert_checkpoint(src: Path, dst: Path, chunk_length: str) -> int:
    """Convert a reference SRC (300_model.pth / 500_model.pth) into a native checkpoint DST.

    SRC is read without running any code from it; DST holds the same weights as a plain
    state dict plus metadata (input dims, chunk length, embedding models and layer).
    """
    from virnucpro.classifier.checkpoints import convert_reference

    meta = convert_reference(src, dst, int(chunk_length))
    click.echo(f"{dst}\t{meta.dna_dim}+{meta.esm_dim} -> {meta.hidden_dim} -> 2\tchunk_length={meta.chunk_length}")
    return EXIT_OK


@click.command("fetch-classifier", short_help="Download and verify a reference classifier (300 or 500).")
@click.argument("chunk_length", type=_CHUNK_CHOICE)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Cache directory [default: $VIRNUCPRO_CACHE, else $XDG_CACHE_HOME/virnucpro, else ~/.cache/virnucpro].",
)
@verbosity_options
def fetch_classifier(chunk_length: str, cache_dir: Path | None) -> int:
    """Download upstream's CHUNK_LENGTH bp classifier into the cache (verified) and print its path.

    Run it once where there is network; `--classifier 300|500` then works offline with the
    same cache directory.
    """
    from virnucpro.classifier.reference import fetch_reference_classifier

    click.echo(str(fetch_reference_classifier(int(chunk_length), cache_dir)))
    return EXIT_OK
