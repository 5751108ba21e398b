"""Metrics of a classifier on labelled data, from the prediction files ``classify`` writes.

Working from the prediction files means ``evaluate`` measures exactly what ``predict`` reports:
the same frame scores, the same chunk consensus, the same sequence calls. Three levels:

- ``frame``: ``score2`` (P(virus)) of each kept frame, called by ``Prediction`` (argmax);
- ``chunk``: ``max_score_1`` (highest P(virus) of its frames), called by ``Is_Virus``; the
  level ``--min-p-virus`` thresholds, so the cutoffs for a target false-positive rate are given here;
- ``sequence``: ``mean_p_virus`` (mean of its chunks' ``max_score_1``), called by ``call``;
  sequences without a call (``no_coding_frame``, ``failed``) are counted apart, by label.

Each level is measured overall, by sequence length bin and by the sheet's group, with a
threshold table, the cutoffs for target false-positive rates and reliability bins; for a
split, per part (a chunk or sequence belongs to a part when all its frames do).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from virnucpro import contracts as c
from virnucpro.atomic import atomic_write_text
from virnucpro.errors import InputError
from virnucpro.log import get_logger
from virnucpro.training import metrics
from virnucpro.training.labelled import LabelRow
from virnucpro.training.sheet import LABEL_VIRUS, LABELS, Sheet, SheetRow
from virnucpro.training.splits import UNIT_FRAME

log = get_logger("evaluate")

LEVELS = ("frame", "chunk", "sequence")
SCORES = {
    "frame": "score2: P(virus) of the frame; called by Prediction (argmax)",
    "chunk": "max_score_1: highest P(virus) of the chunk's frames; called by Is_Virus; what --min-p-virus compares",
    "sequence": "mean_p_virus: mean over the sequence's chunks of max_score_1; called by call (--virus-fraction)",
}
ALL = "all"  # the part name when there is no split
DEFAULT_LENGTH_BINS = (300, 500, 1000, 5000, 10000)
DEFAULT_TARGET_FPRS = (0.01, 0.05)
METRICS_JSON = "metrics.json"
METRICS_TSV = "metrics.tsv"
THRESHOLDS_TSV = "thresholds.tsv"
PLOTS_DIR = "plots"
METRIC_COLUMNS = ("n", "virus", "other", "accuracy", "precision", "recall", "specificity", "fpr", "f1", "mcc",
                  "auroc", "auprc", "brier", "tp", "fp", "tn", "fn")  # fmt: skip
THRESHOLD_COLUMNS = ("cutoff", "tp", "fp", "tn", "fn", "precision", "recall", "fpr")


@dataclass(frozen=True)
class EvaluationOptions:
    """Length bin edges (bp), target false-positive rates, and whether to draw plots."""

    length_bins: tuple[int, ...] = DEFAULT_LENGTH_BINS
    target_fprs: tuple[float, ...] = DEFAULT_TARGET_FPRS
    plots: bool = True


@dataclass
class LevelData:
    """One level's rows: ids, their sequence ids, labels (1 virus), scores and calls."""

    ids: list[str]
    records: list[str]
    labels: np.ndarray
    scores: np.ndarray
    called: np.ndarray

    def subset(self, mask: np.ndarray) -> "LevelData":
        return self.take(np.flatnonzero(mask))

    def take(self, keep: np.ndarray) -> "LevelData":
        return LevelData(
            [self.ids[i] for i in keep], [self.records[i] for i in keep],
            self.labels[keep], self.scores[keep], self.called[keep],
        )  # fmt: skip


@dataclass
class Predictions:
    """The prediction files of one run, joined with the labels."""

    levels: dict[str, LevelData]
    unclassified: dict[str, tuple[str, str]] = field(default_factory=dict)  # sequence id -> (call, label)


def read_predictions(directory: Path, labels: dict[str, LabelRow]) -> Predictions:
    """Read the three prediction files of ``directory``; every id must belong to a labelled sequence."""
    directory = Path(directory)
    frames = _rows(directory / c.PREDICTION_RESULTS, c.PREDICTION_RESULTS_HEADER)
    chunks = _rows(directory / c.PREDICTION_HIGHEST, c.PREDICTION_HIGHEST_HEADER)
    sequences = _rows(directory / c.SEQUENCE_PREDICTIONS, c.SEQUENCE_PREDICTIONS_HEADER)
    classified = [row for row in sequences if row["call"] in (c.CALL_VIRUS, c.CALL_OTHERS)]
    levels = {
        "frame": _level(directory, labels, frames, "Sequence_ID", lambda r: _record_of(r["Sequence_ID"][:-2]),
                        "score2", lambda r: r["Prediction"] == c.CALL_VIRUS),
        "chunk": _level(directory, labels, chunks, "Modified_ID", lambda r: _record_of(r["Modified_ID"]),
                        "max_score_1", lambda r: r["Is_Virus"] == "True"),
        "sequence": _level(directory, labels, classified, "id", lambda r: r["id"],
                           "mean_p_virus", lambda r: r["call"] == c.CALL_VIRUS),
    }  # fmt: skip
    unclassified = {
        row["id"]: (row["call"], _label(directory, labels, row["id"]).label)
        for row in sequences
        if row["call"] not in (c.CALL_VIRUS, c.CALL_OTHERS)
    }
    return Predictions(levels, unclassified)


def _record_of(chunk_id: str) -> str:
    return chunk_id.rsplit("_chunk_", 1)[0]


def _rows(path: Path, header: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: missing (not a directory of prediction files?)") from None
    if not lines or tuple(lines[0].split("\t")) != header:
        raise InputError(f"{path}: unexpected header (expected {', '.join(header)})")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def _label(directory: Path, labels: dict[str, LabelRow], record: str) -> LabelRow:
    try:
        return labels[record]
    except KeyError:
        raise InputError(f"{directory}: sequence {record} has no label (predictions of other data?)") from None


def _level(directory, labels, rows, id_key, record_of, score_key, is_virus) -> LevelData:
    records = [record_of(row) for row in rows]
    return LevelData(
        [row[id_key] for row in rows],
        records,
        np.array([_label(directory, labels, r).label == LABEL_VIRUS for r in records], dtype=np.int8),
        np.array([float(row[score_key]) for row in rows], dtype=np.float64),
        np.array([is_virus(row) for row in rows], dtype=bool),
    )


def part_masks(predictions: Predictions, unit: str, parts: dict[str, str]) -> dict[str, dict[str, np.ndarray]]:
    """Per part, per level, which rows belong to it (a chunk or sequence: when all its frames do)."""
    frames = predictions.levels["frame"]
    if unit == UNIT_FRAME:
        frame_part = [parts.get(frame_id, "") for frame_id in frames.ids]
        of_chunk: dict[str, set[str]] = {}
        of_record: dict[str, set[str]] = {}
        for frame_id, record, part in zip(frames.ids, frames.records, frame_part):
            of_chunk.setdefault(frame_id[:-2], set()).add(part)
            of_record.setdefault(record, set()).add(part)
        row_parts = {
            "frame": frame_part,
            "chunk": [_single(of_chunk.get(chunk_id)) for chunk_id in predictions.levels["chunk"].ids],
            "sequence": [_single(of_record.get(record)) for record in predictions.levels["sequence"].ids],
        }
    else:
        row_parts = {level: [parts.get(r, "") for r in data.records] for level, data in predictions.levels.items()}
    names = sorted({p for p in parts.values()}, key=lambda p: ("train", "validation", "test").index(p))
    return {name: {level: np.array([p == name for p in row_parts[level]]) for level in LEVELS} for name in names}


def _single(parts: set[str] | None) -> str:
    return next(iter(parts)) if parts and len(parts) == 1 else ""


def evaluate_level(data: LevelData, labels: dict[str, LabelRow], options: EvaluationOptions, breakdown: bool = True) -> dict:
    """Every metric of one level: overall, by length bin and group (with ``breakdown``),
    thresholds, cutoffs, reliability."""
    curve = metrics.Curve.of(data.labels, data.scores)
    rows = [labels[record] for record in data.records]
    by_length, by_group = [], []
    if breakdown:
        edges = (0, *options.length_bins)
        bins = np.searchsorted(np.array(options.length_bins), np.array([row.length for row in rows]), side="right")
        for index, low in enumerate(edges):
            high = edges[index + 1] if index + 1 < len(edges) else None
            mask = bins == index
            if mask.any():
                name = f"{low}-{high - 1}" if high is not None else f">={low}"
                by_length.append({"length": name, **_summary(data.subset(mask))})
        members: dict[str, list[int]] = {}
        for index, row in enumerate(rows):
            if row.group:
                members.setdefault(row.group, []).append(index)
        by_group = [{"group": group, **_summary(data.take(np.array(found)))} for group, found in members.items()]
    return {
        "overall": _summary(data),
        "by_length": by_length,
        "by_group": by_group,
        "thresholds": metrics.threshold_table(data.labels, data.scores),
        "cutoffs": [cut for target in options.target_fprs if (cut := curve.cutoff_for_fpr(target))],
        "reliability": metrics.reliability(data.labels, data.scores),
    }


def _summary(data: LevelData) -> dict:
    return metrics.summary(data.labels, data.scores, data.called)


@dataclass
class Evaluation:
    """The metrics of every part (``all`` without a split) and level, ready to be written."""

    parts: dict[str, dict[str, dict]]  # part -> level -> metrics
    unclassified: dict[str, dict[str, dict[str, int]]]  # part -> call -> label -> sequences
    curves: dict[str, dict[str, LevelData]]  # part -> level -> rows (for the plots)
    options: EvaluationOptions

    def to_json(self) -> dict:
        return {
            "scores": SCORES,
            "length_bins": list(self.options.length_bins),
            "target_fprs": list(self.options.target_fprs),
            "parts": {
                part: {"levels": levels, "unclassified_sequences": self.unclassified.get(part, {})}
                for part, levels in self.parts.items()
            },
        }

    def headline(self, part: str) -> dict:
        """The overall metrics of each level and the chunk cutoffs of one part (for logs and metadata)."""
        levels = self.parts[part]
        return {
            **{level: _rounded(levels[level]["overall"]) for level in LEVELS},
            "chunk_cutoffs": levels["chunk"]["cutoffs"],
        }


def _rounded(summary: dict) -> dict:
    keep = ("n", "accuracy", "precision", "recall", "f1", "mcc", "auroc", "auprc")
    return {key: (round(summary[key], 6) if isinstance(summary[key], float) else summary[key]) for key in keep}


def evaluate_predictions(
    predictions: Predictions,
    labels: dict[str, LabelRow],
    options: EvaluationOptions,
    split: tuple[str, dict[str, str]] | None = None,
) -> Evaluation:
    """Metrics per part (a split's parts, else one part ``all``) and level."""
    if split is None:
        masks = {ALL: {level: np.ones(len(data.ids), dtype=bool) for level, data in predictions.levels.items()}}
    else:
        masks = part_masks(predictions, *split)
    parts, curves, unclassified = {}, {}, {}
    for part, by_level in masks.items():
        subsets = {level: predictions.levels[level].subset(by_level[level]) for level in LEVELS}
        breakdown = part != "train"  # the training part: overall figures only (against overfitting)
        parts[part] = {level: evaluate_level(subsets[level], labels, options, breakdown) for level in LEVELS}
        curves[part] = subsets
        unclassified[part] = _unclassified(predictions, part, split)
    return Evaluation(parts, unclassified, curves, options)


def _unclassified(predictions: Predictions, part: str, split: tuple[str, dict[str, str]] | None) -> dict:
    counts: dict[str, dict[str, int]] = {}
    for record, (call, label) in predictions.unclassified.items():
        if split is not None and (split[0] == UNIT_FRAME or split[1].get(record) != part):
            continue  # a split of frames does not place sequences without scored frames
        counts.setdefault(call, {name: 0 for name in LABELS})[label] += 1
    return counts


def write_evaluation(outdir: Path, evaluation: Evaluation, plot_part: str, title: str) -> list[Path]:
    """metrics.json, metrics.tsv, thresholds.tsv and (for ``plot_part``) the plots; returns the paths."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(outdir / METRICS_JSON, json.dumps(evaluation.to_json(), indent=2) + "\n")
    lines = ["\t".join(("part", "level", "subset", *METRIC_COLUMNS))]
    thresholds = ["\t".join(("part", "level", *THRESHOLD_COLUMNS))]
    for part, levels in evaluation.parts.items():
        for level, result in levels.items():
            subsets = [("all", result["overall"])]
            subsets += [(f"length:{row['length']}", row) for row in result["by_length"]]
            subsets += [(f"group:{row['group']}", row) for row in result["by_group"]]
            lines += ["\t".join((part, level, name, *(_cell(row[key]) for key in METRIC_COLUMNS))) for name, row in subsets]
            thresholds += [
                "\t".join((part, level, *(_cell(row[key]) for key in THRESHOLD_COLUMNS))) for row in result["thresholds"]
            ]
    atomic_write_text(outdir / METRICS_TSV, "\n".join(lines) + "\n")
    atomic_write_text(outdir / THRESHOLDS_TSV, "\n".join(thresholds) + "\n")
    written = [outdir / METRICS_JSON, outdir / METRICS_TSV, outdir / THRESHOLDS_TSV]
    if evaluation.options.plots and plot_part in evaluation.curves:
        from virnucpro.training.plots import plot_evaluation

        written += plot_evaluation(outdir / PLOTS_DIR, evaluation.curves[plot_part], title)
    return written


def _cell(value: object) -> str:
    if value is None:
        return "NA"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def log_headline(evaluation: Evaluation, part: str) -> None:
    """One line per level (AUROC, AUPRC, F1, MCC) and the chunk cutoffs for --min-p-virus."""
    for level in LEVELS:
        overall = evaluation.parts[part][level]["overall"]
        log.info(
            "%s %s level: n=%d AUROC %s AUPRC %s F1 %s MCC %s",
            part, level, overall["n"], *(_cell(overall[key]) for key in ("auroc", "auprc", "f1", "mcc")),
        )  # fmt: skip
    for cut in evaluation.parts[part]["chunk"]["cutoffs"]:
        log.info(
            "%s: chunk P(virus) cutoff for a false-positive rate <= %s: %r (FPR %.4g, recall %.4g): "
            "predict --min-p-virus %r",
            part, cut["target_fpr"], cut["cutoff"], cut["fpr"], cut["recall"], cut["cutoff"],
        )  # fmt: skip


def labels_from_predictions(directory: Path, sheet: Sheet) -> dict[str, LabelRow]:
    """Labels of an existing ``predict`` output: each sequence's ``source`` matched to a sheet row
    (same path as given, the same file, or the only sheet file with that name)."""
    rows = _rows(Path(directory) / c.SEQUENCE_PREDICTIONS, c.SEQUENCE_PREDICTIONS_HEADER)
    match = _SheetMatch(directory, sheet)
    labels: dict[str, LabelRow] = {}
    for row in rows:
        found = match(row["source"])
        labels[row["id"]] = LabelRow(
            row["id"], row["original_id"], row["source"], found.label, found.group, found.date, int(row["length"]), ""
        )
    return labels


class _SheetMatch:
    """A predict ``source`` -> its sheet row: the same path string, else the same file, else the only
    sheet file of that name."""

    def __init__(self, directory: Path, sheet: Sheet) -> None:
        self.directory, self.sheet = directory, sheet
        self.by_path = {row.path: row for row in sheet.rows}
        self.by_file = {Path(row.path).resolve(): row for row in sheet.rows}
        self.by_name: dict[str, list[SheetRow]] = {}
        for row in sheet.rows:
            self.by_name.setdefault(Path(row.path).name, []).append(row)
        self.cache: dict[str, SheetRow] = {}

    def __call__(self, source: str) -> SheetRow:
        if source not in self.cache:
            found = self.by_path.get(source) or (self.by_file.get(Path(source).resolve()) if Path(source).exists() else None)
            named = self.by_name.get(Path(source).name, [])
            if found is None and len(named) != 1:
                what = "no" if not named else "more than one"
                raise InputError(f"{self.directory}: predictions of {source}, which matches {what} file of {self.sheet.path}")
            self.cache[source] = found or named[0]
        return self.cache[source]


def target_fprs(values: Sequence[float]) -> tuple[float, ...]:
    """``--target-fpr`` values, checked to lie in (0, 1)."""
    for value in values:
        if not 0.0 < value < 1.0:
            raise InputError(f"--target-fpr {value}: a false-positive rate in (0, 1)")
    return tuple(values)
