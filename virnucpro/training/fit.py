"""``fit``: train the reference MLP on a labelled prepared directory's embeddings, calibrate it,
score every frame with it (``classify``, as ``predict`` would), measure it on the held-out parts
and save it as a native checkpoint with its training metadata.

On the CPU the result depends only on the data, the options and the seed: the same inputs give
the same checkpoint bytes (same machine, same ``--threads``). A GPU is faster for big sets and
not bit-reproducible.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from virnucpro import __version__
from virnucpro import contracts as c
from virnucpro.atomic import atomic_write_text
from virnucpro.classifier.calibration import with_calibration
from virnucpro.classifier.checkpoints import save_native
from virnucpro.classifier.model import ClassifierMeta, MLPClassifier
from virnucpro.classify import CallRule, classify_prepared
from virnucpro.errors import InputError
from virnucpro.log import get_logger
from virnucpro.summary_json import software_versions
from virnucpro.training import metrics
from virnucpro.training.calibration import fit_calibration
from virnucpro.training.dataset import FrameSet, TrainingData, load_training_data
from virnucpro.training.evaluation import (
    EvaluationOptions,
    evaluate_predictions,
    log_headline,
    read_predictions,
    write_evaluation,
)
from virnucpro.training.hyperparameters import FitOptions
from virnucpro.training.labelled import read_labelled_info, read_labels
from virnucpro.training.splits import SPLIT_TSV, UNIT_SEQUENCE, read_split

log = get_logger("fit")

CLASSIFIER_PT = "classifier.pt"
TRAINING_LOG_TSV = "training_log.tsv"
TRAINING_LOG_JSON = "training_log.json"
PREDICTIONS_DIR = "predictions"
LOG_COLUMNS = ("epoch", "learning_rate", "train_loss", "validation_loss", "validation_accuracy",
               "validation_precision", "validation_recall", "validation_f1", "validation_auroc", "seconds")  # fmt: skip


@dataclass
class FitResult:
    """What ``fit`` wrote and how it went."""

    exit_status: int
    checkpoint: Path
    summary: dict = field(default_factory=dict)


@dataclass
class TrainedModel:
    """The best model (weights restored), the per-epoch history and how training ended."""

    model: MLPClassifier
    history: list[dict]
    best_epoch: int
    stopped_early: bool


def fit(
    prepared: Path,
    dna_dir: Path,
    esm_dir: Path,
    outdir: Path,
    options: FitOptions,
    evaluation: EvaluationOptions,
    upstream_failures: Sequence[c.Failure] = (),
    classify_batch_size: int = 1024,
    rule: CallRule = CallRule(),
    progress: str = "auto",
) -> FitResult:
    """Train, calibrate, score, measure and save; returns 0, or 2 when frames lacked embeddings."""
    prepared, outdir = Path(prepared), Path(outdir)
    info = read_labelled_info(prepared)
    if not info.get("split"):
        raise InputError(f"{prepared}: prepared without a split (--split none): nothing to train on")
    labels = read_labels(prepared)
    unit, parts = read_split(prepared / SPLIT_TSV)
    data = load_training_data(prepared, dna_dir, esm_dir, labels, unit, parts)
    train, validation = data.parts["train"], data.parts["validation"]
    watched = "validation" if len(validation) else "test"
    if not len(validation):
        log.warning("no validation part: early stopping and calibration use the test part (optimistic test scores)")
    _require_both_labels(data, ("train", watched))
    with _torch_settings(options) as device:
        trained = train_mlp(train, data.parts[watched], options, device, progress)
    model = trained.model.eval()
    meta = ClassifierMeta(
        dna_dim=data.dna_dim,
        esm_dim=data.esm_dim,
        chunk_length=int(info["chunk_length"]),
        dna_model=str(data.embedders[c.STAGE_DNA].get("model") or "") or None,
        esm_model=str(data.embedders[c.STAGE_ESM].get("model") or "") or None,
        esm_layer=_int_or_none(data.embedders[c.STAGE_ESM].get("layer")),
        hidden_dim=options.hidden_dim,
        source=f"virnucpro {__version__} fit (data sha256 {info['data_sha256'][:12]})",
    )
    if options.calibration != "none":
        meta.calibration = plain({**fit_calibration(options.calibration, model, data.parts[watched]),
                                  "fitted_on": f"{watched} part"})  # fmt: skip
        log.info("calibration (%s) fitted on %d %s chunks", options.calibration, meta.calibration["chunks"], watched)
    scored = with_calibration(model, meta.calibration)
    predictions_dir = outdir / PREDICTIONS_DIR
    result = classify_prepared(
        prepared, Path(dna_dir), Path(esm_dir), predictions_dir, (scored, meta),  # type: ignore[arg-type]
        chunk_length=meta.chunk_length, batch_size=classify_batch_size, rule=rule, upstream_failures=upstream_failures,
    )  # fmt: skip
    measured = evaluate_predictions(read_predictions(predictions_dir, labels), labels, evaluation, (unit, parts))
    log_headline(measured, "test")
    training = plain(_training_metadata(info, data, trained, options, measured, unit, parts, watched))
    checkpoint = outdir / CLASSIFIER_PT
    save_native(checkpoint, model, meta, training)
    write_training_log(outdir, trained.history)
    written = write_evaluation(outdir, measured, "test", f"test part ({info['split']['method']} split)")
    if evaluation.plots:
        from virnucpro.training.plots import plot_training

        written += plot_training(outdir / "plots", trained.history, trained.best_epoch)
    atomic_write_text(outdir / SPLIT_TSV, (prepared / SPLIT_TSV).read_text(encoding="utf-8"))
    c.write_failures(outdir / c.FAILED_FILES, result.failures)
    status = c.EXIT_PARTIAL if data.missing or result.failures else c.EXIT_OK
    log.info("classifier -> %s (best epoch %d of %d)", checkpoint, trained.best_epoch, len(trained.history))
    summary = {
        "command": "fit",
        "exit_status": status,
        "prepared": str(prepared),
        "classifier": str(checkpoint),
        "frames": {part: frames.label_counts() for part, frames in data.parts.items()},
        "frames_without_embeddings": data.missing,
        "epochs": len(trained.history),
        "best_epoch": trained.best_epoch,
        "metrics": {part: measured.headline(part) for part in measured.parts},
        "models": {"classifier": meta.to_dict(), **data.embedders},
        "files": [str(path) for path in written],
    }
    return FitResult(status, checkpoint, summary)


def plain(data: dict) -> dict:
    """``data`` as JSON types only (what ``torch.load(weights_only=True)`` reads back); a numpy number fails here."""
    return json.loads(json.dumps(data))


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, (int, str)) and str(value).isdigit() else None


def _require_both_labels(data: TrainingData, parts: Sequence[str]) -> None:
    for part in parts:
        counts = data.parts[part].label_counts()
        missing = [label for label, n in counts.items() if n == 0]
        if missing:
            raise InputError(f"the {part} part has no embedded frames labelled {missing[0]} (embedding failures?)")


@contextlib.contextmanager
def _torch_settings(options: FitOptions) -> Iterator[torch.device]:
    """The device, and on the CPU the thread count (restored afterwards)."""
    name = options.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is visible")
    threads = torch.get_num_threads()
    if options.threads and name == "cpu":
        torch.set_num_threads(options.threads)
    try:
        yield torch.device(name)
    finally:
        torch.set_num_threads(threads)


def new_model(input_dim: int, options: FitOptions) -> MLPClassifier:
    """The reference MLP with Xavier-uniform weights on both linear layers (seeded by the caller)."""
    model = MLPClassifier(input_dim, hidden_dim=options.hidden_dim)
    nn.init.xavier_uniform_(model.hidden_layer.weight)
    nn.init.xavier_uniform_(model.output_layer.weight)
    return model


def train_mlp(
    train: FrameSet, watched: FrameSet, options: FitOptions, device: torch.device, progress: str = "auto"
) -> TrainedModel:
    """SGD over shuffled batches, one learning-rate step per epoch, early stopping on ``watched``'s loss."""
    if len(train) < 2:
        raise InputError(f"the training part has {len(train)} frame(s): too few to train")
    generator = torch.Generator().manual_seed(options.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)  # weights and dropout masks
        model = new_model(train.features.shape[1], options).to(device)
        x_train = torch.from_numpy(train.features).to(device)
        y_train = torch.from_numpy(train.labels).to(device)
        x_watched = torch.from_numpy(watched.features).to(device)
        y_watched = torch.from_numpy(watched.labels).to(device)
        loss_fn = nn.CrossEntropyLoss(weight=_class_weights(train.labels, options).to(device))
        optimizer = torch.optim.SGD(model.parameters(), lr=options.learning_rate, momentum=options.momentum)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=options.lr_step_epochs, gamma=options.lr_gamma)
        batches = math.ceil(len(train) / options.batch_size)
        history: list[dict] = []
        best_loss, best_state, best_epoch, waited = math.inf, None, 0, 0
        with EpochProgress(progress, batches, options.max_epochs) as bar:
            for epoch in range(1, options.max_epochs + 1):
                start = time.perf_counter()
                rate = optimizer.param_groups[0]["lr"]
                train_loss = _train_epoch(model, optimizer, loss_fn, x_train, y_train, options, generator, bar)
                schedule.step()
                watched_loss, scores = _evaluate(model, loss_fn, x_watched, y_watched)
                row = _epoch_row(epoch, rate, train_loss, watched_loss, watched.labels, scores, start)
                history.append(row)
                bar.epoch_done(row)
                if watched_loss < best_loss:
                    best_loss, best_epoch, waited = watched_loss, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    waited += 1
                    if waited >= options.patience:
                        break
    stopped_early = len(history) < options.max_epochs
    if best_state is None:
        raise InputError("training diverged: the validation loss was never a finite number (try a lower --learning-rate)")
    model.load_state_dict(best_state)
    return TrainedModel(model.cpu().eval(), history, best_epoch, stopped_early)


def _class_weights(labels: np.ndarray, options: FitOptions) -> torch.Tensor:
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    if options.class_weight == "balanced":
        return torch.tensor(counts.sum() / (2 * np.maximum(counts, 1)), dtype=torch.float32)
    return torch.ones(2)


def _train_epoch(model, optimizer, loss_fn, x, y, options: FitOptions, generator, bar) -> float:
    model.train()
    order = torch.randperm(len(x), generator=generator).to(x.device)
    total, seen = 0.0, 0
    for start in range(0, len(x), options.batch_size):
        batch = order[start : start + options.batch_size]
        if len(batch) < 2:  # BatchNorm cannot train on one frame: the last frame of this epoch's order waits
            bar.advance()
            continue
        optimizer.zero_grad()
        loss = loss_fn(model(x[batch]), y[batch])
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
        seen += len(batch)
        bar.advance()
    return total / max(seen, 1)


def _evaluate(model, loss_fn, x, y, batch_size: int = 8192) -> tuple[float, np.ndarray]:
    """The loss on held-out frames and their P(virus), in eval mode."""
    model.eval()
    losses, scores = [], []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            logits = model(x[start : start + batch_size])
            losses.append(nn.functional.cross_entropy(logits, y[start : start + batch_size], weight=loss_fn.weight,
                                                      reduction="sum"))  # fmt: skip
            scores.append(torch.softmax(logits, dim=1)[:, 1].cpu())
    total = float(torch.stack(losses).sum()) / float(loss_fn.weight[y].sum())  # as CrossEntropyLoss's mean
    return total, torch.cat(scores).numpy()


def _epoch_row(epoch, rate, train_loss, watched_loss, labels, scores, start) -> dict:
    summary = metrics.summary(labels, scores, scores > 0.5)
    return {
        "epoch": epoch,
        "learning_rate": rate,
        "train_loss": train_loss,
        "validation_loss": watched_loss,
        **{f"validation_{key}": summary[key] for key in ("accuracy", "precision", "recall", "f1", "auroc")},
        "seconds": round(time.perf_counter() - start, 3),
    }


class EpochProgress:
    """A bar over each epoch's batches on a terminal (rich), one log line per epoch otherwise."""

    def __init__(self, mode: str, batches: int, max_epochs: int) -> None:
        from virnucpro.engine.progress import resolve_mode

        self.mode, self.batches, self.max_epochs = resolve_mode(mode), batches, max_epochs
        self._bar = None
        self._task = None

    def __enter__(self) -> "EpochProgress":
        if self.mode == "live":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            from virnucpro.log import stderr_console

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=stderr_console, transient=True,
            )  # fmt: skip
            self._bar.start()
            self._task = self._bar.add_task(f"epoch 1/{self.max_epochs}", total=self.batches)
        return self

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def epoch_done(self, row: dict) -> None:
        if self.mode != "quiet":
            log.info(
                "epoch %d: train loss %.4f, validation loss %.4f, accuracy %s, AUROC %s (%.1f s)",
                row["epoch"], row["train_loss"], row["validation_loss"],
                _fmt(row["validation_accuracy"]), _fmt(row["validation_auroc"]), row["seconds"],
            )  # fmt: skip
        if self._bar is not None:
            self._bar.reset(self._task, total=self.batches, description=f"epoch {row['epoch'] + 1}/{self.max_epochs}")

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _fmt(value: float | None) -> str:
    return "NA" if value is None else f"{value:.4f}"


def write_training_log(outdir: Path, history: list[dict]) -> None:
    """training_log.tsv and training_log.json: one row per epoch."""
    lines = ["\t".join(LOG_COLUMNS)]
    lines += ["\t".join("NA" if row[key] is None else f"{row[key]:.6g}" if isinstance(row[key], float) else str(row[key])
                        for key in LOG_COLUMNS) for row in history]  # fmt: skip
    atomic_write_text(outdir / TRAINING_LOG_TSV, "\n".join(lines) + "\n")
    atomic_write_text(outdir / TRAINING_LOG_JSON, json.dumps(history, indent=1) + "\n")


def _training_metadata(
    info: dict, data: TrainingData, trained: TrainedModel, options: FitOptions, measured, unit: str,
    parts: dict[str, str], watched: str,
) -> dict:
    """What the checkpoint says about its training: data, split, hyperparameters, epochs, metrics, versions.

    Nothing in it depends on time or on where files are, so that the same training gives the same bytes.
    """
    split = dict(info["split"])
    if unit == UNIT_SEQUENCE:  # the held-out sequences, for `evaluate` to warn about overlaps
        split["sequences"] = {part: [key for key, value in parts.items() if value == part] for part in ("train",
                              "validation", "test")}  # fmt: skip
    best = trained.history[trained.best_epoch - 1]
    return {
        "created_by": f"virnucpro {__version__} fit",
        "data": {
            "sha256": info["data_sha256"],
            "labels": info["labels"],
            "frames_used": {part: frames.label_counts() for part, frames in data.parts.items()},
            "frames_without_embeddings": data.missing,
        },
        "chunk_length": int(info["chunk_length"]),
        "genbank_frames": info["settings"]["genbank_frames"],
        "split": split,
        "early_stopping_on": watched,
        "hyperparameters": options.hyperparameters(),
        "epochs": {"run": len(trained.history), "best": trained.best_epoch, "stopped_early": trained.stopped_early},
        "best_epoch_validation": {key: value for key, value in best.items() if key not in ("seconds",)},
        "metrics": {part: measured.headline(part) for part in measured.parts},
        "embedders": data.embedders,
        "versions": software_versions(),
    }
