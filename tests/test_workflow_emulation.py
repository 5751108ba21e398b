"""Emulate a Nextflow run: the modules' own script blocks, in the workflow's order, on the bundled data.

Each task is a module's ``script:`` block rendered as Nextflow renders it (a value for each of its
``${...}`` expressions: what the module's Groovy lines compute) and run with ``bash -euo pipefail``
in a task directory of its own, inputs staged as Nextflow stages them (symlinks under their
``stageAs`` names), ``bin/`` on the PATH, then the directory of the tests' own interpreter (in the
role of the container's ``python3``). The gather between EMBED_* and PREDICT follows
workflows/virnucpro.nf (results grouped per sample, missing shards simply absent).

The run: sample ``fastq`` (one shard) is complete. Sample ``reads`` (the FASTA, three shards)
has a complete shard 0; shard 1 loses both its tasks (as after errorStrategy 'ignore'); shard 2
reaches EMBED_ESM corrupted, so the stage records a failure that the task, on its last attempt,
keeps as data (and its DNABERT-S task is lost too). Sample ``lost`` is in the samplesheet but
its PREDICT task never came back.
Expected: sample statuses 2 / 0 / 1, run status 2, every failure in the run's failed_files.txt.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from virnucpro import contracts as c

import nextflow_scan as scan

PROCESSES = scan.all_processes()
ASSETS = scan.REPO_ROOT / "assets"
DNA_ARGS = "--dna-batch-size 2048 --precision auto"
ESM_ARGS = "--esm-batch-size 1024 --precision auto"

pytestmark = pytest.mark.slow


@dataclass
class Task:
    """One task: a process, its directory, its rendered values and its staged inputs."""

    process: str
    workdir: Path
    values: dict[str, object]
    stage: dict[str, Path] = field(default_factory=dict)
    path_prefix: Path | None = None  # a directory put first on PATH (fake stages)

    def run(self, section: str = "script") -> subprocess.CompletedProcess:
        values = {"task.process": f"VIRNUCPRO:{self.process}", "task.cpus": 2, **self.values}
        script = PROCESSES[self.process].gstring(section).render(values)
        self.workdir.mkdir(parents=True)
        for name, source in self.stage.items():
            target = self.workdir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(Path(source).resolve())
        (self.workdir / ".command.sh").write_text(script)
        path = [str(self.path_prefix)] if self.path_prefix else []
        # the tests' interpreter plays the container's python3 (bin/ scripts say `env python3`)
        interpreter = str(Path(sys.executable).parent)
        env = {**os.environ, "PATH": os.pathsep.join([*path, str(scan.BIN_DIR), interpreter, os.environ["PATH"]])}
        return subprocess.run(
            ["bash", "-euo", "pipefail", ".command.sh"], cwd=self.workdir, env=env, capture_output=True, text=True, timeout=300
        )


def ok(task: Task, section: str = "script") -> Task:
    result = task.run(section)
    assert result.returncode == 0, f"{task.process} in {task.workdir} exited {result.returncode}:\n{result.stderr[-3000:]}"
    assert (task.workdir / "versions.yml").is_file(), f"{task.process} wrote no versions.yml"
    return task


def embed_task(root: Path, kind: str, sample: str, shard: Path, models) -> Task:
    """An EMBED_DNA or EMBED_ESM task on its last attempt, on one shard file."""
    name = shard.name
    if kind == "dna":
        model_name, staged = "model/dna", {"model/dna": models.dna}
        values = {"fasta": name, "model_name": model_name, "args": DNA_ARGS}
    else:
        regression = models.esm.with_name(f"{models.esm.stem}-contact-regression.pt")
        model_name = f"model/{models.esm.name}"
        staged = {model_name: models.esm, f"model/{regression.name}": regression}
        values = {"fasta": name, "model_name": model_name, "args": ESM_ARGS}
    values |= {"shard": Path(name).stem, "last_attempt": "true"}
    process = "EMBED_DNA" if kind == "dna" else "EMBED_ESM"
    return Task(process, root / f"{process}_{sample}_{Path(name).stem}", values, {name: shard, **staged})


def results(task: Task) -> list[Path]:
    """The task's `embeddings/*` output (Nextflow fails a task whose glob matches nothing)."""
    found = sorted((task.workdir / "embeddings").glob("*"))
    assert found, f"{task.process} in {task.workdir}: output `embeddings/*` matched nothing"
    return found


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


@pytest.fixture(scope="module")
def emulated_run(tmp_path_factory: pytest.TempPathFactory, test_models) -> dict[str, object]:
    root = tmp_path_factory.mktemp("nextflow_work")

    # PREPARE per sample: the FASTA in three shards, the FASTQ in one.
    prepare = {
        "reads": Task("PREPARE", root / "PREPARE_reads", {"inputs": "input1/test_reads.fa", "args": "--chunk-length 300 --shard-size 1000"}, {"input1/test_reads.fa": ASSETS / "test_reads.fa"}),
        "fastq": Task("PREPARE", root / "PREPARE_fastq", {"inputs": "input1/test_reads.fq.gz", "args": "--chunk-length 300 --shard-size 1000000"}, {"input1/test_reads.fq.gz": ASSETS / "test_reads.fq.gz"}),
    }
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(ok, prepare.values()))
    shards = {
        sample: (
            sorted((task.workdir / "prepared/shards/nucleotide").glob("shard_*.fa")),
            sorted((task.workdir / "prepared/shards/protein").glob("shard_*.fa")),
        )
        for sample, task in prepare.items()
    }
    assert [len(files) for pair in shards.values() for files in pair] == [3, 3, 1, 1], shards

    # Scatter: one task per shard and model, except the lost tasks (reads: both of shard 1, the
    # DNABERT-S one of shard 2); reads/shard 2 reaches EMBED_ESM corrupted.
    (reads_nuc, reads_prot), (fastq_nuc, fastq_prot) = shards["reads"], shards["fastq"]
    corrupted = root / "corrupted" / reads_prot[2].name
    corrupted.parent.mkdir()
    corrupted.write_text("this is not a FASTA file\n")
    embeds = {
        ("reads", "dna"): [embed_task(root, "dna", "reads", reads_nuc[0], test_models)],
        ("reads", "esm"): [embed_task(root, "esm", "reads", reads_prot[0], test_models), embed_task(root, "esm", "reads", corrupted, test_models)],
        ("fastq", "dna"): [embed_task(root, "dna", "fastq", fasta, test_models) for fasta in fastq_nuc],
        ("fastq", "esm"): [embed_task(root, "esm", "fastq", fasta, test_models) for fasta in fastq_prot],
    }
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(ok, [task for tasks in embeds.values() for task in tasks]))

    # Gather per sample, then PREDICT with whatever arrived.
    classifier = f"model/{test_models.classifier.name}"
    predict = {}
    for sample, task in prepare.items():
        staged = {"inputs/prepared": task.workdir / "prepared", classifier: test_models.classifier}
        for kind in ("dna", "esm"):
            for result in (r for t in embeds[(sample, kind)] for r in results(t)):
                staged[f"inputs/{kind}/{result.name}"] = result
        values = {"prefix": sample, "classifier": f"--classifier {classifier}", "args": "--batch-size 1024 --virus-fraction 0.5"}
        predict[sample] = Task("PREDICT", root / f"PREDICT_{sample}", values, staged)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(ok, predict.values()))

    # SUMMARIZE over every sample of the samplesheet; `lost` has no PREDICT result.
    samples = ["reads", "fastq", "lost"]
    summarize = ok(
        Task(
            "SUMMARIZE",
            root / "SUMMARIZE",
            {"samples": " ".join(f"samples/{s}" for s in samples), "args": ""},
            {f"samples/{s}": predict[s].workdir / s for s in predict},
        )
    )
    return {"root": root, "shards": shards, "embeds": embeds, "predict": predict, "summarize": summarize.workdir}


def _declared_outputs_present(process: str, workdir: Path, values: dict[str, object]) -> dict[str, list[Path]]:
    """The files each output glob of ``process`` matches in ``workdir``; a required one must match."""
    found = {}
    for output in PROCESSES[process].output_paths():
        pattern = output.glob(values)
        found[pattern] = sorted(workdir.glob(pattern))
        assert found[pattern] or output.may_be_absent, f"{process} in {workdir}: output '{pattern}' matched nothing"
    return found


def test_every_task_has_the_outputs_its_process_declares(emulated_run) -> None:
    for sample, (nucleotide, protein) in emulated_run["shards"].items():
        found = _declared_outputs_present("PREPARE", emulated_run["root"] / f"PREPARE_{sample}", {})
        assert found["prepared/shards/nucleotide/shard_*.fa"] == nucleotide  # what the scatter received
        assert found["prepared/shards/protein/shard_*.fa"] == protein
        assert [p.stem for p in nucleotide] == [p.stem for p in protein]
    for tasks in emulated_run["embeds"].values():
        for task in tasks:
            _declared_outputs_present(task.process, task.workdir, {})
    for sample, task in emulated_run["predict"].items():
        _declared_outputs_present("PREDICT", task.workdir, {"meta.id": sample})
    _declared_outputs_present("SUMMARIZE", emulated_run["summarize"], {})


def test_failed_shard_is_recorded_as_data(emulated_run) -> None:
    corrupted_task = emulated_run["embeds"][("reads", "esm")][1]
    files = [p.name for p in results(corrupted_task)]
    assert files == ["shard_00002.failed_files.txt"]
    (failure,) = c.read_failures(corrupted_task.workdir / "embeddings" / "shard_00002.failed_files.txt")
    assert (failure.file_path, failure.stage) == ("shard_00002.fa", c.STAGE_ESM)
    complete = emulated_run["embeds"][("reads", "esm")][0]
    assert [p.name for p in results(complete)] == ["shard_00000.npz"]


def test_complete_sample_has_status_0(emulated_run) -> None:
    sample = emulated_run["predict"]["fastq"].workdir / "fastq"
    assert json.loads((sample / c.SUMMARY_JSON).read_text())["exit_status"] == c.EXIT_OK
    assert not (sample / c.FAILED_FILES).exists()
    for name in (c.PREDICTION_RESULTS, c.PREDICTION_HIGHEST, c.SEQUENCE_PREDICTIONS):
        assert (sample / name).is_file()
    calls = {row["call"] for row in read_tsv(sample / c.SEQUENCE_PREDICTIONS)}
    assert c.CALL_FAILED not in calls and calls & {c.CALL_VIRUS, c.CALL_OTHERS}


def test_sample_with_failed_shards_is_partial(emulated_run) -> None:
    sample = emulated_run["predict"]["reads"].workdir / "reads"
    summary = json.loads((sample / c.SUMMARY_JSON).read_text())
    assert summary["exit_status"] == c.EXIT_PARTIAL
    rows = read_tsv(sample / c.SEQUENCE_PREDICTIONS)
    failed = [row for row in rows if row["call"] == c.CALL_FAILED]
    decided = [row for row in rows if row["call"] in (c.CALL_VIRUS, c.CALL_OTHERS)]
    assert failed and decided, "shards 1 and 2 fail their sequences, shard 0 is classified"
    reasons = " ".join(row["reason"] for row in failed)
    assert "shard_00001" in reasons and "shard_00002" in reasons and "shard_00000" not in reasons
    failures = c.read_failures(sample / c.FAILED_FILES)
    assert any(f.stage == c.STAGE_ESM and f.file_path == "shard_00002.fa" for f in failures), failures
    assert any(f.stage == c.STAGE_CLASSIFY and "shard_00001" in f.message for f in failures), failures
    assert not any(f.stage == c.STAGE_CLASSIFY and "shard_00002" in f.message for f in failures), "reported once"


def test_run_status_is_2_with_every_failure(emulated_run) -> None:
    out = emulated_run["summarize"]
    assert (out / "run_status.txt").read_text() == "2\n"
    summary = json.loads((out / "run_summary.json").read_text())
    statuses = {s["sample"]: s["exit_status"] for s in summary["samples"]}
    assert statuses == {"reads": 2, "fastq": 0, "lost": 1}
    failures = c.read_failures(out / c.FAILED_FILES)
    assert {f.file_path.split(":", 1)[0] for f in failures} == {"reads", "lost"}
    assert any(f.file_path == "reads:shard_00002.fa" and f.stage == c.STAGE_ESM for f in failures)
    assert summary["totals"]["failures"] == len(failures)


# --------------------------------------------------------------------------- task outcome policy


FAKE_STAGE = r'''#!/usr/bin/env python3
"""A stand-in for bin/virnucpro_stage.py: FAKE_MODE says what the stage does."""
import os, pathlib, sys
args = sys.argv[1:]
if args == ["--version"]:
    print("virnucpro, version 0.0-fake")
    sys.exit(0)
outdir = pathlib.Path(args[args.index("--outdir") + 1])
outdir.mkdir(parents=True, exist_ok=True)
mode = os.environ["FAKE_MODE"]
stem = pathlib.Path(args[1]).stem if len(args) > 1 else "x"
if mode == "ok":
    (outdir / f"{stem}.npz").write_text("npz")
    (outdir / "summary.json").write_text('{"exit_status": 0}')
    sys.exit(0)
if mode == "recorded":
    (outdir / "failed_files.txt").write_text(f"{args[1]}|ESM-2|CUDA out of memory\n")
    (outdir / "summary.json").write_text('{"exit_status": 1}')
    sys.exit(1)
if mode in ("no-model", "no-memory-for-the-model"):  # the engine's records when no worker has the model
    why = {"no-model": "the model cannot be used: m.pt: ESM model file not found",
           "no-memory-for-the-model": "could not load the model: OutOfMemoryError: CUDA out of memory"}[mode]
    cause = f"systemic failure: 1 of 1 workers failed, stopping (worker 1 (gpu 0): {why})"
    (outdir / "failed_files.txt").write_text(f"{args[1]}|ESM-2|not embedded: {cause}\n")
    sys.exit(1)
if mode == "not-finite":  # the only failure another attempt would repeat
    (outdir / f"{stem}.npz").write_text("npz")
    line = f"{args[1]}|ESM-2|sequence a: embedding not finite in bf16 (an overflow: try --precision fp32)\n"
    (outdir / "failed_files.txt").write_text(line)
    sys.exit(2)
if mode == "result-with-status":
    (outdir / "summary.json").write_text('{"exit_status": 2}')
    (outdir / "run_status.txt").write_text("2\n")
    sys.exit(int(os.environ["FAKE_STATUS"]))
sys.exit(int(os.environ.get("FAKE_STATUS", "1")))  # an error: nothing written
'''


@pytest.fixture()
def fake_bin(tmp_path: Path) -> Path:
    directory = tmp_path / "fakebin"
    directory.mkdir()
    script = directory / "virnucpro_stage.py"
    script.write_text(FAKE_STAGE.replace("#!/usr/bin/env python3", f"#!{sys.executable}", 1))
    script.chmod(0o755)
    return directory


@pytest.mark.parametrize("process", ["EMBED_DNA", "EMBED_ESM"])
@pytest.mark.parametrize(
    ("mode", "last_attempt", "exit_code", "outputs"),
    [
        ("ok", False, 0, ["shard_00007.npz"]),
        ("recorded", False, 75, None),  # Nextflow retries (conf/base.config, process_gpu)
        ("recorded", True, 0, ["shard_00007.failed_files.txt"]),  # kept as data on the last attempt
        ("not-finite", False, 0, ["shard_00007.failed_files.txt", "shard_00007.npz"]),  # no retry: same again
        ("error", True, 1, None),  # not data: the task fails
        ("no-model", False, 1, None),  # no retry, not data: the run stops
        ("no-model", True, 1, None),
        ("no-memory-for-the-model", False, 75, None),  # this machine's problem: another attempt
        ("no-memory-for-the-model", True, 0, ["shard_00007.failed_files.txt"]),
    ],
)
def test_embed_task_outcome(tmp_path, fake_bin, monkeypatch, process, mode, last_attempt, exit_code, outputs) -> None:
    monkeypatch.setenv("FAKE_MODE", mode)
    shard = tmp_path / "shard_00007.fa"
    shard.write_text(">a\nMKV\n")
    values = {"fasta": shard.name, "model_name": "model/m", "args": "", "shard": "shard_00007", "last_attempt": str(last_attempt).lower()}
    task = Task(process, tmp_path / "task", values, {shard.name: shard}, path_prefix=fake_bin)
    result = task.run()
    assert result.returncode == exit_code, result.stderr
    if outputs is not None:
        assert [p.name for p in sorted((task.workdir / "embeddings").glob("*"))] == outputs


@pytest.mark.parametrize(
    ("process", "values", "fake_status", "exit_code"),
    [
        ("PREDICT", {"prefix": "s1", "classifier": "", "args": ""}, 2, 0),  # a partial result is a result
        ("PREDICT", {"prefix": "s1", "classifier": "", "args": ""}, 1, 0),  # so is a total failure with summary.json
        ("SUMMARIZE", {"samples": "samples/s1", "args": ""}, 1, 0),
    ],
)
def test_result_with_failure_status_is_kept(tmp_path, fake_bin, monkeypatch, process, values, fake_status, exit_code) -> None:
    monkeypatch.setenv("FAKE_MODE", "result-with-status")
    monkeypatch.setenv("FAKE_STATUS", str(fake_status))
    stage = {"inputs/prepared": tmp_path} if process == "PREDICT" else {}
    result = Task(process, tmp_path / "task", values, stage, path_prefix=fake_bin).run()
    assert result.returncode == exit_code, result.stderr


@pytest.mark.parametrize(
    ("process", "values"),
    [("PREDICT", {"prefix": "s1", "classifier": "", "args": ""}), ("SUMMARIZE", {"samples": "samples/s1", "args": ""})],
)
def test_error_without_result_fails_the_task(tmp_path, fake_bin, monkeypatch, process, values) -> None:
    monkeypatch.setenv("FAKE_MODE", "error")
    monkeypatch.setenv("FAKE_STATUS", "1")
    stage = {"inputs/prepared": tmp_path} if process == "PREDICT" else {}
    result = Task(process, tmp_path / "task", values, stage, path_prefix=fake_bin).run()
    assert result.returncode == 1


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_stub_runs(tmp_path, name) -> None:
    """`-stub` runs: each stub makes the outputs its process declares (the common names)."""
    values = {
        "fasta": "shard_00000.fa",
        "shard": "shard_00000",
        "prefix": "s1",
    }
    proc = PROCESSES[name]
    needed = {e: values.get(e, "x") for e in proc.gstring("stub").expressions()}
    needed.pop("task.process", None)
    task = Task(name, tmp_path / "stub", needed)
    result = task.run("stub")
    assert result.returncode == 0, result.stderr
    _declared_outputs_present(name, task.workdir, {"meta.id": values["prefix"]})
