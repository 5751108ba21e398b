"""The CPU image run for real with podman: the CLI inside it, and the pipeline under Nextflow with
``-profile test,podman`` against the same runs without a container engine.

`make test-containers` builds the image (tools/containers/build-cpu-image.sh: a debootstrapped
Debian base, no Docker Hub) and names it in ``VIRNUCPRO_CONTAINER_IMAGE``; without that variable
these tests are skipped (and left out of `make test` by their marker). Tiny random models, so only
the plumbing is meaningful: the results inside must equal the results outside.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from virnucpro import __version__

from nextflow_runner import Run, launcher, pipeline, poisoned_esm, task_rows

pytestmark = [pytest.mark.slow, pytest.mark.nextflow, pytest.mark.containers]

SAMPLES = ("test_fasta", "test_fastq")
SAMPLE_FILES = ("prediction_results.txt", "prediction_results_highestscore.csv", "sequence_predictions.tsv", "viral_regions.tsv")


@pytest.fixture(scope="module")
def image() -> str:
    name = os.environ.get("VIRNUCPRO_CONTAINER_IMAGE")
    if not name:
        pytest.skip("no image to test: `make test-containers` builds one and sets VIRNUCPRO_CONTAINER_IMAGE")
    if shutil.which("podman") is None:
        pytest.fail("VIRNUCPRO_CONTAINER_IMAGE is set but podman is not installed (tools/containers/podman-setup.sh)")
    found = subprocess.run(["podman", "image", "exists", name], capture_output=True)
    assert found.returncode == 0, f"podman has no image {name} (tools/containers/build-cpu-image.sh)"
    # the name the modules give (the build tags it so), so that a plain -profile podman finds it
    assert name == f"ghcr.io/virnucpro/virnucpro:{__version__}-cpu", name
    return name


@pytest.fixture(scope="module")
def nf() -> Path:
    return launcher()


def podman_run(image: str, args: list[str], mounts: tuple[Path, ...] = (), options: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    volumes = [option for path in mounts for option in ("-v", f"{path}:{path}")]
    return subprocess.run(["podman", "run", "--rm", *volumes, *options, image, *args], capture_output=True, text=True, timeout=600)


def test_cli_in_the_image_is_this_version(image: str) -> None:
    done = podman_run(image, ["virnucpro", "--version"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"virnucpro, version {__version__}"


def test_make_test_models_in_the_image(image: str, tmp_path: Path) -> None:
    done = podman_run(image, ["virnucpro", "make-test-models", str(tmp_path / "models")], mounts=(tmp_path,))
    assert done.returncode == 0, done.stderr
    made = {path.name for path in (tmp_path / "models").iterdir()}
    assert "dna" in made and any(name.startswith("esm2_") for name in made) and any(name.startswith("classifier_") for name in made), made
    assert all(path.stat().st_uid == os.getuid() for path in (tmp_path / "models").rglob("*"))


def test_image_serves_a_user_id_without_a_home(image: str) -> None:
    """The docker profile runs tasks as the user's uid (-u, no account in the image) with HOME=/tmp:
    the image's files are readable by it and the libraries' caches go below that HOME, without warnings."""
    script = "virnucpro make-test-models /tmp/models >/dev/null && python3 -c 'import matplotlib.pyplot, torch, esm, transformers' && ls /tmp/models"
    done = podman_run(image, ["bash", "-c", script], options=("-u", "4321:4321", "-e", "HOME=/tmp"))
    assert done.returncode == 0, done.stderr
    assert "dna" in done.stdout.split()
    assert "Matplotlib" not in done.stderr and "not writable" not in done.stderr, done.stderr


# --------------------------------------------------------------------------- the pipeline inside and outside


def run_both(nf: Path, args: list[str], where: Path) -> tuple[Run, Run]:
    """The same pipeline run without a container engine and with -profile podman, in two directories."""
    outside = pipeline(nf, ["-profile", "test", *args], where / "outside")
    inside = pipeline(nf, ["-profile", "test,podman", *args], where / "inside")
    return outside, inside


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle, delimiter="\t"))


def same_cell(a: str, b: str) -> bool:
    try:
        return math.isclose(float(a), float(b), abs_tol=1e-5)
    except ValueError:
        return a == b


def assert_same_results(outside: Run, inside: Run) -> None:
    """Both runs published the same files; the predictions agree row by row (scores within 1e-5)."""
    reports = ("execution_report_", "execution_timeline_", "execution_trace_", "pipeline_dag_")
    files = [
        sorted(str(p.relative_to(run.published())) for p in run.published().rglob("*") if p.is_file() and not p.name.startswith(reports))
        for run in (inside, outside)
    ]
    assert files[0] == files[1]
    for sample in SAMPLES:
        for name in SAMPLE_FILES:
            ours, theirs = read_rows(inside.published() / sample / name), read_rows(outside.published() / sample / name)
            assert len(ours) == len(theirs) and ours, f"{sample}/{name}"
            for a, b in zip(ours, theirs):
                assert len(a) == len(b) and all(same_cell(x, y) for x, y in zip(a, b)), (sample, name, a, b)
        summaries = [json.loads((run.published() / sample / "summary.json").read_text()) for run in (inside, outside)]
        assert summaries[0]["exit_status"] == summaries[1]["exit_status"]
    failures = [run.published() / "pipeline_info" / "failed_files.txt" for run in (inside, outside)]
    assert [path.is_file() for path in failures] == [failures[1].is_file()] * 2
    if failures[1].is_file():
        assert failures[0].read_text() == failures[1].read_text()


def assert_ran_in_the_image(run: Run, image: str) -> None:
    """Every task ran under podman in the image, as the user who ran Nextflow, and left files of that user."""
    for row in run.trace():
        wrapper = (Path(row["workdir"]) / ".command.run").read_text()
        assert "podman run" in wrapper and image in wrapper, row["name"]
        assert all(path.stat().st_uid == os.getuid() for path in Path(row["workdir"]).rglob("*")), row["name"]
    versions = (run.published() / "pipeline_info" / "virnucpro_software_versions.yml").read_text()
    assert f"virnucpro: {__version__}" in versions
    assert all(path.stat().st_uid == os.getuid() for path in run.published().rglob("*"))


@pytest.fixture(scope="module")
def test_profile_runs(nf: Path, image: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Run]:
    return run_both(nf, ["--outdir", "results"], tmp_path_factory.mktemp("containers-test-profile"))


def test_test_profile_in_podman_completes_with_status_0(test_profile_runs: tuple[Run, Run], image: str) -> None:
    outside, inside = test_profile_runs
    assert outside.returncode == 0, outside.output[-4000:]
    assert inside.returncode == 0, inside.output[-4000:]
    assert inside.run_status() == outside.run_status() == 0
    assert "WARN" not in inside.output, inside.output
    assert_ran_in_the_image(inside, image)


def test_test_profile_in_podman_gives_the_results_of_a_run_without_containers(test_profile_runs: tuple[Run, Run]) -> None:
    assert_same_results(*test_profile_runs)


@pytest.fixture(scope="module")
def failing_shard_runs(nf: Path, image: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Run]:
    """An ESM-2 that fails on every frame with a tryptophan (a path, staged into the tasks)."""
    from virnucpro.testmodels import make_test_models

    where = tmp_path_factory.mktemp("containers-failing")
    models = make_test_models(where / "models")
    poisoned = poisoned_esm(models.esm, where / "poisoned" / "esm2_t2_test_tiny.pt", "W")
    args = ["--outdir", "results", "--test_models", "false", "--esm_model", str(poisoned),
            "--dna_model", str(models.dna), "--classifier", str(models.classifier)]
    return run_both(nf, args, where)


def test_failing_shard_in_podman_gives_status_2(failing_shard_runs: tuple[Run, Run], image: str) -> None:
    outside, inside = failing_shard_runs
    assert outside.returncode == 0, outside.output[-4000:]
    assert inside.returncode == 0, inside.output[-4000:]
    assert inside.run_status() == outside.run_status() == 2
    assert "run status 2 (PARTIAL RESULT)" in inside.output
    assert task_rows(inside.trace(), "EMBED_ESM")
    assert_ran_in_the_image(inside, image)


def test_failing_shard_in_podman_publishes_what_a_run_without_containers_does(failing_shard_runs: tuple[Run, Run]) -> None:
    outside, inside = failing_shard_runs
    assert (outside.published() / "pipeline_info" / "failed_files.txt").is_file()
    assert_same_results(outside, inside)
