"""Options shared by several subcommands, defined once.

Related options reach a command as one object (:func:`option_group`): ``--esm-model``,
``--esm-layer`` and ``--esm-batch-size`` as an :class:`EsmOptions`, the device options as a
:class:`DeviceOptions`, and so on. Nothing heavy is imported here: ``virnucpro --help``
loads this module and every command module, and no library behind them.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from virnucpro.contracts import (
    DEFAULT_SHARD_RESIDUES,
    PRECISIONS,
    REFERENCE_DNA_MODEL,
    REFERENCE_ESM_MODEL,
)

F = Callable[..., Any]


def option(*declarations: str, **attributes: Any) -> Callable[[], click.Option]:
    """A click option to be made for each command that uses it (see :func:`option_group`)."""
    return functools.partial(click.Option, list(declarations), **attributes)


def option_group(name: str | None, make: Callable[..., Any], **options: Callable[[], click.Option]) -> Callable[[F], F]:
    """Add ``options`` to a command; it receives them as one argument ``name``: ``make(key=value, ...)``
    with one keyword per option. With ``name`` None, ``make`` is called and nothing is passed."""

    def decorate(func: F) -> F:
        made = {key: new() for key, new in options.items()}

        @functools.wraps(func)
        def command(*args: Any, **values: Any) -> Any:
            group = make(**{key: values.pop(param.name) for key, param in made.items()})
            return func(*args, **values) if name is None else func(*args, **values, **{name: group})

        command.__click_params__ = [*getattr(func, "__click_params__", []), *reversed(made.values())]  # type: ignore[attr-defined]
        return command

    return decorate


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


def _set_up_logging(verbose: bool, quiet: bool) -> None:
    from virnucpro.log import setup_logging

    setup_logging(verbose=verbose, quiet=quiet)


verbosity_options = option_group(
    None,
    _set_up_logging,
    verbose=option("--verbose", "-v", is_flag=True, help="Debug logging and tracebacks on errors."),
    quiet=option("--quiet", "-q", is_flag=True, help="Print errors only."),
)
"""``--verbose/--quiet``: the logging is set up before the command runs (progress displays
follow it: ``--quiet`` shows none)."""

chunk_length_option = click.option(
    "--chunk-length",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="Chunk length in bp; must match the classifier (the reference models: 300 or 500).",
)

# predict: the chunk length a native checkpoint names is the default.
classifier_chunk_length_option = click.option(
    "--chunk-length",
    type=click.IntRange(min=1),
    default=None,
    help="Chunk length in bp; must match the classifier (the reference models: 300 or 500) "
    "[default: the one the classifier checkpoint names, else 300].",
)


@dataclass(frozen=True)
class EsmOptions:
    """``--esm-model``, ``--esm-layer``, ``--esm-batch-size``."""

    model: str
    layer: int | None
    batch_tokens: int | None  # None: the embedder's default for its device

    def spec(self, precision: str):  # noqa: ANN201  (an EsmSpec; imported when a command runs)
        from virnucpro.embeddings.esm import EsmSpec

        return EsmSpec(self.model, self.layer, precision)


@dataclass(frozen=True)
class DnaOptions:
    """``--dna-model``, ``--dna-batch-size``."""

    model: str
    batch_tokens: int | None

    def spec(self, precision: str):  # noqa: ANN201  (a DnaSpec; imported when a command runs)
        from virnucpro.embeddings.dna import DnaSpec

        return DnaSpec(self.model, precision)


@dataclass(frozen=True)
class DeviceOptions:
    """``--gpus``, ``--workers``, ``--precision``, ``--resume``."""

    gpus: str | None
    workers: int | None
    precision: str
    resume: bool


@dataclass(frozen=True)
class ClassifierOptions:
    """``--classifier``, ``--batch-size``, ``--virus-fraction``."""

    classifier: str | None  # None: the reference model for the chunk length
    batch_size: int
    virus_fraction: float


def predict_options(esm: EsmOptions, dna: DnaOptions, devices: DeviceOptions, shard_size: int, **more: Any):  # noqa: ANN201
    """``predict``'s options object (a :class:`virnucpro.predict.PredictOptions`) from the model and
    device groups and ``--shard-size``; ``more``: its other fields. Imported when a command runs."""
    from virnucpro.predict import PredictOptions

    return PredictOptions(
        esm=esm.spec(devices.precision),
        dna=dna.spec(devices.precision),
        esm_batch_tokens=esm.batch_tokens,
        dna_batch_tokens=dna.batch_tokens,
        gpus=devices.gpus,
        workers=devices.workers,
        resume=devices.resume,
        shard_size=shard_size,
        **more,
    )


esm_model_options = option_group(
    "esm",
    EsmOptions,
    model=option(
        "--esm-model",
        default=REFERENCE_ESM_MODEL,
        show_default=True,
        help="fair-esm model name (downloaded once to the torch hub cache) or a local esm2*.pt file.",
    ),
    layer=option("--esm-layer", type=int, default=None, help="Representation layer [default: the final layer]."),
    batch_tokens=option(
        "--esm-batch-size",
        type=click.IntRange(min=1),
        default=None,
        help="Tokens per ESM-2 batch (padded), halved automatically on out-of-memory "
        "[default: 2048 on the CPU, 65536 on a GPU].",
    ),
)

dna_model_options = option_group(
    "dna",
    DnaOptions,
    model=option(
        "--dna-model",
        default=REFERENCE_DNA_MODEL,
        show_default=True,
        help="DNABERT-S hub id or a local transformers directory (save_pretrained layout).",
    ),
    batch_tokens=option(
        "--dna-batch-size",
        type=click.IntRange(min=1),
        default=None,
        help="Tokens per DNABERT-S batch (padded), halved automatically on out-of-memory [default: 8192].",
    ),
)

device_options = option_group(
    "devices",
    DeviceOptions,
    gpus=option(
        "--gpus",
        default=None,
        callback=_check_gpus,
        help="Comma-separated GPU indices to use (overrides CUDA_VISIBLE_DEVICES); default all visible, CPU if none.",
    ),
    workers=option(
        "--workers",
        type=click.IntRange(min=1),
        default=None,
        help="Worker processes [default: one per selected GPU, 1 on CPU].",
    ),
    precision=option(
        "--precision",
        type=click.Choice(PRECISIONS),
        default="auto",
        show_default=True,
        help=(
            "auto = bf16 (Ampere or newer GPUs, CPUs with AVX512_BF16/AMX) or fp16 (older GPUs) where a "
            "parity check against fp32 passes at model load, else fp32; bf16 on other CPUs and fp16 on "
            "any CPU run as fp32."
        ),
    ),
    resume=option("--resume", is_flag=True, help="Skip outputs that are complete and match inputs and models."),
)

@dataclass(frozen=True)
class GpuTaskOptions:
    """``--require-gpu``, ``--claim-gpu``: for a task on a node it shares with other tasks (the
    pipeline's EMBED processes)."""

    require: bool
    claim_dir: Path | None

    def apply(self, gpus: str | None) -> str | None:
        """Refuse to run without a GPU and claim one, as asked; the ``--gpus`` value to use then."""
        if not self.require and self.claim_dir is None:
            return gpus
        from virnucpro.engine.devices import select_gpus
        from virnucpro.engine.gpu_claim import claim_and_expose, require_gpus

        entries = select_gpus(gpus)
        require_gpus(entries)
        if self.claim_dir is None:
            return gpus
        claim_and_expose(entries, self.claim_dir)  # held until this process ends
        return None  # the claimed GPU is now the only one visible


gpu_task_options = option_group(
    "gpu_task",
    GpuTaskOptions,
    require=option(
        "--require-gpu",
        is_flag=True,
        help="Fail at once (exit 1) when no GPU is visible instead of running on the CPU.",
    ),
    claim_dir=option(
        "--claim-gpu",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        metavar="LOCK_DIR",
        help="Claim one free GPU with a lock file in LOCK_DIR (shared by the tasks of a node) and use only it; "
        "waits while every GPU is claimed.",
    ),
)


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


_batch_size = option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Frames per classifier batch.",
)
_virus_fraction = option(
    "--virus-fraction",
    type=click.FloatRange(min=0.0, max=1.0, min_open=True),
    callback=finite,
    default=0.5,
    show_default=True,
    help="Call a sequence virus when at least this fraction of its chunks with a coding frame are virus.",
)

classifier_options = option_group(
    "classifier",
    ClassifierOptions,
    classifier=option(
        "--classifier",
        default=None,
        help="300 or 500 (the reference model, downloaded once and verified), or a checkpoint path "
        "(native or reference format, e.g. from `virnucpro train`) [default: the reference model for the chunk length].",
    ),
    batch_size=_batch_size,
    virus_fraction=_virus_fraction,
)

scoring_options = option_group(
    "scoring", functools.partial(ClassifierOptions, None), batch_size=_batch_size, virus_fraction=_virus_fraction
)
"""``--batch-size`` and ``--virus-fraction`` alone (``fit``: the classifier is the one it trains)."""

shard_size_option = click.option(
    "--shard-size",
    type=click.IntRange(min=1),
    default=DEFAULT_SHARD_RESIDUES,
    show_default=True,
    help=(
        "Protein residues per frame shard: the unit of work the workers (GPUs) share and that "
        "--resume keeps (a chunk's frames are never split)."
    ),
)
