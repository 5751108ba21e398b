"""Options shared by several subcommands, defined once."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from virnucpro.contracts import CHUNK_LENGTHS, REFERENCE_DNA_MODEL, REFERENCE_ESM_MODEL
from virnucpro.log import setup_logging

F = Callable[..., Any]


def _stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


def _check_gpus(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Refuse a malformed ``--gpus`` before any work (the engine parses it again where it is used)."""
    if value is not None:
        from virnucpro.engine.devices import parse_gpus
        from virnucpro.errors import InputError

        try:
            parse_gpus(value)
        except InputError as error:
            raise click.BadParameter(str(error).removeprefix(f"--gpus {value!r}: ")) from None
    return value


STANDARD_INPUT = "/dev/stdin"  # what ``-`` stands for: read once, like any stream


def _sequence_inputs(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """``-`` is standard input; refused when that is a terminal (the run would wait for typing)."""
    if "-" in values and sys.stdin.isatty():
        raise click.BadParameter("'-' reads standard input, which is a terminal here: pipe the sequences in")
    return tuple(STANDARD_INPUT if value == "-" else value for value in values)


sequence_inputs_argument = click.argument(
    "inputs", nargs=-1, required=True, metavar="INPUT...", callback=_sequence_inputs
)

verbosity_options = _stack(
    click.option("--verbose", "-v", is_flag=True, help="Debug logging and tracebacks on errors."),
    click.option("--quiet", "-q", is_flag=True, help="Print errors only."),
)

chunk_length_option = click.option(
    "--chunk-length",
    type=click.Choice([str(n) for n in CHUNK_LENGTHS]),
    default="300",
    show_default=True,
    callback=lambda _c, _p, value: int(value),
    help="Chunk length in bp; must match the classifier (300 or 500).",
)

esm_model_options = _stack(
    click.option(
        "--esm-model",
        default=REFERENCE_ESM_MODEL,
        show_default=True,
        help="fair-esm model name (downloaded once to the torch hub cache) or a local esm2*.pt file.",
    ),
    click.option("--esm-layer", type=int, default=None, help="Representation layer [default: the final layer]."),
    click.option(
        "--esm-batch-size",
        type=click.IntRange(min=1),
        default=None,
        help="Tokens per ESM-2 batch (padded), halved automatically on out-of-memory "
        "[default: 2048 on the CPU, 65536 on a GPU].",
    ),
)

dna_model_options = _stack(
    click.option(
        "--dna-model",
        default=REFERENCE_DNA_MODEL,
        show_default=True,
        help="DNABERT-S hub id or a local transformers directory (save_pretrained layout).",
    ),
    click.option(
        "--dna-batch-size",
        type=click.IntRange(min=1),
        default=None,
        help="Tokens per DNABERT-S batch (padded), halved automatically on out-of-memory [default: 8192].",
    ),
)

device_options = _stack(
    click.option(
        "--gpus",
        default=None,
        callback=_check_gpus,
        help="Comma-separated GPU indices to use (overrides CUDA_VISIBLE_DEVICES); default all visible, CPU if none.",
    ),
    click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=None,
        help="Worker processes [default: one per selected GPU, 1 on CPU].",
    ),
    click.option(
        "--precision",
        type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
        default="auto",
        show_default=True,
        help=(
            "GPU precision; auto = bf16 (Ampere or newer) or fp16 where a parity check against fp32 "
            "passes at model load, else fp32; CPU always fp32."
        ),
    ),
    click.option("--resume", is_flag=True, help="Skip outputs that are complete and match inputs and models."),
)


def init_logging(verbose: bool, quiet: bool) -> None:
    """Called first by every command."""
    setup_logging(verbose=verbose, quiet=quiet)


class _OutputDirectory(click.Path):
    """A directory to write to; an empty value (an unset shell variable) is refused, not taken for '.'."""

    def __init__(self) -> None:
        super().__init__(file_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path (an unset variable?)", param, ctx)
        return super().convert(value, param, ctx)


def outdir_option(help_text: str) -> Callable[[F], F]:
    """``--outdir/-o DIR`` (required) with the command's own description of what goes there."""
    return click.option("--outdir", "-o", required=True, type=_OutputDirectory(), help=help_text)


def finite(_ctx: click.Context, _param: click.Parameter, value: float | None) -> float | None:
    """A click callback: refuses nan (which FloatRange lets through); None stays None."""
    if value is not None and not math.isfinite(value):  # FloatRange lets nan through
        raise click.BadParameter(f"{value} is not a number")
    return value


classifier_options = _stack(
    click.option(
        "--classifier",
        default=None,
        help="300 or 500 (the reference model, downloaded once and verified), or a checkpoint path "
        "(native or reference format) [default: the reference model for the chunk length].",
    ),
    click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=1024,
        show_default=True,
        help="Frames per classifier batch.",
    ),
    click.option(
        "--virus-fraction",
        type=click.FloatRange(min=0.0, max=1.0, min_open=True),
        callback=finite,
        default=0.5,
        show_default=True,
        help="Call a sequence virus when at least this fraction of its chunks with a coding frame are virus.",
    ),
)


def shard_size_option(func: F) -> F:
    """``--shard-size``: protein residues per frame shard (prepare and predict)."""
    from virnucpro.prepare import DEFAULT_SHARD_RESIDUES

    return click.option(
        "--shard-size",
        type=click.IntRange(min=1),
        default=DEFAULT_SHARD_RESIDUES,
        show_default=True,
        help=(
            "Protein residues per frame shard: the unit of work the workers (GPUs) share and that "
            "--resume keeps (a chunk's frames are never split)."
        ),
    )(func)
