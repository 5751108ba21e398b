"""embed_file: deduplication, out-of-memory halving, failures as data, resume checks (in-process)."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
from pathlib import Path

import numpy as np
import pytest

from virnucpro.contracts import STAGE_DNA, STAGE_ESM
from virnucpro.embeddings.store import META_FAILED, META_INPUT_SHA256, load_embeddings
from virnucpro.engine import embed_file
from virnucpro.engine.embed_file import current_output_records
from virnucpro.errors import DeviceFailure, is_device_failure, is_out_of_memory

from engine_doubles import FakeEmbedder, fake_vector, out_of_memory, protein, write_fasta

BUDGET = 64


@pytest.fixture()
def fasta(tmp_path: Path) -> Path:
    """Eight sequences of 10 residues (12 tokens each), the third repeated as the fifth."""
    seqs = [protein(i, 10) for i in range(8)]
    seqs[4] = seqs[2]
    return write_fasta(tmp_path / "in.faa", [(f"s{i}", s) for i, s in enumerate(seqs)])


def test_embeds_every_record_in_file_order_and_identical_sequences_once(tmp_path: Path, fasta: Path) -> None:
    embedder = FakeEmbedder()
    result = embed_file(str(fasta), embedder, tmp_path / "out.npz", BUDGET)
    stored = load_embeddings(tmp_path / "out.npz")
    seqs = [line for line in fasta.read_text().splitlines() if not line.startswith(">")]
    assert stored.ids == [f"s{i}" for i in range(8)]
    np.testing.assert_array_equal(stored.matrix, np.stack([fake_vector(s) for s in seqs]))
    assert (result.records, result.unique, result.embedded, result.failures) == (8, 7, 8, [])
    assert sum(embedder.calls) <= 7 * 12  # the duplicate went through the model once
    assert stored.meta[META_FAILED] == "0"


def test_the_metadata_holds_the_model_identity_and_the_counts(tmp_path: Path, fasta: Path) -> None:
    embed_file(str(fasta), FakeEmbedder(), tmp_path / "out.npz", BUDGET)
    meta = load_embeddings(tmp_path / "out.npz").meta
    assert meta["model"] == "fake" and meta["precision"] == "fp32"  # the identity, for classify's check
    assert meta["embedder"] == '{"dim": "8", "model": "fake", "precision": "fp32"}'
    assert meta["records"] == "8" and meta["embedded"] == "8" and len(meta[META_INPUT_SHA256]) == 64


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["torch", "runtime"])
def test_out_of_memory_halves_the_budget_down_to_one_sequence_and_records_what_never_fits(
    tmp_path: Path, fasta: Path, kind: str
) -> None:
    reference = embed_file(str(fasta), FakeEmbedder(), tmp_path / "reference.npz", BUDGET)
    assert reference.oom_retries == 0
    seqs = [line for line in fasta.read_text().splitlines() if not line.startswith(">")]
    # Batches above 12 padded tokens (more than one sequence) run out of memory; s6 does even alone.
    embedder = FakeEmbedder(oom_above=12, oom_always=frozenset({seqs[6]}), oom_error=kind)
    result = embed_file(str(fasta), embedder, tmp_path / "out.npz", BUDGET)

    distinct = list(dict.fromkeys(embedder.budgets))
    assert distinct == [64, 30, 12]  # half the failed batch's padded tokens each time: 60 -> 24 -> 12
    assert embedder.calls[:3] == [60, 24, 12]
    assert [line.line() for line in result.failures] == [
        f"{fasta}|ESM-2|sequence s6: out of memory with one sequence per batch (12 tokens)"
    ]
    stored = load_embeddings(tmp_path / "out.npz")
    expected = load_embeddings(tmp_path / "reference.npz")
    assert stored.ids == [f"s{i}" for i in range(8) if i != 6]
    np.testing.assert_array_equal(stored.matrix, np.delete(expected.matrix, 6, axis=0))
    assert stored.meta[META_FAILED] == "1" and stored.meta["embedded"] == "7"
    assert result.oom_retries > 0 and result.embedded == 7


def test_a_budget_that_fits_after_one_halving_stops_halving(tmp_path: Path, fasta: Path) -> None:
    embedder = FakeEmbedder(oom_above=36)  # three sequences of 12 tokens fit
    result = embed_file(str(fasta), embedder, tmp_path / "out.npz", BUDGET)
    assert list(dict.fromkeys(embedder.budgets)) == [64, 30]  # 60 padded tokens failed: batches of <= 30
    assert result.failures == [] and result.embedded == 8


def test_no_budget_means_the_embedders_default_for_its_device(tmp_path: Path, fasta: Path) -> None:
    embedder = FakeEmbedder(default_token_budget=40)
    result = embed_file(str(fasta), embedder, tmp_path / "out.npz", None)
    assert embedder.budgets == [40] and result.embedded == 8


def test_a_small_batch_under_a_large_budget_is_split_not_run_again(tmp_path: Path) -> None:
    fasta = write_fasta(tmp_path / "two.faa", [("a", protein(1, 10)), ("b", protein(2, 10))])
    embedder = FakeEmbedder(oom_above=12)
    result = embed_file(str(fasta), embedder, tmp_path / "out.npz", 100_000)
    assert embedder.calls == [24, 12, 12] and result.embedded == 2 and result.oom_retries == 1


@pytest.mark.slow
def test_the_failed_attempt_is_released_before_the_retry(tmp_path: Path, fasta: Path) -> None:
    """Its tensors live in the error's traceback: a retry inside the except block would keep them."""
    import gc
    import weakref

    alive: list[weakref.ref] = []

    class Remembering(FakeEmbedder):
        def embed_batch(self, sequences: list[str]) -> np.ndarray:
            gc.collect()
            still = [ref for ref in alive if ref() is not None]
            assert not still, f"{len(still)} failed attempt(s) still alive at a retry"
            activations = np.ones(1000)  # what a forward pass would hold when it runs out of memory
            alive.append(weakref.ref(activations := _Activations(activations)))
            return super().embed_batch(sequences)

    result = embed_file(str(fasta), Remembering(oom_above=12), tmp_path / "out.npz", BUDGET)
    assert result.oom_retries > 0 and result.embedded == 8


class _Activations:
    """A weak-referenceable stand-in for a forward pass's tensors."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data


def test_a_sequence_whose_embedding_is_not_finite_is_recorded_and_the_rest_kept(tmp_path: Path, fasta: Path) -> None:
    seqs = [line for line in fasta.read_text().splitlines() if not line.startswith(">")]
    result = embed_file(str(fasta), FakeEmbedder(nan_on=seqs[2]), tmp_path / "out.npz", BUDGET)
    assert [line.line() for line in result.failures] == [
        f"{fasta}|ESM-2|sequence {rid}: embedding not finite in fp32" for rid in ("s2", "s4")  # s4 repeats s2
    ]
    stored = load_embeddings(tmp_path / "out.npz")
    assert stored.ids == ["s0", "s1", "s3", "s5", "s6", "s7"] and np.isfinite(stored.matrix).all()
    assert stored.meta[META_FAILED] == "2" and result.embedded == 6


def test_nucleotides_given_to_esm2_are_embedded_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from helpers import captured_log

    dna = write_fasta(tmp_path / "frames.fa", [("a", "ACGTACGTTA"), ("b", "GGCATN")])
    protein_file = write_fasta(tmp_path / "frames.faa", [("a", "ACGTACGTTA"), ("b", "MKVLA")])
    with captured_log(caplog):
        assert embed_file(str(dna), FakeEmbedder(), tmp_path / "dna.npz", BUDGET).embedded == 2
        assert embed_file(str(protein_file), FakeEmbedder(), tmp_path / "p.npz", BUDGET).embedded == 2
    assert [r.getMessage() for r in caplog.records] == [
        f"{dna}: every sequence is only A, C, G, T/U and N: nucleotides given to ESM-2 (protein)?"
    ]


def test_a_device_failure_is_raised_not_recorded(tmp_path: Path, fasta: Path) -> None:
    """The GPU is unusable: not this file's fault, so no failure line; the worker must stop."""
    seqs = [line for line in fasta.read_text().splitlines() if not line.startswith(">")]
    with pytest.raises(DeviceFailure, match=r"^RuntimeError: CUDA error: an illegal memory access was encountered$"):
        embed_file(str(fasta), FakeEmbedder(die_on=seqs[1], death="device"), tmp_path / "out.npz", BUDGET)
    assert not (tmp_path / "out.npz").exists()


def test_device_failures_are_told_from_out_of_memory_and_from_other_errors() -> None:
    class AcceleratorError(RuntimeError):  # torch.AcceleratorError's name, as torch >= 2.8 raises it
        pass

    assert is_device_failure(AcceleratorError("CUDA error: unspecified launch failure"))
    assert is_device_failure(RuntimeError("CUDA error: device-side assert triggered"))
    assert is_device_failure(RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED when calling cublasSgemm"))
    assert not is_device_failure(RuntimeError("CUDA error: out of memory"))  # retried smaller instead
    assert not is_device_failure(out_of_memory())
    assert not is_device_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_device_failure(ValueError("CUDA error"))


def test_out_of_memory_is_recognised_by_type_or_message() -> None:
    from engine_doubles import out_of_memory

    assert is_out_of_memory(out_of_memory())
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 7 GB"))
    assert is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))
    assert not is_out_of_memory(RuntimeError("CUDA error: device-side assert triggered"))
    assert not is_out_of_memory(ValueError("out of memory"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "{path}: no such file"),  # as the console says it
        (b"", "no FASTA records (empty file or not FASTA)"),
        (b"just some text\nwithout a header\n", "no FASTA records (empty file or not FASTA)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe junk", "binary content, not a FASTA text file"),
        (b">a\nMKV\n>b\nMK1V\n", "record 2 (b): invalid letters '1'"),
        (b">a\nMKV\n>b\n\n>c\nMK\n", "record 2 (b): empty sequence"),
    ],
)
def test_a_bad_file_is_one_failure_and_leaves_no_output(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "bad.faa"
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "bad.npz"
    out.write_bytes(b"stale output of an earlier run")
    result = embed_file(str(path), FakeEmbedder(), out, BUDGET)
    assert [f.line() for f in result.failures] == [f"{path}|ESM-2|{message.format(path=path)}"]
    assert result.output is None and not out.exists()


def test_letters_are_checked_against_the_model_alphabet(tmp_path: Path) -> None:
    path = write_fasta(tmp_path / "x.fa", [("a", "ACGTN"), ("b", "acgtu")])
    assert embed_file(str(path), FakeEmbedder(stage=STAGE_DNA), tmp_path / "x.npz", BUDGET).failures == []
    protein_file = write_fasta(tmp_path / "p.faa", [("a", "QELP")])
    result = embed_file(str(protein_file), FakeEmbedder(stage=STAGE_DNA), tmp_path / "p.npz", BUDGET)
    assert [f.line() for f in result.failures] == [f"{protein_file}|DNABERT-S|record 1 (a): invalid letters 'E' 'L' 'P' 'Q'"]


def test_a_model_error_that_is_not_memory_fails_the_file(tmp_path: Path, fasta: Path) -> None:
    seqs = [line for line in fasta.read_text().splitlines() if not line.startswith(">")]
    result = embed_file(str(fasta), FakeEmbedder(fail_on=seqs[0]), tmp_path / "out.npz", BUDGET)
    assert [f.line() for f in result.failures] == [f"{fasta}|{STAGE_ESM}|model exploded"]
    assert not (tmp_path / "out.npz").exists()


def test_resume_keeps_a_current_output_and_redoes_changed_input_model_or_incomplete_output(
    tmp_path: Path, fasta: Path
) -> None:
    out = tmp_path / "out.npz"
    embed_file(str(fasta), FakeEmbedder(), out, BUDGET)
    first = out.stat().st_mtime_ns
    kept = embed_file(str(fasta), FakeEmbedder(), out, BUDGET, skip_if_current=True)
    assert kept.skipped and kept.output == out and out.stat().st_mtime_ns == first and kept.embedded == 8

    assert not embed_file(str(fasta), FakeEmbedder(model="other"), out, BUDGET, skip_if_current=True).skipped
    assert not embed_file(str(fasta), FakeEmbedder(), out, BUDGET, skip_if_current=True).skipped  # model changed back
    with fasta.open("a") as handle:
        handle.write(">s8\nMKV\n")
    redone = embed_file(str(fasta), FakeEmbedder(), out, BUDGET, skip_if_current=True)
    assert not redone.skipped and redone.embedded == 9

    seqs = [line for line in fasta.read_text().splitlines() if not line.startswith(">")]
    embed_file(str(fasta), FakeEmbedder(oom_always=frozenset({seqs[0]})), out, BUDGET)
    assert not embed_file(str(fasta), FakeEmbedder(), out, BUDGET, skip_if_current=True).skipped  # was incomplete


def test_a_stream_is_one_clear_failure_not_an_empty_file(tmp_path: Path) -> None:
    """Hashing a pipe for --resume would use it up; the workers read files, so a stream is refused unread."""
    read_end, write_end = os.pipe()
    os.write(write_end, b">a\nMKV\n")
    os.close(write_end)
    path = f"/dev/fd/{read_end}"
    try:
        result = embed_file(path, FakeEmbedder(), tmp_path / "a.npz", BUDGET, skip_if_current=True)
        assert os.read(read_end, 100) == b">a\nMKV\n"  # left as it was
    finally:
        os.close(read_end)
    assert [f.line() for f in result.failures] == [
        f"{path}|ESM-2|not a regular file (a pipe or standard input?): the embedding stages read files"
    ]


def test_a_directory_is_named_as_one_not_called_a_stream(tmp_path: Path) -> None:
    """Only pipes, sockets and character devices read once; a directory fails as what it is."""
    result = embed_file(str(tmp_path), FakeEmbedder(), tmp_path / "a.npz", BUDGET)
    assert [f.line() for f in result.failures] == [f"{tmp_path}|ESM-2|{tmp_path}: Is a directory"]


def test_missing_and_corrupt_outputs_are_not_current(tmp_path: Path) -> None:
    assert current_output_records(tmp_path / "missing.npz", "0" * 64, "{}") is None
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    assert current_output_records(tmp_path / "bad.npz", "0" * 64, "{}") is None


@pytest.mark.parametrize("name, compress", [("gzip", gzip.compress), ("bzip2", bz2.compress), ("xz", lzma.compress)])
def test_compressed_input_is_a_clear_failure(tmp_path: Path, name: str, compress) -> None:
    """The engine reads the plain FASTA shards prepare writes (docs/engine.md); compressed input is one clear failure."""
    path = tmp_path / "in.faa.z"
    path.write_bytes(compress(b">a\nMKV\n"))
    result = embed_file(str(path), FakeEmbedder(), tmp_path / "in.npz", BUDGET)
    assert [f.line() for f in result.failures] == [
        f"{path}|ESM-2|{name}-compressed: the embedding stages read plain-text FASTA (as prepare writes it)"
    ]
    assert not (tmp_path / "in.npz").exists()
