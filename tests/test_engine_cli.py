"""``virnucpro embed-esm`` / ``embed-dna`` with the tiny real models (spawned CPU workers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from virnucpro.cli import main
from virnucpro.contracts import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, FAILED_FILES, SUMMARY_JSON
from virnucpro.embeddings.esm import EsmSpec
from virnucpro.embeddings.store import load_embeddings
from virnucpro.engine import embed_file

from engine_doubles import protein, write_fasta


def _dna(seed: int, length: int) -> str:
    return "".join(np.random.default_rng(seed).choice(list("ACGT"), size=length))


@pytest.fixture()
def proteins(tmp_path: Path) -> list[str]:
    files = []
    for f in range(3):
        records = [(f"p{f}_{r}", protein(10 * f + r, 20 + 13 * r)) for r in range(4 + f)]
        records.append((f"p{f}_dup", records[0][1]))  # an identical sequence, embedded once
        files.append(str(write_fasta(tmp_path / f"prot{f}.faa", records)))
    return files


def _outputs(outdir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(outdir.glob("*.npz"))}


@pytest.mark.slow
def test_embed_esm_is_identical_with_one_or_two_workers_and_matches_embed_file(
    tmp_path: Path, proteins: list[str], test_models
) -> None:
    common = ["--esm-model", str(test_models.esm), "--esm-batch-size", "200", "--quiet"]
    assert main(["embed-esm", *proteins, "--outdir", str(tmp_path / "one"), "--workers", "1", *common]) == EXIT_OK
    assert main(["embed-esm", *proteins, "--outdir", str(tmp_path / "two"), "--workers", "2", *common]) == EXIT_OK
    one, two = _outputs(tmp_path / "one"), _outputs(tmp_path / "two")
    assert sorted(one) == ["prot0.npz", "prot1.npz", "prot2.npz"] and one == two

    embedder = EsmSpec(str(test_models.esm)).load("cpu")
    embed_file(proteins[1], embedder, tmp_path / "direct.npz", 200)
    assert (tmp_path / "direct.npz").read_bytes() == one["prot1.npz"]  # the engine adds nothing of its own
    stored = load_embeddings(tmp_path / "one" / "prot1.npz")
    assert stored.ids[-1] == "p1_dup" and stored.matrix.shape == (6, embedder.dim)
    np.testing.assert_array_equal(stored.matrix[-1], stored.matrix[0])

    summary = json.loads((tmp_path / "two" / SUMMARY_JSON).read_text())
    assert summary["command"] == "embed-esm" and summary["exit_status"] == 0
    assert summary["engine"]["embedded"] == 18 and summary["engine"]["devices"]["cpu"]["workers"] == 2
    cpu = summary["engine"]["devices"]["cpu"]
    assert (cpu["precision"], cpu["parity_checks"], cpu["token_budget"], cpu["layout"]) == (
        "fp32",
        None,  # the CPU runs fp32 unchecked; spawned workers report it through their ready message
        200,
        "padded",
    )
    assert not (tmp_path / "one" / FAILED_FILES).exists()

    assert main(["embed-esm", *proteins, "--outdir", str(tmp_path / "one"), "--resume", *common]) == EXIT_OK
    resumed = json.loads((tmp_path / "one" / SUMMARY_JSON).read_text())["engine"]
    assert (resumed["files_skipped"], resumed["files_written"]) == (3, 0)
    assert _outputs(tmp_path / "one") == one


def test_embed_dna_records_a_bad_file_and_keeps_the_rest(tmp_path: Path, test_models) -> None:
    good = [
        str(write_fasta(tmp_path / f"nuc{f}.fa", [(f"n{f}_{r}", _dna(f * 10 + r, 60 + 30 * r)) for r in range(3)]))
        for f in range(2)
    ]
    bad = str(write_fasta(tmp_path / "bad.fa", [("n0", "ACGT"), ("n1", "ACGTQQ")]))
    outdir = tmp_path / "dna"
    model = ["--dna-model", str(test_models.dna)]
    code = main(["embed-dna", good[0], bad, good[1], "--outdir", str(outdir), *model, "--quiet"])
    assert code == EXIT_PARTIAL
    assert (outdir / FAILED_FILES).read_text() == f"{bad}|DNABERT-S|record 2 (n1): invalid letters 'Q'\n"
    assert sorted(_outputs(outdir)) == ["nuc0.npz", "nuc1.npz"]
    assert load_embeddings(outdir / "nuc1.npz").ids == ["n1_0", "n1_1", "n1_2"]
    cpu = json.loads((outdir / SUMMARY_JSON).read_text())["engine"]["devices"]["cpu"]
    assert (cpu["token_budget"], cpu["layout"]) == (8192, "padded")  # no --dna-batch-size: the default


def _embed_esm_quietly(protein: str, outdir: Path, model: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "virnucpro", "embed-esm", protein, "--outdir", str(outdir),
         "--esm-model", str(model), "--quiet"],
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.slow
def test_a_missing_model_is_refused_before_any_work(tmp_path: Path, proteins: list[str]) -> None:
    missing = tmp_path / "no_such_model.pt"
    process = _embed_esm_quietly(proteins[0], tmp_path / "out", missing)
    assert process.returncode == EXIT_FAILED
    assert process.stderr.strip() == f"virnucpro: error: {missing}: ESM model file not found"
    assert not (tmp_path / "out").exists()  # no worker started, nothing recorded as data


@pytest.mark.slow
def test_a_model_that_fails_to_load_is_a_systemic_failure(tmp_path: Path, proteins: list[str]) -> None:
    """A checkpoint that passes the check before work (readable, with weights) but that fair-esm cannot load."""
    import torch

    broken = tmp_path / "esm2_t2_broken.pt"
    torch.save({"model": {}}, broken)  # no configuration
    torch.save({}, tmp_path / "esm2_t2_broken-contact-regression.pt")
    process = _embed_esm_quietly(proteins[0], tmp_path / "out", broken)
    assert process.returncode == EXIT_FAILED
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in process.stderr, process.stderr
    assert "systemic failure: 1 of 1 workers failed" in lines[0] and "the model cannot be used" in lines[0]
    assert broken.name in lines[0]
    recorded = (tmp_path / "out" / FAILED_FILES).read_text()
    assert recorded.startswith(f"{proteins[0]}|ESM-2|not embedded: systemic failure") and "the model cannot be used" in recorded


@pytest.mark.parametrize("command", ["embed-esm", "predict"])
def test_a_malformed_gpus_list_is_refused_before_any_work(
    tmp_path: Path, proteins: list[str], command: str, capsys: pytest.CaptureFixture
) -> None:
    assert main([command, proteins[0], "--outdir", str(tmp_path / "out"), "--gpus", "0,,1"]) == EXIT_FAILED
    error = capsys.readouterr().err.strip().splitlines()
    assert error == ["virnucpro: error: Invalid value for '--gpus': expected comma-separated GPU indices such as 0,2"]
    assert not (tmp_path / "out").exists()  # nothing prepared, nothing loaded


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone already
        return b""


def _alive(pid: str) -> bool:
    """Running (a zombie or a reaped process is not)."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:  # gone
        return False


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_stops_the_workers_and_releases_the_output_directory(tmp_path: Path, test_models, workers: int) -> None:
    """A scheduler's time limit: exit 143 with one line, workers gone, nothing half-written left."""
    import signal
    import time

    files = [
        str(write_fasta(tmp_path / f"big{f}.faa", [(f"b{f}_{r}", protein(1000 * f + r, 600)) for r in range(1000)]))
        for f in range(8)
    ]
    outdir = tmp_path / "out"
    command = [sys.executable, "-m", "virnucpro", "embed-esm", *files, "--outdir", str(outdir),
               "--esm-model", str(test_models.esm), "--workers", str(workers), "--esm-batch-size", "512", "--quiet"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(outdir.glob("*.npz")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # until the first file is done: the workers are running
    children_file = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    children = children_file.read_text().split() if children_file.exists() else []
    workers_spawned = [child for child in children if b"spawn_main" in _cmdline(child)]
    assert process.poll() is None, "the run ended before it could be stopped: give it more work"
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=60)
    # checked at once: the run stopped its workers before it ended (an orphaned worker would
    # still be running now, until it noticed its pipe to the manager closing)
    assert not [child for child in workers_spawned if _alive(child)], "workers outlived the run"
    stderr = process.stderr.read()
    assert code == 128 + signal.SIGTERM, stderr
    # the one line of the run (multiprocessing's resource tracker may add a warning of its own as it exits)
    assert "virnucpro: terminated (SIGTERM); finished outputs are kept: --resume continues\n" in stderr, stderr
    assert "Traceback" not in stderr, stderr
    finished = sorted(outdir.glob("*.npz"))
    assert 1 <= len(finished) < len(files), stderr
    for output in finished:  # complete, or not there at all
        assert len(load_embeddings(output).ids) == 1000
    assert not (outdir / ".virnucpro.lock").exists()
    assert not list(outdir.glob(".*.tmp"))
    deadline = time.monotonic() + 10  # multiprocessing's resource tracker ends when it notices
    while any(_alive(child) for child in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [child for child in children if _alive(child)], "processes outlived the run"
    if workers == 2:
        assert len(workers_spawned) == 2, children


def test_a_sigterm_that_some_code_swallowed_still_ends_the_run_as_terminated(monkeypatch: pytest.MonkeyPatch,
                                                                             capsys: pytest.CaptureFixture) -> None:
    """Library code that turns the Terminated exception into an ordinary error (a failed file,
    exit 2) must not hide the SIGTERM: the run still ends with 143 and its one line."""
    import signal

    import virnucpro.cli as cli_module

    def swallowing_run(args: list[str], verbose: bool) -> tuple[int, bool]:
        try:
            cli_module._raise_terminated(signal.SIGTERM, None)
        except BaseException:  # noqa: BLE001  (what the library code did)
            pass
        return 2, False

    monkeypatch.setattr(cli_module, "_run", swallowing_run)
    assert main(["embed-esm", "x.faa", "--outdir", "out"]) == 128 + signal.SIGTERM
    assert capsys.readouterr().err == "virnucpro: terminated (SIGTERM); finished outputs are kept: --resume continues\n"
    monkeypatch.setattr(cli_module, "_run", lambda args, verbose: (2, False))  # the flag is per run
    assert main(["embed-esm", "x.faa", "--outdir", "out"]) == 2
