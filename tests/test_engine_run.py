"""run_embedding with spawned workers and the fake model: identity across worker counts, failures,
worker deaths, systemic failure, --gpus and --resume."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from virnucpro.contracts import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, FAILED_FILES, read_failures
from virnucpro.embeddings.store import load_embeddings
from virnucpro.engine import devices, run_embedding
from virnucpro.engine import run as run_module

from engine_doubles import FakeSpec, protein, write_fasta

BUDGET = 256
KILLER = protein(999, 40)  # the sequence that kills a FakeSpec(die_on=KILLER) worker


@pytest.fixture()
def inputs(tmp_path: Path) -> list[str]:
    """Six protein files of different sizes; the fourth holds KILLER."""
    paths = []
    for f in range(6):
        records = [(f"f{f}_s{r}", protein(100 * f + r, 15 + 9 * ((f + r) % 5))) for r in range(3 + 2 * f)]
        if f == 3:
            records.insert(2, ("killer", KILLER))
        paths.append(str(write_fasta(tmp_path / f"file{f}.faa", records)))
    return paths


def _run(files: list[str], outdir: Path, spec: FakeSpec | None = None, **options) -> object:
    return run_embedding(files, spec or FakeSpec(), outdir, BUDGET, progress="quiet", **options)


@contextlib.contextmanager
def one_worker_spawned(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Within the block a single CPU worker is spawned too, as on a GPU, instead of running in this process."""
    with monkeypatch.context() as patch:
        patch.setattr(run_module, "runs_in_process", lambda slots: False)
        yield


def _bytes(outdir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(outdir.glob("*.npz"))}


@pytest.fixture()
def reference(tmp_path: Path, inputs: list[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Outputs of one spawned worker, no failure."""
    with one_worker_spawned(monkeypatch):
        result = _run(inputs, tmp_path / "reference", workers=1)
    assert (result.exit_code, result.failures) == (EXIT_OK, [])
    assert not (tmp_path / "reference" / FAILED_FILES).exists()
    return _bytes(tmp_path / "reference")


@pytest.mark.slow
def test_two_workers_give_byte_identical_outputs(tmp_path: Path, inputs: list[str], reference: dict[str, bytes]) -> None:
    result = _run(inputs, tmp_path / "two", workers=2)
    assert result.exit_code == EXIT_OK
    assert _bytes(tmp_path / "two") == reference
    assert sorted(reference) == [f"file{f}.npz" for f in range(6)]
    assert result.outputs == {path: tmp_path / "two" / f"file{f}.npz" for f, path in enumerate(inputs)}
    stats = result.stats
    assert (stats["files_written"], stats["records"], stats["embedded"], stats["failures"]) == (6, 49, 49, 0)
    assert stats["devices"]["cpu"]["workers"] == 2 and stats["devices"]["cpu"]["files"] == 6
    assert stats["devices"]["cpu"]["sequences"] == 49 and stats["devices"]["cpu"]["tokens_per_s"] > 0
    cpu = stats["devices"]["cpu"]
    assert 0 < cpu["first_file_s"] <= cpu["busy_s"]  # the workers' first files, within their busy time
    assert cpu["tokens_per_s_after_first_file"] is None or cpu["tokens_per_s_after_first_file"] > 0


@pytest.mark.slow
def test_a_corrupt_file_is_one_failure_line_and_the_others_are_intact(
    tmp_path: Path, inputs: list[str], reference: dict[str, bytes]
) -> None:
    corrupt = tmp_path / "corrupt.faa"
    corrupt.write_bytes(b"\x00\xffgarbage\x00\x9c")
    files = inputs[:3] + [str(corrupt)] + inputs[3:]
    result = _run(files, tmp_path / "out", workers=2)
    assert result.exit_code == EXIT_PARTIAL
    lines = (tmp_path / "out" / FAILED_FILES).read_text().splitlines()
    assert lines == [f"{corrupt}|ESM-2|binary content, not a FASTA text file"]
    assert _bytes(tmp_path / "out") == reference
    assert str(corrupt) not in result.outputs and len(result.outputs) == 6


def test_nothing_usable_is_exit_1(tmp_path: Path) -> None:
    empty = tmp_path / "empty.faa"
    empty.write_text("")
    result = _run([str(empty), str(tmp_path / "missing.faa")], tmp_path / "out")
    assert result.exit_code == EXIT_FAILED and result.message is None
    assert [f.message for f in read_failures(tmp_path / "out" / FAILED_FILES)] == [
        "no FASTA records (empty file or not FASTA)",
        f"{tmp_path / 'missing.faa'}: no such file",
    ]


@pytest.mark.slow
def test_a_killed_worker_has_its_file_redone_and_nothing_is_lost(
    tmp_path: Path, inputs: list[str], reference: dict[str, bytes]
) -> None:
    marker = tmp_path / "killed-once"
    result = _run(inputs, tmp_path / "out", FakeSpec(die_on=KILLER, marker=str(marker)), workers=2)
    assert marker.exists()  # a worker really died
    assert (result.exit_code, result.failures) == (EXIT_OK, [])
    assert (result.stats["requeued"], result.stats["failed_workers"]) == (1, 1)
    assert _bytes(tmp_path / "out") == reference


@pytest.mark.slow
def test_a_gpu_failing_for_good_stops_its_worker_and_another_redoes_the_file(
    tmp_path: Path, inputs: list[str], reference: dict[str, bytes]
) -> None:
    marker = tmp_path / "failed-once"
    spec = FakeSpec(die_on=KILLER, marker=str(marker), death="device")
    result = _run(inputs, tmp_path / "out", spec, workers=2)
    assert marker.exists()
    assert (result.exit_code, result.failures) == (EXIT_OK, [])
    assert (result.stats["requeued"], result.stats["failed_workers"]) == (1, 1)
    assert _bytes(tmp_path / "out") == reference  # the failed GPU's worker took no other file


@pytest.mark.slow
def test_a_gpu_failure_on_every_worker_is_a_systemic_failure_naming_it(tmp_path: Path, inputs: list[str]) -> None:
    result = _run(inputs, tmp_path / "out", FakeSpec(die_on=KILLER, death="device"), workers=2)
    assert result.exit_code == EXIT_FAILED
    expected = f"device failure while embedding {inputs[3]}: RuntimeError: CUDA error: an illegal memory access"
    assert result.message.count(expected) == 2


def test_a_gpu_failure_in_process_is_a_systemic_failure(tmp_path: Path, inputs: list[str]) -> None:
    result = _run(inputs, tmp_path / "out", FakeSpec(die_on=KILLER, death="device"), workers=1)
    assert result.exit_code == EXIT_FAILED
    assert result.message.startswith("systemic failure: 1 of 1 workers failed, stopping (worker 0 (cpu): device failure")
    assert inputs[3] in [f.file_path for f in read_failures(tmp_path / "out" / FAILED_FILES)]


@pytest.mark.slow
def test_every_worker_dying_is_a_systemic_failure(tmp_path: Path, inputs: list[str]) -> None:
    result = _run(inputs, tmp_path / "out", FakeSpec(die_on=KILLER), workers=2)
    assert result.exit_code == EXIT_FAILED
    assert result.message.startswith("systemic failure: 2 of 2 workers failed, stopping (worker ")
    assert result.message.count("killed by SIGKILL (out of host memory?) while embedding") == 2
    assert inputs[3] in result.message
    failures = read_failures(tmp_path / "out" / FAILED_FILES)
    missing = [p for p in inputs if not (tmp_path / "out" / f"{Path(p).stem}.npz").exists()]
    assert [f.file_path for f in failures] == missing
    assert inputs[3] in [f.file_path for f in failures]
    for output in (tmp_path / "out").glob("*.npz"):  # whatever was written is complete
        assert load_embeddings(output).meta["failed_sequences"] == "0"


@pytest.mark.slow
def test_a_model_that_cannot_load_is_a_systemic_failure_naming_the_cause(tmp_path: Path, inputs: list[str]) -> None:
    spec = FakeSpec(load_error="esm model 'nope' not found")
    result = _run(inputs[:2], tmp_path / "out", spec, workers=2)
    assert result.exit_code == EXIT_FAILED
    assert result.message == (
        "systemic failure: 2 of 2 workers failed, stopping (worker 0 (cpu): the model cannot be used: "
        "esm model 'nope' not found; worker 1 (cpu): the model cannot be used: esm model 'nope' not found)"
    )
    assert [f.line() for f in read_failures(tmp_path / "out" / FAILED_FILES)] == [
        f"{p}|ESM-2|not embedded: {result.message}" for p in inputs[:2]  # the cause stays with the files
    ]


@pytest.mark.slow
def test_gpus_overrides_cuda_visible_devices_in_each_worker(
    tmp_path: Path, inputs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devices, "cuda_built", lambda: True)
    monkeypatch.setattr(devices, "physical_gpu_count", lambda: 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    report = tmp_path / "report"
    report.mkdir()
    result = _run(inputs[:2], tmp_path / "out", FakeSpec(report_dir=str(report), report_barrier=2), gpus="0,2")
    assert result.exit_code == EXIT_OK
    reports = [json.loads(path.read_text()) for path in report.iterdir()]
    seen = sorted((r["device"], r["cuda_visible_devices"]) for r in reports)
    assert seen == [("cuda:0", "0"), ("cuda:0", "2")]
    assert sorted(result.stats["devices"]) == ["gpu 0", "gpu 2"]


@pytest.mark.slow
def test_resume_after_a_kill_skips_complete_outputs_and_redoes_the_rest(
    tmp_path: Path, inputs: list[str], reference: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    outdir = tmp_path / "out"
    marker = tmp_path / "killed-once"
    with one_worker_spawned(monkeypatch):
        killed = _run(inputs, outdir, FakeSpec(die_on=KILLER, marker=str(marker)), workers=1)
    assert killed.exit_code == EXIT_FAILED and marker.exists()
    written = _bytes(outdir)
    assert "file3.npz" not in written and 0 < len(written) < 6  # largest first: some done before the kill
    assert all(reference[name] == data for name, data in written.items())  # no partial file under a final name
    assert list(outdir.glob(".*.tmp")) == []

    resumed = _run(inputs, outdir, FakeSpec(die_on=KILLER, marker=str(marker)), workers=2, resume=True)
    assert (resumed.exit_code, resumed.failures) == (EXIT_OK, [])
    assert (resumed.stats["files_skipped"], resumed.stats["files_written"]) == (len(written), 6 - len(written))
    assert _bytes(outdir) == reference
    assert not (outdir / FAILED_FILES).exists()  # the killed run's list is gone with its failures

    with open(inputs[0], "a") as handle:
        handle.write(">extra\nMKVL\n")
    changed = _run(inputs, outdir, workers=2, resume=True)
    assert (changed.stats["files_skipped"], changed.stats["files_written"]) == (5, 1)
    assert load_embeddings(outdir / "file0.npz").ids[-1] == "extra"

    other_model = _run(inputs, outdir, FakeSpec(model="fake-2"), workers=2, resume=True)
    assert (other_model.stats["files_skipped"], other_model.stats["files_written"]) == (0, 6)


_KILLABLE_RUN = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from engine_doubles import FakeSpec
from virnucpro.engine import run_embedding
run_embedding({files!r}, FakeSpec(report_dir={report!r}, delay_s=0.2), Path({outdir!r}), {budget}, workers=2, progress="quiet")
"""


@pytest.mark.slow
def test_kill_9_of_the_manager_loses_at_most_the_files_in_flight(
    tmp_path: Path, inputs: list[str], reference: dict[str, bytes]
) -> None:
    outdir, report = tmp_path / "out", tmp_path / "report"
    report.mkdir()
    script = _KILLABLE_RUN.format(
        tests=str(Path(__file__).parent), files=inputs, report=str(report), outdir=str(outdir), budget=BUDGET
    )
    manager = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while not list(outdir.glob("*.npz")) and time.monotonic() < deadline:
        time.sleep(0.05)
    manager.kill()
    manager.wait()
    workers = [int(p.stem) for p in report.glob("*.json")]
    assert workers, "no worker started"
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers), "workers outlived their manager"
    written = _bytes(outdir)
    assert 0 < len(written) < 6
    assert all(reference[name] == data for name, data in written.items())  # complete or absent

    resumed = _run(inputs, outdir, workers=2, resume=True)
    assert (resumed.exit_code, resumed.stats["files_skipped"]) == (EXIT_OK, len(written))
    assert _bytes(outdir) == reference
    assert list(outdir.glob(".*.tmp")) == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:  # a zombie (exited, not yet reaped) counts as gone
            return handle.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_one_cpu_worker_runs_in_this_process_with_the_same_bytes(
    tmp_path: Path, inputs: list[str], reference: dict[str, bytes]
) -> None:
    report = tmp_path / "report"
    report.mkdir()
    result = _run(inputs, tmp_path / "out", FakeSpec(report_dir=str(report)), workers=1)
    assert result.exit_code == EXIT_OK
    assert [p.stem for p in report.glob("*.json")] == [str(os.getpid())]  # loaded here, once
    assert _bytes(tmp_path / "out") == reference
    assert result.stats["devices"]["cpu"]["files"] == len(inputs)
    assert result.stats["devices"]["cpu"]["precision"] == "fp32"


def test_a_model_that_cannot_load_in_process_is_a_systemic_failure(tmp_path: Path, inputs: list[str]) -> None:
    result = _run(inputs[:2], tmp_path / "out", FakeSpec(load_error="esm model 'nope' not found"), workers=1)
    assert result.exit_code == EXIT_FAILED
    assert result.message == (
        "systemic failure: 1 of 1 workers failed, stopping (worker 0 (cpu): the model cannot be used: "
        "esm model 'nope' not found)"
    )


def test_no_files_loads_no_model(tmp_path: Path) -> None:
    result = _run([], tmp_path / "out", FakeSpec(load_error="must not be loaded"), workers=1)
    assert (result.exit_code, result.failures, result.message) == (EXIT_OK, [], None)


def test_a_load_failure_says_whether_it_is_the_model_s_or_the_machine_s() -> None:
    import torch

    from virnucpro.errors import ModelError, model_load_failure

    assert model_load_failure(ModelError("m.pt: ESM model file not found")) == (
        "the model cannot be used: m.pt: ESM model file not found"  # Nextflow: no retry (modules/local/embed_*)
    )
    assert model_load_failure(torch.OutOfMemoryError("CUDA out of memory")) == (
        "could not load the model: OutOfMemoryError: CUDA out of memory"  # another machine may do
    )


@pytest.mark.parametrize("resume", [False, True])
def test_an_earlier_run_s_output_of_a_file_not_embedded_now_is_removed(
    tmp_path: Path, inputs: list[str], resume: bool
) -> None:
    """A new model that cannot load must not leave the old model's embeddings to be classified as new ones."""
    outdir = tmp_path / "out"
    assert _run(inputs[:2], outdir, workers=1).exit_code == EXIT_OK
    assert len(list(outdir.glob("*.npz"))) == 2
    failed = _run(inputs[:2], outdir, FakeSpec(model="fake-2", load_error="cannot load"), workers=1, resume=resume)
    assert failed.exit_code == EXIT_FAILED and failed.outputs == {}
    assert list(outdir.glob("*.npz")) == []  # nothing anyone could take for this run's output
