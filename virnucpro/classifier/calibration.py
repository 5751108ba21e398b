"""Calibrated P(virus): a monotone map stored in a checkpoint's metadata, applied to every frame.

``ClassifierMeta.calibration`` is plain data (it travels in native checkpoints and summary.json):

- ``{"method": "temperature", "temperature": T}``: logits divided by ``T``, so
  P(virus) = sigmoid((z_virus - z_others) / T);
- ``{"method": "isotonic", "x": [...], "y": [...]}``: P(virus) mapped through the piecewise-linear
  curve through the points ``(x, y)`` (``x`` increasing, ``y`` non-decreasing, both in [0, 1]).

Both maps are monotone, so the highest calibrated frame score of a chunk is the calibrated highest
score: a map fitted on chunk scores (virnucpro.training.calibration) calibrates the chunk scores
that ``prediction_results_highestscore.csv`` reports and ``--min-p-virus`` compares.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from virnucpro.errors import ModelError

METHODS = ("temperature", "isotonic")


class CalibratedClassifier(nn.Module):
    """A classifier whose logits give calibrated probabilities under softmax."""

    def __init__(self, base: nn.Module, calibration: dict) -> None:
        super().__init__()
        self.base = base
        self.calibration = check_calibration(calibration)
        if self.calibration["method"] == "isotonic":
            self.register_buffer("x", torch.tensor(self.calibration["x"], dtype=torch.float32), persistent=False)
            self.register_buffer("y", torch.tensor(self.calibration["y"], dtype=torch.float32), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.base(features)
        if self.calibration["method"] == "temperature":
            return logits / float(self.calibration["temperature"])
        p_virus = interpolate(torch.softmax(logits, dim=1)[:, 1], self.x, self.y)
        return torch.stack([torch.log1p(-p_virus), torch.log(p_virus)], dim=1)


def interpolate(values: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The piecewise-linear curve through ``(x, y)`` at ``values``; flat outside ``x``'s range."""
    index = torch.searchsorted(x, values.contiguous()).clamp(1, len(x) - 1)
    x0, x1, y0, y1 = x[index - 1], x[index], y[index - 1], y[index]
    weight = ((values - x0) / (x1 - x0)).clamp(0.0, 1.0)
    return y0 + weight * (y1 - y0)


def with_calibration(model: nn.Module, calibration: dict | None) -> nn.Module:
    """``model`` itself without a calibration, else wrapped so that its softmax is calibrated."""
    return model if not calibration else CalibratedClassifier(model, calibration).eval()


def uncalibrated(model: nn.Module) -> nn.Module:
    """The classifier under a calibration wrapper (the weights a checkpoint stores)."""
    return model.base if isinstance(model, CalibratedClassifier) else model


def check_calibration(calibration: dict) -> dict:
    """The calibration, or a one-line ModelError saying what is wrong with it."""
    method = calibration.get("method") if isinstance(calibration, dict) else None
    if method == "temperature":
        temperature = calibration.get("temperature")
        if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
            raise ModelError(f"calibration: temperature must be a positive number, not {temperature!r}")
        return calibration
    if method == "isotonic":
        x, y = calibration.get("x"), calibration.get("y")
        if not (isinstance(x, list) and isinstance(y, list) and len(x) == len(y) >= 2):
            raise ModelError("calibration: isotonic needs lists x and y of the same length (at least 2 points)")
        numbers = all(isinstance(v, (int, float)) and 0.0 <= v <= 1.0 for v in x + y)
        if not numbers or any(b <= a for a, b in zip(x, x[1:])) or any(b < a for a, b in zip(y, y[1:])):
            raise ModelError("calibration: isotonic points must lie in [0, 1], x increasing and y non-decreasing")
        return calibration
    raise ModelError(f"calibration: unknown method {method!r} (known: {', '.join(METHODS)})")
