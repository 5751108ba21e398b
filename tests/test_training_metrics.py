"""Metrics, calibration and calibrated checkpoints, against direct computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from virnucpro.classifier.calibration import CalibratedClassifier, check_calibration, uncalibrated
from virnucpro.classifier.checkpoints import load_classifier_file, load_training_info, save_native
from virnucpro.classifier.model import ClassifierMeta, MLPClassifier
from virnucpro.errors import ModelError
from virnucpro.training import metrics
from virnucpro.training.calibration import fit_isotonic, fit_temperature


def pairwise_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney by definition: P(score of a virus > score of an other), ties half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def defined_average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Sum over distinct thresholds t (high to low) of (recall gained at t) * precision at t."""
    total, previous_recall = 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        called = scores >= t
        tp = np.sum(called & (labels == 1))
        recall = tp / np.sum(labels == 1)
        total += (recall - previous_recall) * tp / np.sum(called)
        previous_recall = recall
    return total


@pytest.mark.parametrize("seed", range(5))
def test_auroc_and_average_precision_equal_their_definitions(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.random(60) * 0.5 + 0.3 * labels, 1)  # rounded: many ties
    curve = metrics.Curve.of(labels, scores)
    assert curve.auroc() == pytest.approx(pairwise_auroc(labels, scores), abs=1e-12)
    assert curve.average_precision() == pytest.approx(defined_average_precision(labels, scores), abs=1e-12)


def test_undefined_metrics_are_none_not_zero():
    labels, scores = np.array([1, 1, 1]), np.array([0.2, 0.7, 0.9])
    summary = metrics.summary(labels, scores, scores > 0.5)
    assert summary["auroc"] is None and summary["specificity"] is None and summary["mcc"] is None
    assert summary["recall"] == pytest.approx(2 / 3) and summary["precision"] == 1.0


def test_confusion_rates():
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    called = np.array([1, 1, 0, 1, 0, 0, 0], dtype=bool)
    rates = metrics.Confusion.of(labels, called).rates()
    tp, fp, tn, fn = 2, 1, 3, 1
    assert rates["precision"] == pytest.approx(tp / (tp + fp)) and rates["recall"] == pytest.approx(tp / (tp + fn))
    assert rates["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn)) and rates["fpr"] == pytest.approx(fp / (fp + tn))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert rates["mcc"] == pytest.approx(mcc)


def test_cutoff_for_fpr_is_the_lowest_score_within_the_target():
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.95, 0.8, 0.9, 0.96, 0.99])
    curve = metrics.Curve.of(labels, scores)
    cut = curve.cutoff_for_fpr(0.1)  # one false positive of ten allowed: 0.95 may be called, 0.7 not
    assert cut["cutoff"] == 0.8 and cut["fpr"] == 0.1 and cut["recall"] == 1.0 and cut["fp"] == 1
    assert np.mean(scores[labels == 0] >= cut["cutoff"]) <= 0.1
    assert curve.cutoff_for_fpr(0.0)["cutoff"] == 0.96  # above every other
    assert metrics.Curve.of(np.array([0, 1]), np.array([0.9, 0.9])).cutoff_for_fpr(0.01) is None


def test_threshold_table_and_reliability():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.05, 0.55, 0.58, 0.95])
    rows = {row["cutoff"]: row for row in metrics.threshold_table(labels, scores)}
    assert (rows[0.5]["tp"], rows[0.5]["fp"], rows[0.56]["fp"], rows[0.58]["tp"], rows[1.0]["tp"]) == (2, 1, 0, 2, 0)
    table = metrics.reliability(labels, scores)
    assert sum(b["count"] for b in table["bins"]) == 4
    assert table["bins"][5]["count"] == 2 and table["bins"][5]["fraction_virus"] == 0.5
    expected_ece = (abs(0 - 0.05) + 2 * abs(0.5 - 0.565) + abs(1 - 0.95)) / 4
    assert table["ece"] == pytest.approx(expected_ece)


def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    d = rng.normal(0, 6, 20000).astype(np.float32)
    labels = (rng.random(20000) < 1 / (1 + np.exp(-d / 3.0))).astype(np.int64)  # true temperature 3
    assert fit_temperature(d, labels) == pytest.approx(3.0, rel=0.05)


def test_isotonic_fit_pools_violators():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=np.float32)
    labels = np.array([0, 1, 0, 0, 1, 1])
    x, y = fit_isotonic(scores, labels)
    assert all(b > a for a, b in zip(x, x[1:])) and all(b >= a for a, b in zip(y, y[1:]))
    # blocks: {0.1}: 0, {0.2, 0.3, 0.4}: 1/3, {0.5, 0.6}: 1
    assert y[0] == 0.0 and y[1:3] == [pytest.approx(1 / 3)] * 2 and y[-1] == 1.0
    check_calibration({"method": "isotonic", "x": x, "y": y})


def test_calibrated_classifier_applies_the_map_to_each_frame():
    torch.manual_seed(0)
    base = MLPClassifier(6, hidden_dim=8).eval()
    features = torch.randn(20, 6)
    raw = torch.softmax(base(features), dim=1)[:, 1]
    hot = CalibratedClassifier(base, {"method": "temperature", "temperature": 2.0}).eval()
    logits = base(features)
    expected = torch.sigmoid((logits[:, 1] - logits[:, 0]) / 2.0)
    assert torch.allclose(torch.softmax(hot(features), dim=1)[:, 1], expected, atol=1e-6)
    iso = CalibratedClassifier(base, {"method": "isotonic", "x": [0.0, 0.5, 1.0], "y": [0.1, 0.2, 0.9]}).eval()
    mapped = torch.softmax(iso(features), dim=1)[:, 1]
    assert torch.allclose(mapped, torch.from_numpy(np.interp(raw.detach().numpy(), [0, 0.5, 1], [0.1, 0.2, 0.9])).float(),
                          atol=1e-6)  # fmt: skip
    assert uncalibrated(iso) is base


@pytest.mark.parametrize(
    "bad",
    [{"method": "temperature", "temperature": 0}, {"method": "isotonic", "x": [0.5, 0.4], "y": [0, 1]},
     {"method": "platt"}],  # fmt: skip
)
def test_bad_calibrations_are_refused(bad):
    with pytest.raises(ModelError, match="calibration"):
        check_calibration(bad)


def test_native_checkpoint_keeps_calibration_and_training_info(tmp_path):
    torch.manual_seed(0)
    model = MLPClassifier(6, hidden_dim=8).eval()
    meta = ClassifierMeta(dna_dim=2, esm_dim=4, chunk_length=150, hidden_dim=8,
                          calibration={"method": "temperature", "temperature": 1.5})  # fmt: skip
    path = tmp_path / "c.pt"
    save_native(path, model, meta, {"data": {"sha256": "x"}})
    loaded, loaded_meta = load_classifier_file(path, 150)
    assert loaded_meta == meta and isinstance(loaded, CalibratedClassifier)
    features = torch.randn(5, 6)
    assert torch.allclose(loaded(features), model(features) / 1.5)
    assert load_training_info(path) == {"data": {"sha256": "x"}}
    save_native(tmp_path / "again.pt", loaded, loaded_meta, {"data": {"sha256": "x"}})  # the weights, not the wrapper
    assert (tmp_path / "again.pt").read_bytes() == path.read_bytes()  # and the bytes do not depend on the file name
    with pytest.raises(ModelError, match="150 bp chunks, not --chunk-length 300"):
        load_classifier_file(path, 300)
