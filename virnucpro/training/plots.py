"""Plots of an evaluation (ROC, precision-recall, reliability) and of a training run (loss and
validation metrics per epoch), as PNG files drawn by matplotlib's Agg canvas (no display, no
global pyplot state)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from virnucpro.atomic import atomic_path
from virnucpro.training import metrics

ROC_PNG = "roc.png"
PR_PNG = "precision_recall.png"
RELIABILITY_PNG = "reliability.png"
LOSS_PNG = "loss.png"
VALIDATION_PNG = "validation_metrics.png"
_DPI = 120


def _figure(columns: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.0 * columns, 4.5))
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=_DPI, metadata={"Software": None})
    return path


def plot_evaluation(outdir: Path, levels: dict, title: str) -> list[Path]:
    """roc.png, precision_recall.png and reliability.png of the levels' rows (labels, scores)."""
    roc, pr, reliability = _figure(), _figure(), _figure()
    roc_axes, pr_axes, rel_axes = roc.add_subplot(), pr.add_subplot(), reliability.add_subplot()
    for level, data in levels.items():
        if not len(data.scores):
            continue
        curve = metrics.Curve.of(data.labels, data.scores)
        fpr, tpr = curve.roc()
        if len(fpr):
            roc_axes.plot(fpr, tpr, label=f"{level} (AUROC {curve.auroc():.3f}, n={len(data.scores)})")
        precision, recall = curve.precision_recall()
        if len(recall):
            pr_axes.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="pre",
                         label=f"{level} (AUPRC {curve.average_precision():.3f})")  # fmt: skip
        bins = [row for row in metrics.reliability(data.labels, data.scores)["bins"] if row["count"]]
        if level != "sequence" and bins:  # a sequence's mean chunk score is no probability of its own
            rel_axes.plot([b["mean_score"] for b in bins], [b["fraction_virus"] for b in bins], marker="o", label=level)
    roc_axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    rel_axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
    _label(roc_axes, "false positive rate", "true positive rate (recall)", f"ROC: {title}")
    _label(pr_axes, "recall", "precision", f"Precision-recall: {title}")
    _label(rel_axes, "mean P(virus) in bin", "fraction virus in bin", f"Reliability: {title}")
    return [
        _save(roc, Path(outdir) / ROC_PNG),
        _save(pr, Path(outdir) / PR_PNG),
        _save(reliability, Path(outdir) / RELIABILITY_PNG),
    ]


def _label(axes, x: str, y: str, title: str) -> None:
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.set_xlabel(x)
    axes.set_ylabel(y)
    axes.set_title(title, fontsize=10)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, loc="lower right" if "ROC" in title or "Reliability" in title else "lower left")


def plot_training(outdir: Path, history: Sequence[dict], best_epoch: int) -> list[Path]:
    """loss.png (training and validation loss per epoch) and validation_metrics.png."""
    epochs = [row["epoch"] for row in history]
    loss = _figure()
    axes = loss.add_subplot()
    axes.plot(epochs, [row["train_loss"] for row in history], label="training loss")
    axes.plot(epochs, [row["validation_loss"] for row in history], label="validation loss")
    axes.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
    axes.set_xlabel("epoch")
    axes.set_ylabel("cross-entropy")
    axes.set_title("Loss per epoch", fontsize=10)
    axes.legend(fontsize=8)
    scores = _figure()
    axes = scores.add_subplot()
    for key in ("accuracy", "precision", "recall", "f1", "auroc"):
        values = [row[f"validation_{key}"] for row in history]
        axes.plot(epochs, [np.nan if v is None else v for v in values], label=key)
    axes.axvline(best_epoch, color="grey", linestyle=":")
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation (frames)")
    axes.set_title("Validation metrics per epoch", fontsize=10)
    axes.legend(fontsize=8)
    return [_save(loss, Path(outdir) / LOSS_PNG), _save(scores, Path(outdir) / VALIDATION_PNG)]
