"""Fitting a calibration of P(virus) on held-out chunks (the validation part).

The chunk is the unit ``predict`` reports and ``--min-p-virus`` thresholds: its score is the
highest P(virus) of its frames. Both maps (virnucpro.classifier.calibration) are monotone, so
fitting them on chunk scores and applying them to every frame calibrates the chunk scores.

- temperature: one number T > 0 minimising the log loss of sigmoid(d / T), where d is the chunk's
  highest logit difference (virus minus others); a golden-section search over log T.
- isotonic: the pool-adjacent-violators fit of the chunk labels on the chunk scores, a
  non-decreasing step curve joined linearly between steps.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from virnucpro.errors import InputError
from virnucpro.training.dataset import FrameSet

_LOG_T_RANGE = (-5.0, 5.0)
_GOLDEN_STEPS = 80


def chunk_logit_differences(model: nn.Module, frames: FrameSet, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per chunk (of these frames): the highest ``z_virus - z_others`` and the label (1 virus)."""
    model.eval()
    differences = np.empty(len(frames), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(frames), batch_size):
            logits = model(torch.from_numpy(frames.features[start : start + batch_size]))
            differences[start : start + batch_size] = (logits[:, 1] - logits[:, 0]).numpy()
    best: dict[str, tuple[float, int]] = {}
    for frame_id, difference, label in zip(frames.ids, differences, frames.labels):
        chunk = frame_id[:-2]
        if chunk not in best or difference > best[chunk][0]:
            best[chunk] = (float(difference), int(label))
    values = np.array([value for value, _ in best.values()], dtype=np.float32)
    return values, np.array([label for _, label in best.values()], dtype=np.int64)


def fit_calibration(method: str, model: nn.Module, frames: FrameSet) -> dict:
    """The calibration ``method`` fitted on the chunks of ``frames``, as stored in a checkpoint."""
    differences, labels = chunk_logit_differences(model, frames)
    if len(set(labels.tolist())) < 2:
        raise InputError("--calibration: the validation part needs chunks of both labels")
    if method == "temperature":
        return {"method": "temperature", "temperature": fit_temperature(differences, labels), "chunks": len(labels)}
    scores = (1.0 / (1.0 + np.exp(-differences.astype(np.float64)))).astype(np.float32)
    x, y = fit_isotonic(scores, labels)
    return {"method": "isotonic", "x": x, "y": y, "chunks": len(labels)}


def fit_temperature(differences: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the mean log loss of ``sigmoid(differences / T)``."""
    d, y = differences.astype(np.float64), labels.astype(np.float64)

    def loss(log_t: float) -> float:
        z = d / math.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, z) - y * z))  # -log sigmoid(z) for y=1, -log(1-sigmoid) for 0

    low, high = _LOG_T_RANGE
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    for _ in range(_GOLDEN_STEPS):
        if loss(a) < loss(b):
            high, b = b, a
            a = high - ratio * (high - low)
        else:
            low, a = a, b
            b = low + ratio * (high - low)
    return round(math.exp((low + high) / 2), 6)


def fit_isotonic(scores: np.ndarray, labels: np.ndarray) -> tuple[list[float], list[float]]:
    """Pool adjacent violators: points ``(x, y)`` with ``x`` strictly increasing (values of the
    float32 scores) and ``y`` non-decreasing, two per block (its lowest and highest score)."""
    order = np.argsort(scores, kind="stable")
    values, first = np.unique(scores[order], return_index=True)
    sums = np.add.reduceat(labels[order].astype(np.float64), first)
    counts = np.diff(np.r_[first, len(scores)]).astype(np.float64)
    blocks: list[list[float]] = []  # [sum, count, lowest x, highest x]
    for value, total, count in zip(values, sums, counts):
        blocks.append([total, count, float(value), float(value)])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            total_last, count_last, _, high = blocks.pop()
            blocks[-1][0] += total_last
            blocks[-1][1] += count_last
            blocks[-1][3] = high
    x: list[float] = []
    y: list[float] = []
    for total, count, low, high in blocks:
        for point in (low, high) if high > low else (low,):
            x.append(point)
            y.append(round(float(total / count), 6))
    if len(x) == 1:  # one block: a constant
        x, y = [0.0, 1.0], [y[0], y[0]]
    return x, y
