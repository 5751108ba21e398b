"""Claiming one GPU per task on a shared node (virnucpro.engine.gpu_claim), with stand-in GPU entries.

The lock logic does not need a GPU: it works on the CUDA_VISIBLE_DEVICES entries it is given.
Separate processes stand in for concurrent Nextflow tasks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from virnucpro.engine.gpu_claim import claim_and_expose, claim_gpu, require_gpus
from virnucpro.errors import NoGpuError

CLAIMER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from virnucpro.engine.gpu_claim import claim_gpu
    claim = claim_gpu(sys.argv[2].split(","), Path(sys.argv[1]), timeout=float(sys.argv[3]))
    print(claim.entry, flush=True)
    time.sleep(float(sys.argv[4]))
    """
)


def claimer(lock_dir: Path, entries: str, hold: float, timeout: float = 60) -> subprocess.Popen:
    """A process that claims one of ``entries``, prints it, and holds it for ``hold`` seconds."""
    return subprocess.Popen(
        [sys.executable, "-c", CLAIMER, str(lock_dir), entries, str(timeout), str(hold)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_claims_get_distinct_gpus(tmp_path: Path) -> None:
    first = claimer(tmp_path, "0,1", hold=30)
    second = claimer(tmp_path, "0,1", hold=30)
    try:
        claimed = {first.stdout.readline().strip(), second.stdout.readline().strip()}
        assert claimed == {"0", "1"}
    finally:
        first.kill()
        second.kill()


def test_a_claim_waits_while_every_gpu_is_taken_and_gets_the_one_released(tmp_path: Path) -> None:
    holder = claimer(tmp_path, "3", hold=3)
    assert holder.stdout.readline().strip() == "3"
    start = time.monotonic()
    claim = claim_gpu(["3"], tmp_path, timeout=60)
    waited = time.monotonic() - start
    claim.release()
    holder.wait(timeout=30)
    assert claim.entry == "3"
    assert waited >= 1.0  # it waited for the holder to finish


def test_a_killed_task_frees_its_gpu(tmp_path: Path) -> None:
    holder = claimer(tmp_path, "0", hold=300)
    assert holder.stdout.readline().strip() == "0"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    claim = claim_gpu(["0"], tmp_path, timeout=10)
    assert claim.entry == "0"
    claim.release()


def test_no_gpu_becoming_free_within_the_timeout_is_an_error(tmp_path: Path) -> None:
    holder = claimer(tmp_path, "0", hold=60)
    try:
        assert holder.stdout.readline().strip() == "0"
        with pytest.raises(NoGpuError, match="no GPU of 0 became free within 1 s"):
            claim_gpu(["0"], tmp_path, timeout=1)
    finally:
        holder.kill()


def test_claim_exposes_only_the_claimed_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaa,GPU-bbb")
    claim = claim_and_expose(["GPU-aaa", "GPU-bbb"], tmp_path, timeout=5)
    try:
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-aaa"
        assert (tmp_path / "gpu-GPU-aaa.lock").is_file()
    finally:
        claim.release()


def test_a_lock_that_is_a_symlink_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (tmp_path / "gpu-0.lock").symlink_to(target)
    with pytest.raises(OSError):
        claim_gpu(["0"], tmp_path, timeout=1)
    assert target.read_text() == "keep"


def test_require_gpus_names_what_the_task_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(NoGpuError, match=r"this task sees none on .* \(CUDA_VISIBLE_DEVICES=''\)"):
        require_gpus([])
    require_gpus(["0"])  # a visible GPU: nothing to say


@pytest.mark.slow
@pytest.mark.parametrize("command", ["embed-esm", "embed-dna"])
def test_embed_stage_with_require_gpu_fails_at_once_on_a_cpu_machine(test_models, tmp_path: Path, command: str) -> None:
    fasta = tmp_path / "x.fa"
    fasta.write_text(">a\nMKV\n" if command == "embed-esm" else ">a\nACGTACGTAC\n")
    model = ["--esm-model", str(test_models.esm)] if command == "embed-esm" else ["--dna-model", str(test_models.dna)]
    done = subprocess.run(
        [sys.executable, "-m", "virnucpro", command, str(fasta), "--outdir", str(tmp_path / "out"), *model,
         "--require-gpu", "--claim-gpu", str(tmp_path / "locks")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("virnucpro: error: a GPU was asked for"), done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "x.npz").exists()
