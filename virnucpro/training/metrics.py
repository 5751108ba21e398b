"""Binary classification metrics from labels (1 = virus) and scores P(virus), in numpy.

Undefined values (a precision with nothing called virus, an AUROC with one class) are None, so
that tables print ``NA`` instead of a misleading 0. The curves use every distinct score as a
threshold (called virus when ``score >= threshold``, as ``predict --min-p-virus`` does); the
AUROC is the trapezoidal area under them, which equals the Mann-Whitney statistic with ties
counted half; the AUPRC is the average precision (sum of precision times recall gained).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_CUTOFFS = tuple(round(0.01 * step, 2) for step in range(101))  # the threshold table
RELIABILITY_BINS = 10


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


@dataclass(frozen=True)
class Confusion:
    """Counts at one decision: true/false positives (virus) and negatives (other)."""

    tp: int
    fp: int
    tn: int
    fn: int

    @classmethod
    def of(cls, labels: np.ndarray, called: np.ndarray) -> "Confusion":
        labels, called = labels.astype(bool), called.astype(bool)
        return cls(
            int(np.sum(labels & called)),
            int(np.sum(~labels & called)),
            int(np.sum(~labels & ~called)),
            int(np.sum(labels & ~called)),
        )

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def rates(self) -> dict[str, float | None]:
        """accuracy, precision, recall (sensitivity), specificity, FPR, F1 and MCC."""
        tp, fp, tn, fn = self.tp, self.fp, self.tn, self.fn
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)
        denominator = math.sqrt(float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return {
            "accuracy": _ratio(tp + tn, self.n),
            "precision": precision,
            "recall": recall,
            "specificity": _ratio(tn, tn + fp),
            "fpr": _ratio(fp, fp + tn),
            "f1": f1,
            "mcc": (tp * tn - fp * fn) / denominator if denominator else None,
        }


@dataclass(frozen=True)
class Curve:
    """Counts at every distinct threshold, highest first: ``tp[i]``, ``fp[i]`` called at ``thresholds[i]``."""

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    positives: int
    negatives: int

    @classmethod
    def of(cls, labels: np.ndarray, scores: np.ndarray) -> "Curve":
        labels = labels.astype(bool)
        order = np.argsort(-scores, kind="stable")
        sorted_scores, sorted_labels = scores[order], labels[order]
        tp = np.cumsum(sorted_labels)
        fp = np.cumsum(~sorted_labels)
        last = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(sorted_scores) - 1] if len(scores) else np.array([], int)
        return cls(sorted_scores[last], tp[last], fp[last], int(labels.sum()), int((~labels).sum()))

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """(false positive rate, true positive rate), from (0, 0); empty when a class is missing."""
        if not self.positives or not self.negatives:
            return np.array([]), np.array([])
        return np.r_[0.0, self.fp / self.negatives], np.r_[0.0, self.tp / self.positives]

    def auroc(self) -> float | None:
        fpr, tpr = self.roc()
        return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)) if len(fpr) else None

    def precision_recall(self) -> tuple[np.ndarray, np.ndarray]:
        """(precision, recall) at each threshold; empty without positives."""
        if not self.positives:
            return np.array([]), np.array([])
        return self.tp / (self.tp + self.fp), self.tp / self.positives

    def average_precision(self) -> float | None:
        precision, recall = self.precision_recall()
        if not len(recall):
            return None
        return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))

    def cutoff_for_fpr(self, target: float) -> dict | None:
        """The lowest threshold whose false positive rate is at most ``target`` (most recall),
        with what it gives; None without both classes or when even the highest score exceeds it."""
        if not self.positives or not self.negatives:
            return None
        fpr = self.fp / self.negatives
        within = np.flatnonzero(fpr <= target)
        if not len(within):
            return None
        i = int(within[-1])
        return {
            "target_fpr": target,
            "cutoff": float(self.thresholds[i]),
            "fpr": float(fpr[i]),
            "recall": float(self.tp[i] / self.positives),
            "precision": float(self.tp[i] / (self.tp[i] + self.fp[i])),
            "tp": int(self.tp[i]),
            "fp": int(self.fp[i]),
        }


def summary(labels: np.ndarray, scores: np.ndarray, called: np.ndarray) -> dict:
    """Every scalar metric of one set: counts, the rates of the calls, AUROC, AUPRC and Brier score."""
    confusion = Confusion.of(labels, called)
    curve = Curve.of(labels, scores)
    return {
        "n": confusion.n,
        "virus": curve.positives,
        "other": curve.negatives,
        **confusion.rates(),
        "auroc": curve.auroc(),
        "auprc": curve.average_precision(),
        "brier": float(np.mean((scores - labels) ** 2)) if len(scores) else None,
        "tp": confusion.tp,
        "fp": confusion.fp,
        "tn": confusion.tn,
        "fn": confusion.fn,
    }


def threshold_table(labels: np.ndarray, scores: np.ndarray, cutoffs=DEFAULT_CUTOFFS) -> list[dict]:
    """Counts and rates when ``score >= cutoff`` is called virus, for each cutoff."""
    rows = []
    for cutoff in cutoffs:
        confusion = Confusion.of(labels, scores >= cutoff)
        rates = confusion.rates()
        rows.append({
            "cutoff": cutoff,
            "tp": confusion.tp, "fp": confusion.fp, "tn": confusion.tn, "fn": confusion.fn,
            "precision": rates["precision"], "recall": rates["recall"], "fpr": rates["fpr"],
        })  # fmt: skip
    return rows


def reliability(labels: np.ndarray, scores: np.ndarray, bins: int = RELIABILITY_BINS) -> dict:
    """Equal-width bins of the score: count, mean score and fraction virus per bin, and the
    expected calibration error (bins weighted by their counts)."""
    index = np.minimum((scores * bins).astype(int), bins - 1)
    rows, error = [], 0.0
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        mean_score = float(scores[inside].mean()) if count else None
        fraction = float(labels[inside].mean()) if count else None
        if count:
            error += count * abs(fraction - mean_score)  # type: ignore[operator]
        rows.append({"low": b / bins, "high": (b + 1) / bins, "count": count, "mean_score": mean_score,
                     "fraction_virus": fraction})  # fmt: skip
    return {"bins": rows, "ece": error / len(scores) if len(scores) else None}
