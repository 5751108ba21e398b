"""Option groups of the training and evaluation commands, each handed to the command as one object.

``option_group(name, build, *options)`` adds the options to a command and passes
``name=build(**their values)`` instead of the separate values. The builders import the library
only when the command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from virnucpro.cli.options import device_options, dna_model_options, esm_model_options, shard_size_option

F = Callable[..., Any]


def option_group(name: str, build: Callable[..., Any], *decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Add ``decorators``' options to a command; it receives ``name=build(**values)`` instead."""

    def apply(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {key: kwargs.pop(key) for key in keys}
            return func(*args, **kwargs, **{name: build(**values)})

        wrapper.__click_params__ = list(getattr(func, "__click_params__", []))  # type: ignore[attr-defined]
        before = len(wrapper.__click_params__)  # type: ignore[attr-defined]
        command = wrapper
        for decorator in reversed(decorators):
            command = decorator(command)
        keys = [param.name for param in command.__click_params__[before:]]  # type: ignore[attr-defined]
        return command

    return apply


def _split_options(split: str, test_fraction: float, validation_fraction: float, seed: int, before: str | None):
    from virnucpro.training.sheet import parse_date_option
    from virnucpro.training.splits import SplitOptions

    return SplitOptions(split, test_fraction, validation_fraction, seed, parse_date_option(before) if before else "")


split_options = option_group(
    "split",
    _split_options,
    click.option(
        "--split",
        type=click.Choice(["auto", "group", "sequence", "date", "random"]),
        default="auto",
        show_default=True,
        help="How to hold out: whole groups, whole sequences, by date, or frames at random (the reference's, "
        "leaks); auto = group with a group column, else sequence.",
    ),
    click.option("--test-fraction", type=float, default=0.1, show_default=True, help="Share of frames to test on."),
    click.option(
        "--validation-fraction",
        type=float,
        default=0.1,
        show_default=True,
        help="Share of frames for early stopping and calibration (0: the test part, as the reference).",
    ),
    click.option("--seed", type=int, default=42, show_default=True, help="Seed of the split (--train-seed: of training)."),
    click.option("--before", default=None, metavar="YYYY-MM-DD", help="--split date: test on sequences dated on or after it."),
)


genbank_frames_option = click.option(
    "--genbank-frames",
    type=click.Choice(["cds", "all"]),
    default="cds",
    show_default=True,
    help="GenBank records: cds = the reference's training frames (inside an annotated CDS protein, chunks "
    "with ambiguous bases skipped); all = every stop-free frame, as predict. FASTA/FASTQ: always all.",
)


def _fit_options(train_seed: int, train_batch_size: int, **values: Any):
    from virnucpro.training.hyperparameters import FitOptions

    return FitOptions(seed=train_seed, batch_size=train_batch_size, **values)


fit_options = option_group(
    "fit",
    _fit_options,
    click.option("--learning-rate", type=float, default=2e-4, show_default=True, help="SGD learning rate."),
    click.option("--momentum", type=float, default=0.9, show_default=True, help="SGD momentum."),
    click.option("--lr-step-epochs", type=int, default=10, show_default=True, help="Epochs per learning-rate step."),
    click.option("--lr-gamma", type=float, default=0.85, show_default=True, help="Learning-rate factor per step."),
    click.option("--train-batch-size", type=int, default=32, show_default=True, help="Frames per SGD step."),
    click.option("--max-epochs", type=int, default=200, show_default=True, help="Most epochs."),
    click.option("--patience", type=int, default=5, show_default=True, help="Epochs without a lower validation loss before stopping."),
    click.option("--hidden-dim", type=int, default=512, show_default=True, help="Width of the hidden layer."),
    click.option(
        "--class-weight",
        type=click.Choice(["none", "balanced"]),
        default="none",
        show_default=True,
        help="balanced: weigh the loss by inverse class frequency.",
    ),
    click.option(
        "--train-seed", type=int, default=42, show_default=True, help="Seed of weights, dropout and batch order."
    ),
    click.option(
        "--calibration",
        type=click.Choice(["none", "temperature", "isotonic"]),
        default="none",
        show_default=True,
        help="Calibrate P(virus) on the validation part's chunks; stored in the checkpoint, used by predict.",
    ),
    click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Where the MLP trains (auto: a visible GPU, else the CPU; CPU results are bit-reproducible).",
    ),
    click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for training [default: torch's]."),
)


def _evaluation_options(length_bins: str, target_fpr: tuple[float, ...], plots: bool):
    from virnucpro.errors import InputError
    from virnucpro.training.evaluation import DEFAULT_TARGET_FPRS, EvaluationOptions, target_fprs

    try:
        edges = tuple(int(value) for value in length_bins.split(",") if value.strip())
    except ValueError:
        raise InputError(f"--length-bins {length_bins}: comma-separated lengths in bp") from None
    if any(b <= a for a, b in zip(edges, edges[1:])) or any(edge < 1 for edge in edges):
        raise InputError(f"--length-bins {length_bins}: increasing lengths of at least 1 bp")
    return EvaluationOptions(edges, target_fprs(target_fpr or DEFAULT_TARGET_FPRS), plots)


evaluation_options = option_group(
    "evaluation",
    _evaluation_options,
    click.option(
        "--length-bins",
        default="300,500,1000,5000,10000",
        show_default=True,
        help="Edges (bp) of the sequence-length bins the metrics are broken down by.",
    ),
    click.option(
        "--target-fpr",
        type=float,
        multiple=True,
        help="False-positive rate to find the chunk P(virus) cutoff for (repeatable) [default: 0.01 and 0.05].",
    ),
    click.option("--plots/--no-plots", default=True, show_default=True, help="Draw the PNG plots."),
)


existing_directory = click.Path(exists=True, file_okay=False, path_type=Path)
sheet_argument = click.argument("sheet", type=click.Path(dir_okay=False, path_type=Path))

embeddings_options = option_group(
    "embedded",
    lambda prepared, dna_embeddings, esm_embeddings, failed_files: (prepared, dna_embeddings, esm_embeddings,
                                                                    failed_files),  # fmt: skip
    click.option("--prepared", required=True, type=existing_directory, help="Output directory of `prepare-labelled`."),
    click.option("--dna-embeddings", required=True, type=click.Path(path_type=Path), help="Directory of DNA shard embeddings."),
    click.option("--esm-embeddings", required=True, type=click.Path(path_type=Path), help="Directory of ESM-2 shard embeddings."),
    click.option(
        "--failed",
        "failed_files",
        multiple=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="failed_files.txt of an embedding task (repeatable; missing files are ignored).",
    ),
)


def _embedding_settings(
    esm_model: str, esm_layer: int | None, esm_batch_size: int | None, dna_model: str, dna_batch_size: int | None,
    gpus: str | None, workers: int | None, precision: str, resume: bool, shard_size: int,
):  # fmt: skip
    from virnucpro.embeddings.base import EmbedderSpec
    from virnucpro.pipeline import PredictOptions

    return PredictOptions(
        esm=EmbedderSpec("esm", esm_model, esm_layer, precision),
        dna=EmbedderSpec("dna", dna_model, None, precision),
        esm_batch_tokens=esm_batch_size,
        dna_batch_tokens=dna_batch_size,
        gpus=gpus,
        workers=workers,
        resume=resume,
        shard_size=shard_size,
    )


# train / evaluate: the models, devices and shards of predict's embedding stages, as predict's options object
embedding_options = option_group(
    "settings", _embedding_settings, esm_model_options, dna_model_options, device_options, shard_size_option
)


def _calibrate(calibrate: str | None, calibrated_classifier: Path | None) -> tuple[str, Path] | None:
    from virnucpro.errors import InputError

    if (calibrate is None) != (calibrated_classifier is None):
        raise InputError("--calibrate and --calibrated-classifier go together (the method and where to write)")
    return (calibrate, calibrated_classifier) if calibrate and calibrated_classifier else None


calibrate_options = option_group(
    "calibrate",
    _calibrate,
    click.option(
        "--calibrate",
        type=click.Choice(["temperature", "isotonic"]),
        default=None,
        help="Also fit this calibration of P(virus) on these data's chunks ...",
    ),
    click.option(
        "--calibrated-classifier",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="... and write the classifier with it here (a native checkpoint for predict --classifier).",
    ),
)
