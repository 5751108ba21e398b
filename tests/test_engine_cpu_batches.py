"""CPU workers run batches side by side, one torch thread each: same outputs, real overlap,
failures and out-of-memory handled as one batch at a time; a stopped run does not wait for them."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from virnucpro.contracts import STAGE_ESM
from virnucpro.embeddings.store import load_embeddings
from virnucpro.engine import embed_file, inprocess, run_embedding
from virnucpro.engine.cpu_batches import batches_side_by_side

from engine_doubles import FakeEmbedder, FakeSpec, protein, write_fasta
from helpers import model_spec

BUDGET = 64


@pytest.fixture()
def torch_threads():
    """Three torch threads during the test (restored after), so a restore is visible."""
    saved = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(saved)


@pytest.fixture()
def fasta(tmp_path: Path) -> Path:
    """Twenty sequences of 10 residues (12 tokens each): four batches of five at BUDGET."""
    return write_fasta(tmp_path / "in.faa", [(f"s{i}", protein(i, 10)) for i in range(20)])


def test_on_the_cpu_each_batch_gets_one_torch_thread_and_the_setting_is_restored(torch_threads: int) -> None:
    with batches_side_by_side("cpu", 4) as parallel:
        assert parallel == 4
        assert torch.get_num_threads() == 1
        with ThreadPoolExecutor(1) as pool:  # a thread started now (as the batch threads are) starts with 1
            assert pool.submit(torch.get_num_threads).result() == 1
    assert torch.get_num_threads() == torch_threads
    with batches_side_by_side("cpu") as parallel:  # default: as many batches as torch had threads
        assert parallel == torch_threads
    with batches_side_by_side("cuda:0", 4) as parallel:  # a GPU: one batch at a time, threads untouched
        assert parallel == 1
        assert torch.get_num_threads() == torch_threads


class _Overlapping(FakeEmbedder):
    """Records how many embed_batch calls ran at the same time."""

    def __init__(self, **options) -> None:
        super().__init__(delay_s=0.1, **options)
        self.running = self.most = 0
        self.lock = threading.Lock()

    def embed_batch(self, sequences: list[str]) -> np.ndarray:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return super().embed_batch(sequences)
        finally:
            with self.lock:
                self.running -= 1


def test_batches_run_at_the_same_time_and_the_output_is_the_same(tmp_path: Path, fasta: Path) -> None:
    alone = embed_file(str(fasta), FakeEmbedder(), tmp_path / "alone.npz", BUDGET)
    embedder = _Overlapping()
    told: list[tuple[int, int]] = []
    result = embed_file(str(fasta), embedder, tmp_path / "side.npz", BUDGET, on_batch=lambda s, t: told.append((s, t)),
                        parallel_batches=3)
    assert embedder.most == 3 and len(embedder.calls) == 4
    assert (tmp_path / "side.npz").read_bytes() == (tmp_path / "alone.npz").read_bytes()
    assert (result.records, result.embedded, result.tokens, result.failures) == (20, 20, alone.tokens, [])
    assert sorted(told) == [(5, 60)] * 4  # every batch told once, from the calling thread


@pytest.mark.slow
def test_out_of_memory_side_by_side_retries_and_records_as_one_at_a_time(tmp_path: Path, fasta: Path) -> None:
    seqs = [protein(i, 10) for i in range(20)]
    outcomes = []
    for name, parallel in (("alone", 1), ("side", 3)):
        embedder = FakeEmbedder(oom_above=36, oom_always=frozenset({seqs[7]}))
        result = embed_file(str(fasta), embedder, tmp_path / f"{name}.npz", BUDGET, parallel_batches=parallel)
        outcomes.append((result.oom_retries, [f.line() for f in result.failures], (tmp_path / f"{name}.npz").read_bytes()))
    assert outcomes[0] == outcomes[1]
    retries, failures, _ = outcomes[1]
    assert retries > 0 and failures == [f"{fasta}|{STAGE_ESM}|sequence s7: out of memory with one sequence per batch (12 tokens)"]


def test_a_model_error_side_by_side_fails_the_file_and_starts_no_more_batches(tmp_path: Path) -> None:
    fasta = write_fasta(tmp_path / "in.faa", [(f"s{i}", protein(i, 10)) for i in range(100)])  # 20 batches
    embedder = FakeEmbedder(fail_on=protein(0, 10), delay_s=0.05)
    result = embed_file(str(fasta), embedder, tmp_path / "out.npz", BUDGET, parallel_batches=2)
    assert [f.line() for f in result.failures] == [f"{fasta}|{STAGE_ESM}|model exploded"]
    assert not (tmp_path / "out.npz").exists()
    time.sleep(1.0)  # the 20 batches would all have started by now; only those already running may
    assert len(embedder.calls) <= 4


@pytest.mark.parametrize("kind", ["esm", "dna"])
def test_real_models_give_the_same_embeddings_side_by_side(tmp_path: Path, test_models, kind: str) -> None:
    """The test models, many small batches: one at a time vs three side by side, one thread each."""
    if kind == "esm":
        records, model, budget = [(f"p{i}", protein(i, 20 + i % 17)) for i in range(60)], str(test_models.esm), 200
    else:
        bases = "ACGT"
        records = [(f"n{i}", "".join(bases[(i * 7 + j * j) % 4] for j in range(60 + i % 23))) for i in range(60)]
        model, budget = str(test_models.dna), 300
    fasta = write_fasta(tmp_path / "in.fa", records)
    embedder = model_spec(kind, model).load("cpu")
    alone = embed_file(str(fasta), embedder, tmp_path / "alone.npz", budget)
    with batches_side_by_side("cpu", 3) as parallel:
        side = embed_file(str(fasta), embedder, tmp_path / "side.npz", budget, parallel_batches=parallel)
    assert alone.failures == side.failures == [] and side.embedded == 60
    first, second = load_embeddings(tmp_path / "alone.npz"), load_embeddings(tmp_path / "side.npz")
    assert first.ids == second.ids
    np.testing.assert_allclose(second.matrix, first.matrix, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_a_stopped_run_exits_without_waiting_for_running_batches(tmp_path: Path) -> None:
    """After SIGTERM or Ctrl-C the CLI ends the process at once; a batch thread still running
    (here: one that would take a minute) does not hold it up, and what was printed is kept."""
    script = (
        "import time\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from virnucpro.cli import _exit_at_once\n"
        "ThreadPoolExecutor(1).submit(time.sleep, 60)\n"
        "print('unwound', end='')\n"
        "_exit_at_once(143)\n"
    )
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=50)
    assert (done.returncode, done.stdout) == (143, "unwound")
    assert time.monotonic() - start < 30


def test_the_in_process_cpu_worker_runs_one_batch_per_core(tmp_path: Path, fasta: Path, torch_threads: int,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """run_embedding's single CPU worker passes its cores to embed_file as batches side by side,
    with torch on one thread meanwhile, and gives the caller its threads back."""
    seen: list[tuple[int, int]] = []
    real = inprocess.embed_file

    def spy(*args, **kwargs):
        seen.append((kwargs["parallel_batches"], torch.get_num_threads()))
        return real(*args, **kwargs)

    monkeypatch.setattr(inprocess, "embed_file", spy)
    result = run_embedding([str(fasta)], FakeSpec(), tmp_path / "out", BUDGET, workers=1, progress="quiet")
    assert result.exit_code == 0 and seen == [(torch_threads, 1)]
    assert torch.get_num_threads() == torch_threads
