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

from virnucpro.frames import chunk_bounds
from virnucpro.pairs import pair_call

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
SAMPLE_FILES = ("prediction_results.txt", "prediction_results_highestscore.csv", "sequence_predictions.tsv", "summary.json",
                "viral_regions.tsv")
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


def files_under(directory: Path) -> list[str]:
    """The files below ``directory`` (sub-folders such as viral/ included), relative to it."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def assert_sample_folder_complete(run: Run, sample: str, outdir: str = "results") -> None:
    """The published folder of ``sample`` holds every file of its PREDICT task, byte for byte."""
    published = run.published(outdir) / sample
    rows = [row for row in task_rows(run.trace(outdir), "PREDICT") if row["tag"] == sample]
    assert rows, f"no PREDICT task for {sample}"
    produced = Path(rows[-1]["workdir"]) / sample
    names = files_under(produced)
    assert set(SAMPLE_FILES) <= set(names)
    assert files_under(published) == names
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
    assert (test_profile_run.published() / "multiqc" / "multiqc_report.html").is_file()
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


def assert_results_equal_predict(ours: Path, inputs: list[Path], models, tmp_path: Path) -> Path:
    """The sample folder ``ours`` has the calls and scores `virnucpro predict` gives on ``inputs``
    with the same models (the `source` column names the files as the tasks staged them); returns
    predict's folder."""
    cli = [sys.executable, "-m", "virnucpro", "predict", *map(str, inputs), "--outdir", str(tmp_path), "--quiet",
           "--classifier", str(models.classifier), "--esm-model", str(models.esm), "--dna-model", str(models.dna)]
    subprocess.run(cli, check=True, capture_output=True, timeout=600)
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
    return tmp_path


@pytest.mark.parametrize("sample, source", [("fasta", "test_reads.fa"), ("fastq", "test_reads.fq.gz")])
def test_pipeline_results_equal_predict(three_sample_run: Run, models, sample: str, source: str, tmp_path: Path) -> None:
    assert_results_equal_predict(three_sample_run.published() / sample, [ASSETS / source], models, tmp_path)


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
        if sample == "fasta" or row["process"].rsplit(":", 1)[-1] in ("SUMMARIZE", "MULTIQC", "RUN_STATUS"):
            assert row["status"] == "COMPLETED", row["name"]
        else:
            assert row["status"] == "CACHED", row["name"]
    assert len(read_tsv(run.published() / "fasta" / "sequence_predictions.tsv")) == len(records) - 3


# --------------------------------------------------------------------------- take-aways: long contigs and paired FASTQ.gz

TAKEAWAY_INPUTS = {
    "contigs": ("contigs.fa",),
    "pairs": ("lib1_R1.fastq.gz", "lib1_R2.fastq.gz", "lib2_R1.fq.gz", "lib2_R2.fq.gz"),  # R1 R2 R1 R2
}


@pytest.fixture(scope="module")
def takeaway_samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Long contigs (FASTA, 2-9 kb: regions of many chunks) and a paired sample of two libraries of
    gzip FASTQ mates (Illumina ids with comments; /1 /2 ids), in one samplesheet with both kinds of rows."""
    from sample_data import write_contigs, write_pairs

    data = tmp_path_factory.mktemp("nf-takeaway-data")
    write_contigs(data / "contigs.fa", n=3)
    write_pairs(data / "lib1_R1.fastq.gz", data / "lib1_R2.fastq.gz", 12, 3, "casava")
    write_pairs(data / "lib2_R1.fq.gz", data / "lib2_R2.fq.gz", 8, 5, "slashed")
    sheet = data / "samples.csv"
    pairs = TAKEAWAY_INPUTS["pairs"]
    sheet.write_text(
        "sample,fasta,fastq_1,fastq_2\ncontigs,contigs.fa,,\n"
        f"pairs,,{pairs[0]},{pairs[1]}\npairs,,{pairs[2]},{pairs[3]}\n"
    )
    return sheet


@pytest.fixture(scope="module")
def takeaway_run(nf: Path, models, takeaway_samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    args = ["--input", str(takeaway_samples), "--outdir", "results", *model_args(models)]
    return pipeline(nf, args, tmp_path_factory.mktemp("nf-takeaway"), check=0)


OPTIONS_RUN = ["--min_p_virus", "0.51", "--pair_rule", "both", "--region_max_gap", "0", "--region_min_chunks", "2",
               "--extract", "virus,others", "--skip_multiqc"]  # fmt: skip


@pytest.fixture(scope="module")
def takeaway_options_run(nf: Path, models, takeaway_samples: Path, takeaway_run: Run) -> Run:
    """The same samples with every new option changed, resumed: only PREDICT and what follows run again."""
    args = ["--input", str(takeaway_samples), "--outdir", "results_options", *model_args(models), *OPTIONS_RUN, "-resume"]
    return pipeline(nf, args, takeaway_run.launch_dir, check=0)


def input_records(takeaway_samples: Path, sample: str) -> dict[str, list[bytes]]:
    """The records of each input file of a take-away sample, by file name."""
    from sample_data import records_of

    return {name: records_of(takeaway_samples.parent / name, "fasta" if name.endswith(".fa") else "fastq")
            for name in TAKEAWAY_INPUTS[sample]}  # fmt: skip


def viral_file(name: str, label: str = "viral") -> str:
    stem = name.split(".")[0]
    return f"viral/{stem}.{label}.{'fa' if name.endswith('.fa') else 'fq'}.gz"


def test_takeaway_run_publishes_every_file(takeaway_run: Run) -> None:
    assert takeaway_run.run_status() == 0
    for sample, names in TAKEAWAY_INPUTS.items():
        assert_sample_folder_complete(takeaway_run, sample)
        published = files_under(takeaway_run.published() / sample)
        assert sorted(name for name in published if name.startswith("viral/")) == sorted(viral_file(n) for n in names)
    info = takeaway_run.published() / "pipeline_info"
    assert sorted(p.name for p in (info / "multiqc").iterdir()) == [
        f"{sample}_virnucpro_mqc.{suffix}" for sample in sorted(TAKEAWAY_INPUTS) for suffix in ("tsv", "yaml")
    ]
    assert (info / "virnucpro_report.html").is_file()
    assert (takeaway_run.published() / "multiqc" / "multiqc_report.html").is_file()
    assert (takeaway_run.published() / "multiqc" / "multiqc_data" / "multiqc_virnucpro_calls.txt").is_file()


def test_paired_sample_is_prepared_as_pairs(takeaway_run: Run) -> None:
    (prepare,) = [row for row in task_rows(takeaway_run.trace(), "PREPARE") if row["tag"] == "pairs"]
    command = (Path(prepare["workdir"]) / ".command.sh").read_text()
    assert "--pairing paired" in command
    assert " ".join(f"input0{n}/{name}" for n, name in enumerate(TAKEAWAY_INPUTS["pairs"], 1)) in command  # R1 R2 R1 R2
    (contigs,) = [row for row in task_rows(takeaway_run.trace(), "PREPARE") if row["tag"] == "contigs"]
    assert "--pairing" not in (Path(contigs["workdir"]) / ".command.sh").read_text()
    rows = read_tsv(takeaway_run.published() / "pairs" / "sequence_predictions.tsv")
    assert len(rows) == 2 * (12 + 8) and [row["mate"] for row in rows] == ["1", "2"] * 20
    assert not [row for row in rows if "_dup" in row["id"]]
    for one, two in zip(rows[::2], rows[1::2]):
        assert one["original_id"].removesuffix("/1") == two["original_id"].removesuffix("/2")
        assert one["pair_call"] == two["pair_call"] == pair_call(one["call"], two["call"], "any")


@pytest.mark.parametrize("sample", sorted(TAKEAWAY_INPUTS))
def test_extracted_records_are_the_input_records(takeaway_run: Run, takeaway_samples: Path, sample: str) -> None:
    published = takeaway_run.published() / sample
    rows = read_tsv(published / "sequence_predictions.tsv")
    selected = {}
    for name, records in input_records(takeaway_samples, sample).items():
        calls = [row["pair_call"] for row in rows if Path(row["source"]).name == name]
        assert len(calls) == len(records), name
        selected[name] = [record for record, call in zip(records, calls) if call == "virus"]
        written = gzip.decompress((published / viral_file(name)).read_bytes())
        assert written == b"".join(selected[name]), name
    assert any(selected.values()), "nothing was extracted: the check is empty"
    if sample == "pairs":  # mates in step: the same reads, in the same order, in both mate files
        for first, second in (TAKEAWAY_INPUTS["pairs"][:2], TAKEAWAY_INPUTS["pairs"][2:]):
            ids = [[record.split(b"\n", 1)[0].split()[0].removesuffix(suffix) for record in selected[name]]
                   for name, suffix in ((first, b"/1"), (second, b"/2"))]  # fmt: skip
            assert ids[0] == ids[1]


@pytest.mark.parametrize("sample", sorted(TAKEAWAY_INPUTS))
def test_takeaway_results_equal_predict(takeaway_run: Run, takeaway_samples: Path, models, sample: str, tmp_path: Path) -> None:
    ours = takeaway_run.published() / sample
    inputs = [takeaway_samples.parent / name for name in TAKEAWAY_INPUTS[sample]]
    theirs = assert_results_equal_predict(ours, inputs, models, tmp_path)
    regions = read_tsv(ours / "viral_regions.tsv"), read_tsv(theirs / "viral_regions.tsv")
    exact = ("id", "start", "end", "chunks", "virus_chunks")
    assert [[row[k] for k in exact] for row in regions[0]] == [[row[k] for k in exact] for row in regions[1]]
    for a, b in zip(*regions):
        for column in ("mean_p_virus", "max_p_virus", "fraction_of_sequence"):
            assert math.isclose(float(a[column]), float(b[column]), abs_tol=1e-5), (a, b)
    if sample == "contigs":
        assert any(int(row["chunks"]) > 1 for row in regions[0]), "no region of several chunks in the long contigs"
    assert files_under(ours / "viral") == files_under(theirs / "viral")
    for name in files_under(theirs / "viral"):
        assert gzip.decompress((ours / "viral" / name).read_bytes()) == gzip.decompress((theirs / "viral" / name).read_bytes())


def test_multiqc_ran_on_our_files_and_shows_our_section(takeaway_run: Run) -> None:
    (task,) = task_rows(takeaway_run.trace(), "MULTIQC")
    assert task["exit"] == "0"
    assert "multiqc --force" in (Path(task["workdir"]) / ".command.sh").read_text()
    versions = (takeaway_run.published() / "pipeline_info" / "virnucpro_software_versions.yml").read_text()
    assert re.search(r'"VIRNUCPRO:MULTIQC":\n\s+multiqc: \d+\.\d+', versions), versions
    multiqc = takeaway_run.published() / "multiqc"
    report = (multiqc / "multiqc_report.html").read_text()
    assert 'id="virnucpro"' in report and 'id="virnucpro_calls"' in report and ">VirNucPro<" in report
    header, *lines = [line.split("\t") for line in (multiqc / "multiqc_data" / "multiqc_virnucpro_calls.txt").read_text().splitlines()]
    plotted = {line[0]: dict(zip(header[1:], line[1:])) for line in lines}
    assert sorted(plotted) == sorted(TAKEAWAY_INPUTS)
    for sample, values in plotted.items():
        calls = json.loads((takeaway_run.published() / sample / "summary.json").read_text())["calls"]
        assert {call: int(float(count)) for call, count in values.items()} == calls


def test_report_has_the_throughput_of_every_embedding_task(takeaway_run: Run) -> None:
    trace = takeaway_run.trace()
    embeds = task_rows(trace, "EMBED_DNA") + task_rows(trace, "EMBED_ESM")
    (summarize,) = task_rows(trace, "SUMMARIZE")
    command = (Path(summarize["workdir"]) / ".command.sh").read_text()
    assert command.count("--engine-summary engine/") == len(embeds) >= 4
    report = (takeaway_run.published() / "pipeline_info" / "virnucpro_report.html").read_text()
    assert "tokens/s" in report and "DNABERT-S" in report and "ESM-2" in report


def test_new_options_reach_classify_and_skip_multiqc_skips_it(takeaway_options_run: Run) -> None:
    run, outdir = takeaway_options_run, "results_options"
    trace = run.trace(outdir)
    for row in trace:
        process = row["process"].rsplit(":", 1)[-1]
        assert row["status"] == ("CACHED" if process in ("PREPARE", "EMBED_DNA", "EMBED_ESM") else "COMPLETED"), row["name"]
    assert not task_rows(trace, "MULTIQC") and not (run.published(outdir) / "multiqc").exists()
    assert (run.published(outdir) / "pipeline_info" / "multiqc").is_dir()  # the files for a MultiQC of one's own
    for sample, names in TAKEAWAY_INPUTS.items():
        assert_sample_folder_complete(run, sample, outdir)
        published = run.published(outdir) / sample
        summary = json.loads((published / "summary.json").read_text())
        assert summary["call_rule"] == {"virus_fraction": 0.5, "min_p_virus": 0.51, "pair_rule": "both"}
        assert summary["extract"]["calls"] == ["virus", "others"]
        assert {viral_file(n, label) for n in names for label in ("viral", "others")} <= set(files_under(published))
        chunks = read_tsv(published / "prediction_results_highestscore.csv")
        assert [row["Is_Virus"] == "True" for row in chunks] == [float(row["max_score_1"]) >= 0.51 for row in chunks]
        virus_chunks = {row["Modified_ID"] for row in chunks if row["Is_Virus"] == "True"}
        lengths = {row["id"]: int(row["length"]) for row in read_tsv(published / "sequence_predictions.tsv")}
        for region in read_tsv(published / "viral_regions.tsv"):  # no gap, two virus chunks at least
            assert int(region["chunks"]) == int(region["virus_chunks"]) >= 2, region
            bounds = chunk_bounds(lengths[region["id"]], 300)
            first = next(k for k, (start, _end) in enumerate(bounds, 1) if start + 1 == int(region["start"]))
            run_ids = {f"{region['id']}_chunk_{k}" for k in range(first, first + int(region["chunks"]))}
            assert run_ids <= virus_chunks, region
    rows = read_tsv(run.published(outdir) / "pairs" / "sequence_predictions.tsv")
    for one, two in zip(rows[::2], rows[1::2]):
        assert one["pair_call"] == two["pair_call"] == pair_call(one["call"], two["call"], "both"), (one, two)


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


def test_bad_values_of_the_take_away_options_are_one_clear_line(nf: Path, tmp_path: Path) -> None:
    bad = ["--min_p_virus", "0", "--pair_rule", "either", "--region_max_gap", "-1", "--region_min_chunks", "0",
           "--extract", "viral", "--skip_multiqc", "maybe"]  # fmt: skip
    run = pipeline(nf, ["--input", str(ASSETS / "test_reads.fa"), "--outdir", "out", *bad], tmp_path)
    assert run.returncode == 1
    (line,) = [line for line in run.output.splitlines() if "--min_p_virus" in line]
    for message in ("--min_p_virus is out of range: 0", "--pair_rule must be one of any, both, got 'either'",
                    "--region_max_gap is out of range: -1", "--region_min_chunks is out of range: 0",
                    "--extract must be none or calls from virus, others, no_coding_frame, failed", "got 'viral'",
                    "--skip_multiqc must be a boolean, got 'maybe'"):  # fmt: skip
        assert message in line, run.output
    assert not STACK_TRACE.search(run.output), run.output


@pytest.mark.parametrize(
    "rows, message",
    [
        ("s1,,,{R2}", "samples.csv line 2: fastq_2 without fastq_1"),
        ("s1,{fa},{R1},", "samples.csv line 2: both fasta and fastq_1"),
        ("s1,{fa},,\ns1,,{R1},{R2}", "samples.csv line 3: sample 's1' mixes fasta and paired (fastq_1,fastq_2) rows"),
        ("s1,,{R1},missing_R2.fq.gz", "samples.csv line 2: file not found: missing_R2.fq.gz"),
    ],
)
def test_bad_samplesheet_row_is_one_clear_line(nf: Path, tmp_path: Path, rows: str, message: str) -> None:
    names = {"fa": ASSETS / "test_reads.fa", "R1": ASSETS / "test_reads.fq.gz", "R2": ASSETS / "test_reads.fq.gz"}
    sheet = tmp_path / "samples.csv"
    sheet.write_text("sample,fasta,fastq_1,fastq_2\n" + rows.format(**names) + "\n")
    run = pipeline(nf, ["--input", str(sheet), "--outdir", "out"], tmp_path)
    assert run.returncode == 1
    assert message.format(**names) in run.output, run.output
    assert not STACK_TRACE.search(run.output), run.output
    assert not list(tmp_path.glob("work/*/*/.command.sh")), "a task ran"


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
