"""``virnucpro prepare``: chunk, translate and filter the input; write frames and shards."""

from __future__ import annotations

from pathlib import Path

import click

from virnucpro.cli.options import (
    chunk_length_option,
    outdir_option,
    sequence_inputs_argument,
    shard_size_option,
    verbosity_options,
)
from virnucpro.cli.output_options import pairing_option


@click.command("prepare", short_help="Chunks, six-frame translation, kept frames, shards.")
@sequence_inputs_argument
@outdir_option("Directory for chunks.fa, frames.*, manifest.tsv and shards/.")
@chunk_length_option
@shard_size_option
@pairing_option
@verbosity_options
def prepare_command(inputs: tuple[str, ...], outdir: Path, chunk_length: int, shard_size: int, pairing: str) -> int:
    """Split INPUT... (FASTA/FASTQ, plain, gzip, bzip2 or xz; - for standard input) into chunks and keep their stop-free frames."""
    from virnucpro.contracts import EXIT_OK
    from virnucpro.outdir import claimed_outdir
    from virnucpro.prepare import prepare
    from virnucpro.seqio import check_inputs

    check_inputs(inputs)  # before the output directory is created
    with claimed_outdir(outdir):
        prepare(inputs, outdir, chunk_length, shard_size, pairing)
    return EXIT_OK
