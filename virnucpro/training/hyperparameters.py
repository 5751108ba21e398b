"""How ``fit`` trains: the reference's hyperparameters (reference doc section 8) as defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from virnucpro.classifier.model import HIDDEN_DIM
from virnucpro.errors import InputError

CLASS_WEIGHTS = ("none", "balanced")
CALIBRATIONS = ("none", "temperature", "isotonic")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class FitOptions:
    """The MLP's training: SGD with momentum, a step learning-rate schedule, early stopping.

    Reference: ``Linear(input, 512) -> BatchNorm1d -> ReLU -> Dropout(0.5) -> Linear(512, 2)``,
    Xavier-uniform weights, cross-entropy, SGD lr 0.0002 momentum 0.9, StepLR(10, 0.85) per
    epoch, batches of 32 shuffled, at most 200 epochs, early stopping with patience 5 on the
    held-out loss, best weights restored.
    """

    learning_rate: float = 2e-4
    momentum: float = 0.9
    lr_step_epochs: int = 10
    lr_gamma: float = 0.85
    batch_size: int = 32
    max_epochs: int = 200
    patience: int = 5
    hidden_dim: int = HIDDEN_DIM
    class_weight: str = "none"  # "balanced": loss weights n / (2 n_class)
    seed: int = 42
    calibration: str = "none"  # fitted on the validation part's chunks
    device: str = "auto"  # "auto": the first visible GPU, else the CPU
    threads: int | None = None  # CPU threads for torch (None: torch's default)

    def __post_init__(self) -> None:
        checks = (
            (self.learning_rate > 0, "--learning-rate must be positive"),
            (0 <= self.momentum < 1, "--momentum must be in [0, 1)"),
            (self.lr_step_epochs >= 1 and 0 < self.lr_gamma <= 1, "--lr-step >= 1 and --lr-gamma in (0, 1]"),
            (self.batch_size >= 2, "--train-batch-size must be at least 2 (BatchNorm needs two frames)"),
            (self.max_epochs >= 1 and self.patience >= 1, "--max-epochs and --patience must be at least 1"),
            (self.hidden_dim >= 1, "--hidden-dim must be at least 1"),
            (self.class_weight in CLASS_WEIGHTS, f"--class-weight: one of {', '.join(CLASS_WEIGHTS)}"),
            (self.calibration in CALIBRATIONS, f"--calibration: one of {', '.join(CALIBRATIONS)}"),
            (self.device in DEVICES, f"--device: one of {', '.join(DEVICES)}"),
            (self.threads is None or self.threads >= 1, "--threads must be at least 1"),
        )
        for ok, message in checks:
            if not ok:
                raise InputError(message)

    def hyperparameters(self) -> dict:
        """What determines the weights (stored in the checkpoint; the device and threads are not)."""
        return {key: value for key, value in asdict(self).items() if key not in ("device", "threads")}
