"""The pipeline run by a real Nextflow (tools/nextflow/install.sh): results, failures, status, resume.

Every run here starts Nextflow on this clone with the test session's Python environment on the
PATH and no container engine; tiny random models, so only the plumbing is meaningful.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nextflow_runner import (
    REPO_ROOT,
    Run,
    hugging_face_cache,
    launcher,
    pipeline,
    poisoned_esm,
    samplesheet,
    task_rows,
    torch_hub_cache,
)

pytestmark = [pytest.mark.slow, pytest.mark.nextflow]

ASSETS = REPO_ROOT / "assets"
SAMPLE_FILES = ("prediction_results.txt", "prediction_results_highestscore.csv", "sequence_predictions.tsv", "summary.json")
STATUS_FILES = ("run_status.txt", "run_summary.json")
STACK_TRACE = re.compile(r"^\s+at [\w.$]+\(|groovy\.lang\.|java\.lang\.\w+Exception|nextflow\.exception\.", re.MULTILINE)


@pytest.fixture(scope="module")
def nf() -> Path:
    return launcher()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    from virnucpro.testmodels import make_test_models

    return make_test_models(tmp_path_factory.mktemp("nf-models"))


def model_args(models, esm: Path | str | None = None, dna: Path | str | None = None) -> list[str]:
    """The test profile's resources (1 CPU, 6 GB per task) with these models instead of the ones it makes."""
    return [
        "-profile", "test", "--test_models", "false",
        "--esm_model", str(esm or models.esm),
        "--dna_model", str(dna or models.dna),
        "--classifier", str(models.classifier),
    ]


def assert_sample_folder_complete(run: Run, sample: str, outdir: str = "results") -> None:
    """The published folder of ``sample`` holds every file of its PREDICT task, byte for byte."""
    published = run.published(outdir) / sample
    rows = [row for row in task_rows(run.trace(outdir), "PREDICT") if row["tag"] == sample]
    assert rows, f"no PREDICT task for {sample}"
    produced = Path(rows[-1]["workdir"]) / sample
    names = sorted(p.name for p in produced.iterdir())
    assert set(SAMPLE_FILES) <= set(names)
    assert sorted(p.name for p in published.iterdir()) == names
    for name in names:
        assert (published / name).read_bytes() == (produced / name).read_bytes(), f"{sample}/{name} differs"


def read_tsv(path: Path) -> list[dict[str, str]]:
    """Rows of a prediction file (all tab-separated, the reference's .csv too)."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def assert_same_scores(ours: list[dict[str, str]], theirs: list[dict[str, str]], label: str, scores: tuple[str, ...]) -> None:
    """Same rows and labels; scores within 1e-5 (a label may differ only where its two scores tie within that)."""
    assert [row[next(iter(row))] for row in ours] == [row[next(iter(row))] for row in theirs]
    for a, b in zip(ours, theirs):
        values = [(float(a[s]), float(b[s])) for s in scores if a[s] != "NA"]
        assert all(math.isclose(x, y, abs_tol=1e-5) for x, y in values), (a, b)
        if a[label] != b[label]:
            assert abs(float(a[scores[0]]) - float(a[scores[1]])) < 1e-5, (a, b)


# --------------------------------------------------------------------------- -profile test


@pytest.fixture(scope="module")
def test_profile_run(nf: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return pipeline(nf, ["-profile", "test", "--outdir", "results"], tmp_path_factory.mktemp("nf-test-profile"))


def test_test_profile_completes_with_status_0(test_profile_run: Run) -> None:
    assert test_profile_run.returncode == 0, test_profile_run.output[-4000:]
    assert test_profile_run.run_status() == 0
    assert "virnucpro: run status 0 (ok)" in test_profile_run.output


def test_test_profile_publishes_every_file(test_profile_run: Run) -> None:
    for sample in ("test_fasta", "test_fastq"):
        assert_sample_folder_complete(test_profile_run, sample)
    info = test_profile_run.published() / "pipeline_info"
    for name in (*STATUS_FILES, "virnucpro_software_versions.yml", "virnucpro_report.html"):
        assert (info / name).is_file(), name
    assert sorted(p.name for p in (info / "multiqc").iterdir()) == [
        f"{sample}_virnucpro_mqc.{suffix}" for sample in ("test_fasta", "test_fastq") for suffix in ("tsv", "yaml")
    ]
    assert "<html" in (info / "virnucpro_report.html").read_text()[:2000].lower()
    for prefix in ("execution_report_", "execution_timeline_", "execution_trace_", "pipeline_dag_"):
        assert list(info.glob(f"{prefix}*")), prefix
    versions = (info / "virnucpro_software_versions.yml").read_text()
    assert "EMBED_ESM" in versions and "fair-esm" in versions


def test_test_profile_has_no_warnings(test_profile_run: Run) -> None:
    assert "WARN" not in test_profile_run.output, test_profile_run.output


def test_tasks_without_gpu_hide_the_gpus_and_user_site_packages(test_profile_run: Run) -> None:
    for row in test_profile_run.trace():
        workdir = Path(row["workdir"])
        if row["process"].endswith("RUN_STATUS"):
            continue
        assert "export CUDA_VISIBLE_DEVICES=''" in (workdir / ".command.sh").read_text(), row["name"]
        assert 'export PYTHONNOUSERSITE="1"' in (workdir / ".command.run").read_text(), row["name"]


def test_stub_run(nf: Path, tmp_path: Path) -> None:
    run = pipeline(nf, ["-profile", "test", "-stub-run", "--outdir", "results"], tmp_path)
    assert run.returncode == 0, run.output[-4000:]
    assert run.run_status() == 0


# --------------------------------------------------------------------------- three samples, scattered


@pytest.fixture(scope="module")
def three_samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("nf-three-samples")
    shutil.copyfile(ASSETS / "test_reads.fa", data / "reads.fa")
    shutil.copyfile(ASSETS / "test_reads.fq.gz", data / "reads.fq.gz")
    (data / "blank.fa").write_text("")
    return samplesheet(data / "samples.csv", [("fasta", "reads.fa"), ("fastq", "reads.fq.gz"), ("blank", "blank.fa")])


@pytest.fixture(scope="module")
def three_sample_run(nf: Path, models, three_samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    args = ["--input", str(three_samples), "--outdir", "results", "--shard_size", "600", *model_args(models)]
    return pipeline(nf, args, tmp_path_factory.mktemp("nf-three"), check=0)


def test_each_sample_scatters_into_several_embedding_tasks(three_sample_run: Run) -> None:
    trace = three_sample_run.trace()
    for sample in ("fasta", "fastq"):
        for process in ("EMBED_DNA", "EMBED_ESM"):
            shards = {row["tag"] for row in task_rows(trace, process) if row["tag"].startswith(f"{sample}:")}
            assert len(shards) >= 2, (sample, process, shards)
    assert not [row for row in trace if row["tag"].startswith("blank:")]


def test_local_models_are_staged_not_fetched(three_sample_run: Run) -> None:
    assert not task_rows(three_sample_run.trace(), "FETCH_MODEL")


def test_blank_control_is_a_sample_without_reads(three_sample_run: Run) -> None:
    assert three_sample_run.run_status() == 0
    summary = json.loads((three_sample_run.published() / "blank" / "summary.json").read_text())
    assert summary["exit_status"] == 0
    assert read_tsv(three_sample_run.published() / "blank" / "sequence_predictions.tsv") == []


@pytest.mark.parametrize("sample, source", [("fasta", "test_reads.fa"), ("fastq", "test_reads.fq.gz")])
def test_pipeline_results_equal_predict(three_sample_run: Run, models, sample: str, source: str, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "virnucpro", "predict", str(ASSETS / source), "--outdir", str(tmp_path), "--quiet",
           "--classifier", str(models.classifier), "--esm-model", str(models.esm), "--dna-model", str(models.dna)]
    subprocess.run(cli, check=True, capture_output=True, timeout=600)
    ours = three_sample_run.published() / sample
    frames = read_tsv(ours / "prediction_results.txt"), read_tsv(tmp_path / "prediction_results.txt")
    assert frames[0], "no frame was classified"
    assert_same_scores(*frames, label="Prediction", scores=("score1", "score2"))
    chunks = read_tsv(ours / "prediction_results_highestscore.csv"), read_tsv(tmp_path / "prediction_results_highestscore.csv")
    assert_same_scores(*chunks, label="Is_Virus", scores=("max_score_0", "max_score_1"))
    sequences = read_tsv(ours / "sequence_predictions.tsv"), read_tsv(tmp_path / "sequence_predictions.tsv")
    assert [{k: v for k, v in row.items() if k not in ("source", "max_p_virus", "mean_p_virus")} for row in sequences[0]] == [
        {k: v for k, v in row.items() if k not in ("source", "max_p_virus", "mean_p_virus")} for row in sequences[1]
    ]
    for a, b in zip(*sequences):
        for column in ("max_p_virus", "mean_p_virus"):
            assert a[column] == b[column] == "NA" or math.isclose(float(a[column]), float(b[column]), abs_tol=1e-5)


@pytest.fixture(scope="module")
def resumed_run(nf: Path, models, three_samples: Path, three_sample_run: Run) -> Run:
    snapshot = {p: p.read_bytes() for p in three_sample_run.published().glob("*/*") if p.is_file() and p.parent.name != "pipeline_info"}
    args = ["--input", str(three_samples), "--outdir", "results", "--shard_size", "600", *model_args(models), "-resume"]
    run = pipeline(nf, args, three_sample_run.launch_dir, check=0)
    run.snapshot = snapshot  # type: ignore[attr-defined]
    return run


def test_resume_caches_every_task(resumed_run: Run) -> None:
    statuses = {row["name"]: row["status"] for row in resumed_run.trace()}
    assert statuses and set(statuses.values()) == {"CACHED"}, statuses


def test_resume_gives_identical_outputs(resumed_run: Run) -> None:
    for path, content in resumed_run.snapshot.items():  # type: ignore[attr-defined]
        assert path.read_bytes() == content, path


def test_changed_input_reruns_only_its_sample(nf: Path, models, three_samples: Path, resumed_run: Run) -> None:
    reads = three_samples.parent / "reads.fa"
    records = reads.read_text().split(">")[1:]
    reads.write_text("".join(f">{record}" for record in records[:-3]))  # three records fewer
    args = ["--input", str(three_samples), "--outdir", "results", "--shard_size", "600", *model_args(models), "-resume"]
    run = pipeline(nf, args, resumed_run.launch_dir, check=0)
    trace = run.trace()
    for row in trace:
        sample = row["tag"].split(":", 1)[0]
        if sample == "fasta" or row["process"].rsplit(":", 1)[-1] in ("SUMMARIZE", "RUN_STATUS"):
            assert row["status"] == "COMPLETED", row["name"]
        else:
            assert row["status"] == "CACHED", row["name"]
    assert len(read_tsv(run.published() / "fasta" / "sequence_predictions.tsv")) == len(records) - 3


# --------------------------------------------------------------------------- failures and the run's status


@pytest.fixture(scope="module")
def failing_shard_run(nf: Path, models, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Models given by name (fetched from stand-in caches), an ESM-2 that fails on every frame with a
    tryptophan, and an injected first-attempt failure (exit 75, then a memory kill) of one shard."""
    work = tmp_path_factory.mktemp("nf-failing")
    poisoned = poisoned_esm(models.esm, work / "poisoned" / "esm2_t2_test_tiny.pt", "W")
    torch_home = torch_hub_cache(work / "torch", "esm2_t6_8M_UR50D", poisoned)
    hf_home = hugging_face_cache(work / "hf", "virnucpro-test/tiny-dna", models.dna)
    (work / "retry.config").write_text(
        "executor { memory = '400 GB' }\n"
        "process {\n"
        "    resourceLimits = [cpus: 1, memory: 100.GB, time: 1.h]\n"
        "    withName: 'EMBED_DNA' {\n"
        "        beforeScript = { meta.shard == 'shard_00000' ? (task.attempt == 1 ? 'exit 75' : task.attempt == 2 ? 'exit 137' : '') : '' }\n"
        "    }\n"
        "}\n"
    )
    args = ["-profile", "test", "--test_models", "false", "--outdir", "results",
            "--esm_model", "esm2_t6_8M_UR50D", "--dna_model", "virnucpro-test/tiny-dna",
            "--classifier", str(models.classifier), "--model_cache", str(work / "model_cache"), "-c", str(work / "retry.config")]
    env = {"TORCH_HOME": str(torch_home), "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    run = pipeline(nf, args, work / "launch", env=env)
    run.args, run.env = args, env  # type: ignore[attr-defined]
    return run


def test_failing_shard_gives_status_2_and_nextflow_exit_0(failing_shard_run: Run) -> None:
    assert failing_shard_run.returncode == 0, failing_shard_run.output[-4000:]
    assert failing_shard_run.run_status() == 2
    assert "run status 2 (PARTIAL RESULT)" in failing_shard_run.output


def test_failed_sequences_carry_the_stage_reason(failing_shard_run: Run) -> None:
    calls = []
    for sample in ("test_fasta", "test_fastq"):
        assert_sample_folder_complete(failing_shard_run, sample)
        rows = read_tsv(failing_shard_run.published() / sample / "sequence_predictions.tsv")
        calls += [row["call"] for row in rows]
        for row in rows:
            if row["call"] == "failed":
                assert "not finite" in row["reason"], row
    assert "failed" in calls and ("virus" in calls or "others" in calls)
    failures = (failing_shard_run.published() / "pipeline_info" / "failed_files.txt").read_text()
    assert "|ESM-2|sequence " in failures and "embedding not finite" in failures


def test_models_given_by_name_are_fetched_once(failing_shard_run: Run) -> None:
    fetched = task_rows(failing_shard_run.trace(), "FETCH_MODEL")
    assert sorted(row["tag"] for row in fetched) == ["dna:virnucpro-test/tiny-dna", "esm:esm2_t6_8M_UR50D"]
    cache = failing_shard_run.launch_dir.parent / "model_cache"
    assert (cache / "esm" / "esm2_t6_8M_UR50D" / "fetched" / "esm2_t6_8M_UR50D.pt").is_file()
    assert (cache / "dna" / "virnucpro-test_tiny-dna" / "fetched" / "tiny-dna" / "config.json").is_file()
    for row in task_rows(failing_shard_run.trace(), "EMBED_ESM"):
        assert "--esm-model model/esm2_t6_8M_UR50D.pt" in (Path(row["workdir"]) / ".command.sh").read_text()


def test_retry_after_exit_75_keeps_memory_and_a_memory_kill_doubles_it(failing_shard_run: Run) -> None:
    attempts = [row for row in task_rows(failing_shard_run.trace(), "EMBED_DNA") if row["tag"] == "test_fasta:shard_00000"]
    by_attempt = {int(row["attempt"]): row for row in attempts}
    assert sorted(by_attempt) == [1, 2, 3]
    assert [by_attempt[n]["exit"] for n in (1, 2, 3)] == ["75", "137", "0"]
    memory = [by_attempt[n]["memory"] for n in (1, 2, 3)]
    assert memory == ["32 GB", "32 GB", "64 GB"], memory


def test_fail_on_partial_fails_the_run_after_publishing(nf: Path, failing_shard_run: Run) -> None:
    args = [*failing_shard_run.args, "--fail_on_partial", "-resume"]  # type: ignore[attr-defined]
    run = pipeline(nf, args, failing_shard_run.launch_dir, env=failing_shard_run.env)  # type: ignore[attr-defined]
    assert run.returncode == 1, run.output[-4000:]
    assert "the run fails (--fail_on_partial)" in run.output
    assert run.run_status() == 2
    for sample in ("test_fasta", "test_fastq"):
        assert_sample_folder_complete(run, sample)
    # the fetched models came from --model_cache: FETCH_MODEL did not run again
    assert not task_rows(run.trace(), "FETCH_MODEL")


def test_every_sample_failing_exits_1_with_status_files(nf: Path, models, tmp_path: Path) -> None:
    poisoned = poisoned_esm(models.esm, tmp_path / "poisoned" / "esm2_t2_test_tiny.pt", "<cls>")
    args = ["--input", str(ASSETS / "test_reads.fa"), "--outdir", "results", *model_args(models, esm=poisoned)]
    run = pipeline(nf, args, tmp_path / "launch")
    assert run.returncode == 1, run.output[-4000:]
    assert "run status 1 (FAILED)" in run.output
    assert run.run_status() == 1
    for name in (*STATUS_FILES, "failed_files.txt"):
        assert (run.published() / "pipeline_info" / name).is_file(), name
    assert_sample_folder_complete(run, "test_reads")


def test_gpu_profile_without_a_gpu_fails_at_once(nf: Path, models, tmp_path: Path) -> None:
    args = [*model_args(models)[2:], "-profile", "test,gpu", "--input", str(ASSETS / "test_reads.fa"), "--outdir", "results"]
    run = pipeline(nf, args, tmp_path)
    assert run.returncode == 1
    assert "a GPU was asked for" in run.output and "this task sees none" in run.output
    embed = [row for row in run.trace() if "EMBED" in row["process"]]
    assert embed and all(row["exit"] == "1" for row in embed if row["status"] == "FAILED")
    script = (Path(embed[0]["workdir"]) / ".command.sh").read_text()
    assert f"--require-gpu --claim-gpu {tmp_path}/work/.virnucpro-gpu-locks" in script


# --------------------------------------------------------------------------- invocations


@pytest.mark.parametrize(
    "args, message",
    [
        (["--outdir", "out"], "--input is required"),
        (["--input", "missing.csv", "--outdir", "out"], "--input: file not found: missing.csv"),
        (["--input", "{sheet}", "--outdir", "out"], "samples.csv line 3: file not found: nowhere.fa"),
        (["--input", "{reads}", "--outdir", "out", "--shard_sise", "5"], "--shard_sise is not a parameter of this pipeline"),
        (["--input", "{reads}", "--outdir", "out", "--shard-size", "5"], "is not a parameter: write it --shard_size"),
        (["--input", "{reads}", "--outdir", "out", "--chunk_length", "400"], "--chunk_length must be one of 300, 500, got '400'"),
        (["--input", "{reads}", "--outdir", "out", "--publish_dir_mode", "move"], "--publish_dir_mode move is not supported"),
        (["--input", "{reads}"], "--outdir is required"),
    ],
)
def test_bad_invocation_is_one_clear_line(nf: Path, tmp_path: Path, args: list[str], message: str) -> None:
    sheet = samplesheet(tmp_path / "samples.csv", [("a", ASSETS / "test_reads.fa"), ("b", Path("nowhere.fa"))])
    filled = [a.format(sheet=sheet, reads=ASSETS / "test_reads.fa") for a in args]
    run = pipeline(nf, filled, tmp_path)
    assert run.returncode == 1
    assert message in run.output, run.output
    assert not STACK_TRACE.search(run.output), run.output
    assert not (tmp_path / "null").exists()  # no run reports under a missing --outdir


def test_help_prints_the_parameters_and_writes_nothing(nf: Path, tmp_path: Path) -> None:
    run = pipeline(nf, ["--help"], tmp_path)
    assert run.returncode == 0, run.output
    assert "--input" in run.output and "--model_cache" in run.output
    assert not (tmp_path / "null").exists() and not list(tmp_path.glob("**/pipeline_info"))


PROFILE_COMBINATIONS = ["test", "docker", "singularity", "apptainer", "conda", "gpu", "debug", "test,docker",
                        "test,conda", "gpu,docker", "gpu,singularity", "gpu,apptainer", "test,gpu,docker",
                        "podman", "test,podman", "gpu,podman"]


@pytest.mark.parametrize("profiles", PROFILE_COMBINATIONS)
def test_config_of_every_documented_profile(nf: Path, tmp_path: Path, profiles: str) -> None:
    from nextflow_runner import nextflow

    run = nextflow(nf, ["config", str(REPO_ROOT), "-profile", profiles], tmp_path)
    assert run.returncode == 0, run.output
    assert "PYTHONNOUSERSITE" in run.output


def test_config_with_the_slurm_example(nf: Path, tmp_path: Path) -> None:
    from nextflow_runner import nextflow

    slurm = str(REPO_ROOT / "conf" / "slurm_example.config")
    run = nextflow(nf, ["-c", slurm, "config", str(REPO_ROOT), "-profile", "gpu,singularity"], tmp_path)
    assert run.returncode == 0, run.output
    assert "slurm" in run.output


def test_lint_finds_no_errors(nf: Path, tmp_path: Path) -> None:
    from nextflow_runner import nextflow

    run = nextflow(nf, ["lint", str(REPO_ROOT), "-o", "concise"], tmp_path)
    if "Unknown command" in run.output or "lint" in run.output and "not a valid command" in run.output:
        pytest.skip("this Nextflow release has no `lint` command")
    assert run.returncode == 0, run.output
    assert "had no errors" in run.output or "no errors" in run.output, run.output


def test_oldest_supported_release_runs_the_test_profile(tmp_path: Path) -> None:
    from nextflow_runner import launcher as find_launcher

    oldest = find_launcher("VIRNUCPRO_NEXTFLOW_OLDEST", "24.10.0")
    run = pipeline(oldest, ["-profile", "test", "--outdir", "results"], tmp_path)
    assert run.returncode == 0, run.output[-4000:]
    assert run.run_status() == 0
    assert "WARN" not in run.output, run.output


def test_fastq_gz_input_is_read(three_sample_run: Run) -> None:
    with gzip.open(ASSETS / "test_reads.fq.gz", "rt") as handle:
        records = sum(1 for line in handle) // 4
    assert len(read_tsv(three_sample_run.published() / "fastq" / "sequence_predictions.tsv")) == records
