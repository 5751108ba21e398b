"""Option groups of the training and evaluation commands, each handed to the command as one object
(:func:`virnucpro.cli.options.option_group`). The builders import the library only when the
command runs, so ``--help`` stays fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from virnucpro.cli.options import option, option_group


def _split_options(split: str, test_fraction: float, validation_fraction: float, seed: int, before: str | None):  # noqa: ANN202
    from virnucpro.training.sheet import parse_date_option
    from virnucpro.training.splits import SplitOptions

    return SplitOptions(split, test_fraction, validation_fraction, seed, parse_date_option(before) if before else "")


split_options = option_group(
    "split",
    _split_options,
    split=option(
        "--split",
        type=click.Choice(["auto", "group", "sequence", "date", "random"]),
        default="auto",
        show_default=True,
        help="How to hold out: whole groups, whole sequences, by date, or frames at random (the reference's, "
        "leaks); auto = group with a group column, else sequence.",
    ),
    test_fraction=option("--test-fraction", type=float, default=0.1, show_default=True, help="Share of frames to test on."),
    validation_fraction=option(
        "--validation-fraction",
        type=float,
        default=0.1,
        show_default=True,
        help="Share of frames for early stopping and calibration (0: the test part, as the reference).",
    ),
    seed=option("--seed", type=int, default=42, show_default=True, help="Seed of the split (--train-seed: of training)."),
    before=option("--before", default=None, metavar="YYYY-MM-DD", help="--split date: test on sequences dated on or after it."),
)


genbank_frames_option = click.option(
    "--genbank-frames",
    type=click.Choice(["cds", "all"]),
    default="cds",
    show_default=True,
    help="GenBank records: cds = the reference's training frames (inside an annotated CDS protein, chunks "
    "with ambiguous bases skipped); all = every stop-free frame, as predict. FASTA/FASTQ: always all.",
)


def _fit_options(**values: Any):  # noqa: ANN202
    from virnucpro.training.hyperparameters import FitOptions

    return FitOptions(**values)


fit_options = option_group(
    "fit",
    _fit_options,
    learning_rate=option("--learning-rate", type=float, default=2e-4, show_default=True, help="SGD learning rate."),
    momentum=option("--momentum", type=float, default=0.9, show_default=True, help="SGD momentum."),
    lr_step_epochs=option("--lr-step-epochs", type=int, default=10, show_default=True, help="Epochs per learning-rate step."),
    lr_gamma=option("--lr-gamma", type=float, default=0.85, show_default=True, help="Learning-rate factor per step."),
    batch_size=option("--train-batch-size", type=int, default=32, show_default=True, help="Frames per SGD step."),
    max_epochs=option("--max-epochs", type=int, default=200, show_default=True, help="Most epochs."),
    patience=option(
        "--patience", type=int, default=5, show_default=True, help="Epochs without a lower validation loss before stopping."
    ),
    hidden_dim=option("--hidden-dim", type=int, default=512, show_default=True, help="Width of the hidden layer."),
    class_weight=option(
        "--class-weight",
        type=click.Choice(["none", "balanced"]),
        default="none",
        show_default=True,
        help="balanced: weigh the loss by inverse class frequency.",
    ),
    seed=option("--train-seed", type=int, default=42, show_default=True, help="Seed of weights, dropout and batch order."),
    calibration=option(
        "--calibration",
        type=click.Choice(["none", "temperature", "isotonic"]),
        default="none",
        show_default=True,
        help="Calibrate P(virus) on the validation part's chunks; stored in the checkpoint, used by predict.",
    ),
    device=option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Where the MLP trains (auto: a visible GPU, else the CPU; CPU results are bit-reproducible).",
    ),
    threads=option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for training [default: torch's]."),
)


def _evaluation_options(length_bins: str, target_fpr: tuple[float, ...], plots: bool):  # noqa: ANN202
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
    length_bins=option(
        "--length-bins",
        default="300,500,1000,5000,10000",
        show_default=True,
        help="Edges (bp) of the sequence-length bins the metrics are broken down by.",
    ),
    target_fpr=option(
        "--target-fpr",
        type=float,
        multiple=True,
        help="False-positive rate to find the chunk P(virus) cutoff for (repeatable) [default: 0.01 and 0.05].",
    ),
    plots=option("--plots/--no-plots", default=True, show_default=True, help="Draw the PNG plots."),
)


existing_directory = click.Path(exists=True, file_okay=False, path_type=Path)
sheet_argument = click.argument("sheet", type=click.Path(dir_okay=False, path_type=Path))


@dataclass(frozen=True)
class EmbeddedInputs:
    """``--prepared``, ``--dna-embeddings``, ``--esm-embeddings``, ``--failed``: a labelled prepared
    directory and the embedding stages' outputs for it."""

    prepared: Path
    dna: Path
    esm: Path
    failed_files: tuple[Path, ...]

    def failures(self) -> list:
        """The failures the embedding tasks recorded (missing files are ignored)."""
        from virnucpro.contracts import read_failures

        return [failure for path in self.failed_files for failure in read_failures(path)]


embeddings_options = option_group(
    "embedded",
    EmbeddedInputs,
    prepared=option("--prepared", required=True, type=existing_directory, help="Output directory of `prepare-labelled`."),
    dna=option("--dna-embeddings", required=True, type=click.Path(path_type=Path), help="Directory of DNA shard embeddings."),
    esm=option("--esm-embeddings", required=True, type=click.Path(path_type=Path), help="Directory of ESM-2 shard embeddings."),
    failed_files=option(
        "--failed",
        "failed_files",
        multiple=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="failed_files.txt of an embedding task (repeatable; missing files are ignored).",
    ),
)


def _calibrate(calibrate: str | None, calibrated_classifier: Path | None) -> tuple[str, Path] | None:
    from virnucpro.errors import InputError

    if (calibrate is None) != (calibrated_classifier is None):
        raise InputError("--calibrate and --calibrated-classifier go together (the method and where to write)")
    return (calibrate, calibrated_classifier) if calibrate and calibrated_classifier else None


calibrate_options = option_group(
    "calibrate",
    _calibrate,
    calibrate=option(
        "--calibrate",
        type=click.Choice(["temperature", "isotonic"]),
        default=None,
        help="Also fit this calibration of P(virus) on these data's chunks ...",
    ),
    calibrated_classifier=option(
        "--calibrated-classifier",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="... and write the classifier with it here (a native checkpoint for predict --classifier).",
    ),
)
