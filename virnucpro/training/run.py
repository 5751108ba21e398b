"""``train`` and ``evaluate`` on one machine: prepare-labelled -> both embeddings (the worker
engine, exactly as ``predict`` runs it) -> fit, or classify and measure.

The output directory has ``predict``'s work layout (``work/prepared``, ``work/embeddings/dna``,
``work/embeddings/esm``), so ``--resume`` reuses what is complete, as in ``predict``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from virnucpro import contracts as c
from virnucpro.classifier.checkpoints import load_training_info
from virnucpro.classifier.model import ClassifierMeta, MLPClassifier
from virnucpro.classify import CallRule, classify_prepared, classify_summary
from virnucpro.log import get_logger
from virnucpro.outdir import claimed_outdir
from virnucpro.predict import (
    DNA_EMBEDDINGS_DIR,
    ESM_EMBEDDINGS_DIR,
    PREPARED_DIR,
    PredictOptions,
    embed_prepared,
    load_predict_classifier,
)
from virnucpro.summary_json import StageTimer, write_summary
from virnucpro.training.evaluation import (
    ALL,
    EvaluationOptions,
    evaluate_predictions,
    labels_from_predictions,
    log_headline,
    read_predictions,
    write_evaluation,
)
from virnucpro.training.hyperparameters import FitOptions
from virnucpro.training.labelled import (
    LabelledOptions,
    LabelRow,
    labelled_is_current,
    prepare_labelled,
    read_labelled_info,
    read_labels,
)
from virnucpro.training.sheet import LABELS, read_sheet
from virnucpro.training.splits import UNIT_SEQUENCE

log = get_logger("train")


@dataclass
class EvaluateResult:
    """Exit status and the summary.json content of an evaluation."""

    exit_status: int
    summary: dict = field(default_factory=dict)


def _prepare(sheet_path: Path, outdir: Path, labelled: LabelledOptions, options: PredictOptions, timer: StageTimer):
    """prepare-labelled into ``outdir/work/prepared`` (kept when current and --resume); returns the sheet."""
    sheet = read_sheet(sheet_path)
    prepared = outdir / PREPARED_DIR
    with timer.stage("prepare"):
        if options.resume and labelled_is_current(prepared, sheet, labelled):
            log.info("resume: prepared frames are current, skipping prepare")
        else:
            prepare_labelled(sheet, prepared, labelled)
    return sheet


def run_train(
    sheet_path: Path,
    outdir: Path,
    labelled: LabelledOptions,
    options: PredictOptions,
    fit_options: FitOptions,
    evaluation: EvaluationOptions,
) -> int:
    """Train a classifier from a labelled sheet into ``outdir``; returns 0, 2 (frames left out) or 1."""
    from virnucpro.training.fit import fit

    read_sheet(sheet_path).require_both_labels()  # before any model is checked or loaded
    options.esm.check()
    options.dna.check()

    def fit_stage(prepared: Path, dna_dir: Path, esm_dir: Path, failures: list[c.Failure]) -> tuple[int, dict]:
        result = fit(prepared, dna_dir, esm_dir, Path(outdir), fit_options, evaluation, failures, options.batch_size,
                     options.rule, options.progress)  # fmt: skip
        return result.exit_status, result.summary

    return _run_on_sheet("train", sheet_path, Path(outdir), labelled, options, StageTimer(), "fit", fit_stage)


def run_evaluate(
    sheet_path: Path,
    outdir: Path,
    labelled: LabelledOptions,
    options: PredictOptions,
    evaluation: EvaluationOptions,
    calibrate: tuple[str, Path] | None = None,
) -> int:
    """Classify a labelled sheet with ``options.classifier`` and measure it; returns 0/2/1."""
    sheet = read_sheet(sheet_path)
    if len(sheet.labels()) < 2:
        log.warning("%s: one label only (%s): AUROC, AUPRC and precision are not defined", sheet_path,
                    next(iter(sheet.labels())))  # fmt: skip
    options.esm.check()
    options.dna.check()
    timer = StageTimer()
    with timer.stage("load_classifier"):
        classifier = load_predict_classifier(options)
    labelled = dataclasses.replace(labelled, chunk_length=options.chunk_length, split=None)
    training = load_training_info(Path(options.classifier)) if options.classifier else None

    def evaluate_stage(prepared: Path, dna_dir: Path, esm_dir: Path, failures: list[c.Failure]) -> tuple[int, dict]:
        for name in c.RESULT_FILES:
            (Path(outdir) / name).unlink(missing_ok=True)
        result = evaluate_embedded(prepared, dna_dir, esm_dir, Path(outdir), classifier, evaluation,
                                   batch_size=options.batch_size, rule=options.rule, failures=failures,
                                   training=training, calibrate=calibrate)  # fmt: skip
        return result.exit_status, result.summary

    return _run_on_sheet("evaluate", sheet_path, Path(outdir), labelled, options, timer, "evaluate", evaluate_stage)


def _run_on_sheet(
    command: str,
    sheet_path: Path,
    outdir: Path,
    labelled: LabelledOptions,
    options: PredictOptions,
    timer: StageTimer,
    last_stage: str,
    run_last: Callable[[Path, Path, Path, list[c.Failure]], tuple[int, dict]],
) -> int:
    """prepare-labelled, both embeddings, then ``run_last`` into ``outdir``; summary.json; the exit status."""
    with claimed_outdir(outdir):
        _prepare(sheet_path, outdir, labelled, options, timer)
        engine_stats, failures = embed_prepared(outdir / PREPARED_DIR, outdir, options, timer)
        with timer.stage(last_stage):
            status, summary = run_last(
                outdir / PREPARED_DIR, outdir / DNA_EMBEDDINGS_DIR, outdir / ESM_EMBEDDINGS_DIR, failures
            )
        summary.update(command=command, sheet=str(sheet_path), timings_s=timer.seconds, engine=engine_stats)
        write_summary(outdir, summary)
    return status


def evaluate_embedded(
    prepared: Path,
    dna_dir: Path,
    esm_dir: Path,
    outdir: Path,
    classifier: tuple[MLPClassifier, ClassifierMeta],
    evaluation: EvaluationOptions,
    *,
    batch_size: int = 1024,
    rule: CallRule = CallRule(),
    failures: list[c.Failure] | None = None,
    training: dict | None = None,
    calibrate: tuple[str, Path] | None = None,
) -> EvaluateResult:
    """The prediction files of ``predict`` for a labelled prepared directory, and their metrics;
    with ``calibrate`` (method, path), a calibrated copy of the classifier too."""
    labels = read_labels(prepared)
    _warn_overlap(labels, training)
    result = classify_prepared(
        Path(prepared), Path(dna_dir), Path(esm_dir), Path(outdir), classifier, chunk_length=classifier[1].chunk_length,
        batch_size=batch_size, rule=rule, upstream_failures=failures or [],
    )  # fmt: skip
    measured = evaluate_predictions(read_predictions(outdir, labels), labels, evaluation)
    written = write_evaluation(outdir, measured, ALL, "evaluation data")
    log_headline(measured, ALL)
    summary = classify_summary(result, classifier[1], rule)
    if calibrate is not None:
        calibrate_classifier(Path(prepared), Path(dna_dir), Path(esm_dir), classifier, *calibrate, training)
        written.append(calibrate[1])
    summary.update(prepared=str(prepared), evaluation=measured.headline(ALL), files=[str(p) for p in written])
    return EvaluateResult(result.exit_status, summary)


def calibrate_classifier(
    prepared: Path,
    dna_dir: Path,
    esm_dir: Path,
    classifier: tuple[MLPClassifier, ClassifierMeta],
    method: str,
    path: Path,
    training: dict | None = None,
) -> dict:
    """Fit a calibration on the chunks of a labelled prepared directory and write the classifier
    with it (same weights; any earlier calibration replaced) as a native checkpoint at ``path``."""
    from virnucpro.classifier.calibration import uncalibrated
    from virnucpro.classifier.checkpoints import save_native
    from virnucpro.training.calibration import fit_calibration
    from virnucpro.training.dataset import load_training_data
    from virnucpro.training.fit import plain

    labels = read_labels(prepared)
    data = load_training_data(prepared, dna_dir, esm_dir, labels, UNIT_SEQUENCE, {key: ALL for key in labels})
    base = uncalibrated(classifier[0])
    calibration = plain(fit_calibration(method, base, data.parts[ALL]))
    calibration["fitted_on"] = f"evaluation data sha256 {read_labelled_info(prepared)['data_sha256']}"
    save_native(path, base, dataclasses.replace(classifier[1], calibration=calibration), training)  # type: ignore[arg-type]
    log.info(
        "calibration (%s) fitted on %d chunks -> %s (measure it on other data: these scores are its training)",
        method, calibration["chunks"], path,
    )  # fmt: skip
    return calibration


def evaluate_existing(predictions_dir: Path, sheet_path: Path, outdir: Path, evaluation: EvaluationOptions) -> dict:
    """Metrics of an earlier ``predict`` output against a labelled sheet; returns the summary."""
    sheet = read_sheet(sheet_path)
    labels = labels_from_predictions(predictions_dir, sheet)
    measured = evaluate_predictions(read_predictions(predictions_dir, labels), labels, evaluation)
    written = write_evaluation(outdir, measured, ALL, f"predictions in {Path(predictions_dir).name}")
    log_headline(measured, ALL)
    return {
        "command": "evaluate-predictions",
        "predictions": str(predictions_dir),
        "sheet": str(sheet_path),
        "evaluation": measured.headline(ALL),
        "files": [str(p) for p in written],
    }


def _warn_overlap(labels: dict[str, LabelRow], training: dict | None) -> None:
    """Warn when evaluation sequences were seen in training (same ids as the checkpoint's training parts)."""
    sequences = ((training or {}).get("split") or {}).get("sequences") or {}
    seen = set(sequences.get("train", [])) | set(sequences.get("validation", []))
    overlap = [key for key in labels if key in seen]
    if overlap:
        log.warning(
            "%d of %d evaluation sequences have the ids of sequences this classifier was trained or validated on "
            "(first: %s): their scores are optimistic",
            len(overlap), len(labels), overlap[0],
        )  # fmt: skip
    counts = {label: sum(row.label == label for row in labels.values()) for label in LABELS}
    log.info("evaluating %d sequences (%s)", len(labels), ", ".join(f"{n} {label}" for label, n in counts.items()))
