"""`virnucpro train` / `evaluate` end to end on synthetic labelled data with the tiny test models.

The two classes differ in codon usage (virnucpro.synthetic.codon_biased_sequence); even tiny
random embedding models carry that difference, so a working trainer separates held-out genomes,
while the same trainer on shuffled labels cannot.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from virnucpro import contracts as c
from virnucpro.cli import main
from virnucpro.synthetic import write_labelled_set
from virnucpro.training.splits import read_split

pytestmark = pytest.mark.slow

CHUNK_LENGTH = "150"  # neither of the reference's 300 / 500
SHARD_SIZE = "3000"  # protein residues: several shards, as several embedding tasks would get
PREDICTION_FILES = (c.PREDICTION_RESULTS, c.PREDICTION_HIGHEST, c.SEQUENCE_PREDICTIONS)


def model_args(models) -> list[str]:
    return ["--esm-model", str(models.esm), "--dna-model", str(models.dna), "--quiet"]


def train(sheet: Path, outdir: Path, models, *extra: str) -> int:
    args = ["train", str(sheet), "--outdir", str(outdir), "--chunk-length", CHUNK_LENGTH, "--shard-size", SHARD_SIZE,
            "--threads", "1"]  # fmt: skip
    return main([*args, "--no-plots", *model_args(models), *extra])


def fit(trained: Path, outdir: Path, *extra: str) -> int:
    work = trained / "work"
    return main([
        "fit", "--prepared", str(work / "prepared"), "--dna-embeddings", str(work / "embeddings" / "dna"),
        "--esm-embeddings", str(work / "embeddings" / "esm"), "--outdir", str(outdir), "--threads", "1",
        "--no-plots", "--quiet", *extra,
    ])  # fmt: skip


def levels_of(outdir: Path, part: str) -> dict:
    """The metrics of one part, by level, from OUTDIR/metrics.json."""
    return json.loads((outdir / "metrics.json").read_text())["parts"][part]["levels"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_labelled_set(tmp_path_factory.mktemp("labelled"), groups=24, records=2, length=(450, 900), seed=11)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data, test_models) -> Path:
    outdir = tmp_path_factory.mktemp("train") / "out"
    assert train(data, outdir, test_models) == c.EXIT_OK
    return outdir


def test_training_separates_held_out_genomes(trained: Path):
    levels = levels_of(trained, "test")
    for level in ("frame", "chunk"):
        overall = levels[level]["overall"]
        assert overall["virus"] >= 10 and overall["other"] >= 10  # a held-out part worth measuring
        assert overall["auroc"] >= 0.9, (level, overall)
    summary = json.loads((trained / c.SUMMARY_JSON).read_text())
    assert summary["command"] == "train" and summary["exit_status"] == 0
    assert set(summary["timings_s"]) >= {"prepare", "embed_dna", "embed_esm", "fit"}
    assert summary["engine"]["embed_esm"]["records"] > 0
    history = (trained / "training_log.tsv").read_text().splitlines()
    assert history[0].startswith("epoch\tlearning_rate\ttrain_loss\tvalidation_loss") and len(history) > 2
    checkpoint = torch.load(trained / "classifier.pt", weights_only=True)
    assert checkpoint["meta"]["chunk_length"] == 150
    training = checkpoint["training"]
    assert training["split"]["method"] == "group" and training["hyperparameters"]["learning_rate"] == 2e-4
    assert training["metrics"]["test"]["chunk"]["auroc"] == pytest.approx(levels["chunk"]["overall"]["auroc"], abs=1e-6)
    assert len(training["data"]["sha256"]) == 64


def test_the_same_trainer_cannot_learn_shuffled_labels(tmp_path, data, test_models):
    """The negative control: labels dealt to genomes at random, everything else the same."""
    lines = data.read_text().splitlines()
    labels = [line.split(",")[1] for line in lines[1:]]
    random.Random(1).shuffle(labels)
    shuffled = data.parent / "shuffled.csv"
    shuffled.write_text("\n".join([lines[0]] + [
        ",".join((line.split(",")[0], label, line.split(",")[2])) for line, label in zip(lines[1:], labels)
    ]) + "\n")  # fmt: skip
    assert train(shuffled, tmp_path / "out", test_models) == c.EXIT_OK
    for level in ("frame", "chunk"):
        assert levels_of(tmp_path / "out", "test")[level]["overall"]["auroc"] < 0.75


def test_no_group_is_on_two_sides(trained: Path, data: Path):
    group_of_file = {line.split(",")[0]: line.split(",")[2] for line in data.read_text().splitlines()[1:]}
    unit, parts = read_split(trained / "split.tsv")
    assert unit == "sequence_id" and set(parts.values()) == {"train", "validation", "test"}
    sides: dict[str, set[str]] = {}
    for sequence, part in parts.items():
        sides.setdefault(group_of_file[sequence.split("_r")[0] + ".fa"], set()).add(part)
    assert len(sides) == len(group_of_file) and all(len(found) == 1 for found in sides.values())


def test_same_seed_same_checkpoint_bytes(trained: Path, tmp_path):
    """(``train`` and the stage commands give the same bytes too: the test below.)"""
    short = ("--max-epochs", "15")
    assert fit(trained, tmp_path / "a", *short) == c.EXIT_OK
    assert fit(trained, tmp_path / "b", *short) == c.EXIT_OK
    same = (tmp_path / "a" / "classifier.pt").read_bytes()
    assert same == (tmp_path / "b" / "classifier.pt").read_bytes()
    assert fit(trained, tmp_path / "c", *short, "--train-seed", "7") == c.EXIT_OK
    assert (tmp_path / "c" / "classifier.pt").read_bytes() != same


def test_the_stage_commands_make_the_same_classifier_as_train(trained: Path, data: Path, tmp_path, test_models):
    """What the pipeline runs (prepare-labelled, embed-dna / embed-esm per shard, fit) equals `train`."""
    prepared = tmp_path / "prepared"
    assert main(["prepare-labelled", str(data), "--outdir", str(prepared), "--chunk-length", CHUNK_LENGTH,
                 "--shard-size", SHARD_SIZE, "--quiet"]) == 0  # fmt: skip
    shards = sorted((prepared / c.SHARD_PROTEIN_DIR).glob("*.fa"))
    assert len(shards) > 1  # several tasks' worth
    for command, sub, model in (("embed-dna", c.SHARD_NUCLEOTIDE_DIR, ["--dna-model", str(test_models.dna)]),
                                ("embed-esm", c.SHARD_PROTEIN_DIR, ["--esm-model", str(test_models.esm)])):  # fmt: skip
        for shard in shards:  # one call per shard, as one task per shard would
            files = [str(prepared / sub / shard.name)]
            assert main([command, *files, "--outdir", str(tmp_path / command), *model, "--quiet"]) == 0
    args = ["fit", "--prepared", str(prepared), "--dna-embeddings", str(tmp_path / "embed-dna"),
            "--esm-embeddings", str(tmp_path / "embed-esm"), "--outdir", str(tmp_path / "fit"), "--threads", "1",
            "--no-plots", "--quiet"]  # fmt: skip
    assert main(args) == c.EXIT_OK
    assert (tmp_path / "fit" / "classifier.pt").read_bytes() == (trained / "classifier.pt").read_bytes()


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, trained: Path, test_models) -> tuple[Path, Path]:
    """A fresh labelled set (other genomes) evaluated with the trained classifier."""
    sheet = write_labelled_set(tmp_path_factory.mktemp("fresh"), groups=4, records=2, length=(150, 1200), seed=99)
    outdir = tmp_path_factory.mktemp("evaluate") / "out"
    args = ["evaluate", str(sheet), "--classifier", str(trained / "classifier.pt"), "--outdir", str(outdir)]
    assert main([*args, *model_args(test_models)]) == c.EXIT_OK
    return sheet, outdir


def test_a_trained_checkpoint_round_trips_through_predict(evaluated, trained: Path, tmp_path, test_models, capsys):
    sheet, evaluation = evaluated
    files = [str(sheet.parent / line.split(",")[0]) for line in sheet.read_text().splitlines()[1:]]
    out = tmp_path / "predict"
    classifier = str(trained / "classifier.pt")
    # no --chunk-length: the checkpoint's (150 bp) is used
    assert main(["predict", *files, "--outdir", str(out), "--classifier", classifier, *model_args(test_models)]) == 0
    for name in PREDICTION_FILES:
        assert (out / name).read_bytes() == (evaluation / name).read_bytes(), name
    assert json.loads((out / c.SUMMARY_JSON).read_text())["chunk_length"] == 150
    levels = levels_of(evaluation, "all")
    assert levels["sequence"]["overall"]["n"] == 16 and levels["chunk"]["overall"]["auroc"] >= 0.9
    assert levels["chunk"]["cutoffs"][0]["target_fpr"] == 0.01
    capsys.readouterr()
    args = ["predict", files[0], "--outdir", str(tmp_path / "x"), "--classifier", classifier, "--chunk-length", "300"]
    assert main([*args, *model_args(test_models)]) == c.EXIT_FAILED
    assert "trained on 150 bp chunks, not --chunk-length 300" in capsys.readouterr().err
    args = ["predict", files[0], "--outdir", str(tmp_path / "y"), "--chunk-length", "150", "--quiet"]
    assert main([*args, *model_args(test_models)]) == 1  # the test models: the embedding models are found
    assert "no reference classifier for 150 bp chunks" in capsys.readouterr().err


def test_evaluate_predictions_measures_an_earlier_predict_output(evaluated, tmp_path):
    sheet, evaluation = evaluated
    out = tmp_path / "metrics"
    assert main(["evaluate-predictions", str(evaluation), "--sheet", str(sheet), "--outdir", str(out), "--quiet"]) == 0
    assert (out / "metrics.json").read_text() == (evaluation / "metrics.json").read_text()
    assert {p.name for p in (evaluation / "plots").iterdir()} == {"roc.png", "precision_recall.png", "reliability.png"}
    rows = (evaluation / "thresholds.tsv").read_text().splitlines()
    assert rows[0] == "part\tlevel\tcutoff\ttp\tfp\ttn\tfn\tprecision\trecall\tfpr" and len(rows) == 1 + 3 * 101


def test_a_calibrated_checkpoint_reports_calibrated_scores(trained: Path, evaluated, tmp_path, test_models):
    assert fit(trained, tmp_path / "hot", "--calibration", "temperature") == c.EXIT_OK
    checkpoint = tmp_path / "hot" / "classifier.pt"
    calibration = torch.load(checkpoint, weights_only=True)["meta"]["calibration"]
    assert calibration["method"] == "temperature" and calibration["temperature"] > 0
    sheet, evaluation = evaluated
    out = tmp_path / "evaluate"
    args = ["evaluate", str(sheet), "--classifier", str(checkpoint), "--outdir", str(out), "--resume"]
    assert main([*args, *model_args(test_models)]) == c.EXIT_OK
    plain = [line.split("\t") for line in (evaluation / c.PREDICTION_RESULTS).read_text().splitlines()[1:]]
    hot = [line.split("\t") for line in (out / c.PREDICTION_RESULTS).read_text().splitlines()[1:]]
    assert [row[0] for row in plain] == [row[0] for row in hot]
    t = calibration["temperature"]
    for before, after in zip(plain, hot):  # P(virus) = sigmoid(logit difference / T)
        difference = torch.logit(torch.tensor(float(before[3]), dtype=torch.float64))
        assert float(after[3]) == pytest.approx(float(torch.sigmoid(difference / t)), abs=2e-5)


def test_train_stops_before_embedding_on_a_sheet_that_cannot_be_split(tmp_path, data, test_models, capsys):
    sheet = data.parent / "one_group_twice.csv"
    copy = data.parent / "copy.fa"
    copy.write_bytes((data.parent / "virus001.fa").read_bytes())
    sheet.write_text(data.read_text() + "copy.fa,virus,other_group\n")
    assert train(sheet, tmp_path / "out", test_models, "--split", "group") == c.EXIT_FAILED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "both sides of a group split" in err[0]
    assert not (tmp_path / "out" / "work" / "embeddings").exists()


def test_evaluate_can_calibrate_a_classifier_on_its_data(evaluated, trained: Path, tmp_path):
    _, evaluation = evaluated
    work = evaluation / "work"
    calibrated = tmp_path / "calibrated.pt"
    args = [
        "evaluate-embedded", "--prepared", str(work / "prepared"), "--dna-embeddings", str(work / "embeddings" / "dna"),
        "--esm-embeddings", str(work / "embeddings" / "esm"), "--classifier", str(trained / "classifier.pt"),
        "--outdir", str(tmp_path / "out"), "--calibrate", "isotonic", "--calibrated-classifier", str(calibrated),
        "--no-plots", "--quiet",
    ]  # fmt: skip
    assert main(args) == c.EXIT_OK
    for name in PREDICTION_FILES:  # the classifier given is measured, not the calibrated copy
        assert (tmp_path / "out" / name).read_bytes() == (evaluation / name).read_bytes()
    original = torch.load(trained / "classifier.pt", weights_only=True)
    copy = torch.load(calibrated, weights_only=True)
    assert all(torch.equal(original["state_dict"][k], v) for k, v in copy["state_dict"].items())
    assert copy["meta"]["calibration"]["method"] == "isotonic"
    assert copy["meta"]["calibration"]["fitted_on"].startswith("evaluation data sha256 ")
    assert copy["training"] == original["training"]
    assert main(args[:-4] + ["--calibrate", "isotonic", "--quiet"]) == c.EXIT_FAILED  # the path is required too
