"""`--mode train` and `--mode evaluate` run by a real Nextflow: the same classifier and metrics as
`virnucpro train` / `virnucpro evaluate` on the same sheet, and bad labelled sheets refused.

Tiny random embedding models on synthetic genomes whose two classes differ in codon usage
(virnucpro.synthetic); two pipeline runs (train, then evaluate with its checkpoint) shared by
the tests through module-scoped fixtures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_pipeline_nextflow import STACK_TRACE, read_tsv

from nextflow_runner import Run, launcher, pipeline, task_rows

pytestmark = [pytest.mark.slow, pytest.mark.nextflow]

CHUNK_LENGTH = "150"  # neither of the reference's 300 / 500
SHARD_SIZE = "6000"  # protein residues: a few shards, so a few embedding tasks per model
MAX_EPOCHS = "20"  # enough for the toy classes, short for the test
# The embedding's float rounding depends on batch sizes and threads: the pipeline's (those of
# -profile test, and one CPU per task) are given to the CLI too.
ESM_BATCH, DNA_BATCH = "1024", "2048"
TRAINING_FILES = ("classifier.pt", "training_log.tsv", "training_log.json", "metrics.json", "metrics.tsv",
                  "thresholds.tsv", "split.tsv", "summary.json")  # fmt: skip
EVALUATION_FILES = ("prediction_results.txt", "prediction_results_highestscore.csv", "sequence_predictions.tsv",
                    "metrics.json", "metrics.tsv", "thresholds.tsv", "summary.json")  # fmt: skip


@pytest.fixture(scope="module")
def nf() -> Path:
    return launcher()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    from virnucpro.testmodels import make_test_models

    return make_test_models(tmp_path_factory.mktemp("nf-train-models"))


@pytest.fixture(scope="module")
def sheets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A training sheet and a held-out sheet of other genomes (another seed)."""
    from virnucpro.synthetic import write_labelled_set

    data = tmp_path_factory.mktemp("nf-labelled")
    return {
        "train": write_labelled_set(data / "train", groups=12, records=2, length=(450, 900), seed=11),
        "heldout": write_labelled_set(data / "heldout", groups=4, records=2, length=(450, 900), seed=23),
    }


def model_args(models) -> list[str]:
    """The test profile's resources (1 CPU per task: torch on one thread) with these models."""
    return ["-profile", "test", "--test_models", "false", "--esm_model", str(models.esm), "--dna_model", str(models.dna),
            "--esm_batch_size", ESM_BATCH, "--dna_batch_size", DNA_BATCH]  # fmt: skip


def cli(*args: str) -> None:
    """`virnucpro ARGS` as a pipeline task runs it: torch on one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "virnucpro", *args, "--quiet"], check=True, capture_output=True, timeout=900, env=env)


def cli_models(models) -> list[str]:
    return ["--esm-model", str(models.esm), "--dna-model", str(models.dna), "--esm-batch-size", ESM_BATCH, "--dna-batch-size", DNA_BATCH]


@pytest.fixture(scope="module")
def train_run(nf: Path, models, sheets, tmp_path_factory: pytest.TempPathFactory) -> Run:
    args = ["--mode", "train", "--input", str(sheets["train"]), "--outdir", "results", "--chunk_length", CHUNK_LENGTH,
            "--shard_size", SHARD_SIZE, "--max_epochs", MAX_EPOCHS, *model_args(models)]  # fmt: skip
    return pipeline(nf, args, tmp_path_factory.mktemp("nf-train"), check=0)


@pytest.fixture(scope="module")
def cli_trained(models, sheets, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`virnucpro train` on the same sheet with the same options, seeds and one thread."""
    outdir = tmp_path_factory.mktemp("cli-train") / "out"
    cli("train", str(sheets["train"]), "--outdir", str(outdir), "--chunk-length", CHUNK_LENGTH, "--shard-size", SHARD_SIZE,
        "--max-epochs", MAX_EPOCHS, "--threads", "1", *cli_models(models))  # fmt: skip
    return outdir


def test_train_mode_publishes_the_training_files_and_status_0(train_run: Run) -> None:
    assert train_run.run_status() == 0
    assert "virnucpro: run status 0 (ok): the classifier was trained" in train_run.output
    training = train_run.published() / "training"
    for name in TRAINING_FILES:
        assert (training / name).is_file(), name
    assert {p.name for p in (training / "plots").iterdir()} >= {"loss.png", "roc.png", "precision_recall.png"}
    assert json.loads((training / "summary.json").read_text())["exit_status"] == 0
    info = train_run.published() / "pipeline_info"
    versions = (info / "virnucpro_software_versions.yml").read_text()
    assert "TRAIN" in versions and "EMBED_ESM" in versions and "PREPARE_LABELLED" in versions
    for prefix in ("execution_report_", "execution_timeline_", "execution_trace_", "pipeline_dag_"):
        assert list(info.glob(f"{prefix}*")), prefix
    assert "WARN" not in train_run.output, train_run.output


def test_train_mode_scatters_the_embedding_over_shards(train_run: Run) -> None:
    trace = train_run.trace()
    for process in ("EMBED_DNA", "EMBED_ESM"):
        assert len({row["tag"] for row in task_rows(trace, process)}) >= 2, process
    assert len(task_rows(trace, "TRAIN")) == 1 and len(task_rows(trace, "PREPARE_LABELLED")) == 1
    script = (Path(task_rows(trace, "TRAIN")[0]["workdir"]) / ".command.sh").read_text()
    assert "export CUDA_VISIBLE_DEVICES=''" in script and "--device cpu --threads 1" in script


def test_train_mode_gives_the_checkpoint_of_virnucpro_train(train_run: Run, cli_trained: Path) -> None:
    """Same sheet, options, seeds, batch sizes and threads on the CPU: the same bytes (weights,
    metadata, split, metrics; the per-epoch log differs only in its seconds)."""
    training = train_run.published() / "training"
    for name in ("classifier.pt", "split.tsv", "metrics.json", "metrics.tsv", "thresholds.tsv"):
        assert (training / name).read_bytes() == (cli_trained / name).read_bytes(), name
    checkpoint = torch.load(training / "classifier.pt", weights_only=True)
    assert checkpoint["meta"]["chunk_length"] == int(CHUNK_LENGTH)
    assert checkpoint["training"]["split"]["method"] == "group"
    assert checkpoint["training"]["hyperparameters"]["max_epochs"] == int(MAX_EPOCHS)


def test_the_trained_checkpoint_is_used_by_predict(train_run: Run, models, sheets, tmp_path: Path) -> None:
    reads = sheets["heldout"].parent / "virus001.fa"
    cli("predict", str(reads), "--outdir", str(tmp_path / "calls"), "--classifier", str(train_run.published() / "training" / "classifier.pt"),
        "--esm-model", str(models.esm), "--dna-model", str(models.dna))  # fmt: skip
    rows = read_tsv(tmp_path / "calls" / "sequence_predictions.tsv")
    assert rows and all(row["call"] in ("virus", "others") for row in rows)


@pytest.fixture(scope="module")
def evaluate_run(nf: Path, models, sheets, train_run: Run, tmp_path_factory: pytest.TempPathFactory) -> Run:
    classifier = train_run.published() / "training" / "classifier.pt"
    args = ["--mode", "evaluate", "--input", str(sheets["heldout"]), "--outdir", "results", "--chunk_length", CHUNK_LENGTH,
            "--shard_size", SHARD_SIZE, "--classifier", str(classifier), *model_args(models)]  # fmt: skip
    return pipeline(nf, args, tmp_path_factory.mktemp("nf-evaluate"), check=0)


def test_evaluate_mode_publishes_the_metrics_of_virnucpro_evaluate(evaluate_run: Run, train_run: Run, models, sheets, tmp_path: Path) -> None:
    assert evaluate_run.run_status() == 0
    assert "virnucpro: run status 0 (ok): every sequence was classified and measured" in evaluate_run.output
    evaluation = evaluate_run.published() / "evaluation"
    for name in EVALUATION_FILES:
        assert (evaluation / name).is_file(), name
    assert {p.name for p in (evaluation / "plots").iterdir()} >= {"roc.png", "precision_recall.png", "reliability.png"}
    cli("evaluate", str(sheets["heldout"]), "--outdir", str(tmp_path / "eval"), "--shard-size", SHARD_SIZE,
        "--classifier", str(train_run.published() / "training" / "classifier.pt"), *cli_models(models))  # fmt: skip
    for name in ("prediction_results.txt", "prediction_results_highestscore.csv", "metrics.tsv", "thresholds.tsv"):
        assert (evaluation / name).read_bytes() == (tmp_path / "eval" / name).read_bytes(), name
    # the same rows; `source` names the staged file (data/00001/virus001.fa) instead of the sheet's path
    ours, theirs = (read_tsv(d / "sequence_predictions.tsv") for d in (evaluation, tmp_path / "eval"))
    assert ours and [{**row, "source": Path(row["source"]).name} for row in ours] == [
        {**row, "source": Path(row["source"]).name} for row in theirs
    ]
    ours, theirs = (json.loads((d / "metrics.json").read_text()) for d in (evaluation, tmp_path / "eval"))
    assert ours["parts"] == theirs["parts"]
    chunk = ours["parts"]["all"]["levels"]["chunk"]["overall"]
    assert chunk["virus"] > 0 and chunk["other"] > 0
    assert not task_rows(evaluate_run.trace(), "TRAIN") and len(task_rows(evaluate_run.trace(), "EVALUATE")) == 1


# --------------------------------------------------------------------------- bad labelled sheets


@pytest.mark.parametrize(
    "header, label, mode, message",
    [
        ("path,group", "", "train", "sheet.csv: missing column 'label' (header: path,group; expected path,label[,group][,date])"),
        ("path,label,group", "phage", "evaluate", "sheet.csv line 2: unknown label 'phage' (virus or other)"),
        ("path,label,group", "virus", "train", "sheet.csv: no file labelled other (training needs both virus and other)"),
    ],
)
def test_bad_labelled_sheet_is_one_clear_line(nf: Path, tmp_path: Path, header: str, label: str, mode: str, message: str) -> None:
    (tmp_path / "a.fa").write_text(">a\nATGAAACCCGGGTTTTAA\n")
    (tmp_path / "b.fa").write_text(">b\nATGCCCAAAGGGTTTTAA\n")
    values = [f"{name},{label},g{index}".replace(",,", ",") if label else f"{name},g{index}" for index, name in enumerate(("a.fa", "b.fa"))]
    (tmp_path / "sheet.csv").write_text("\n".join([header, *values]) + "\n")
    run = pipeline(nf, ["--mode", mode, "--input", str(tmp_path / "sheet.csv"), "--outdir", "out"], tmp_path)
    assert run.returncode == 1
    assert message in run.output, run.output
    assert not STACK_TRACE.search(run.output), run.output


def test_training_parameters_that_disagree_are_one_clear_line(nf: Path, sheets, tmp_path: Path) -> None:
    args = ["--mode", "train", "--input", str(sheets["train"]), "--outdir", "out", "--classifier", "300",
            "--test_fraction", "0.6", "--validation_fraction", "0.5", "--split", "date"]  # fmt: skip
    run = pipeline(nf, args, tmp_path)
    assert run.returncode == 1
    for message in ("--classifier is not used by --mode train", "--split date needs --before YYYY-MM-DD",
                    "--test_fraction 0.6 and --validation_fraction 0.5 must be below 1 together"):  # fmt: skip
        assert message in run.output, run.output
    assert not STACK_TRACE.search(run.output), run.output
