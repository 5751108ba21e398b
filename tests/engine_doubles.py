"""Test doubles for the worker engine: a fake embedder and a picklable spec that spawned workers load.

The fake embedder is deterministic (a vector from the SHA-256 of each sequence), so outputs do
not depend on batching. Behaviour for failure tests is chosen by the spec's fields, never by a
switch in production code: out-of-memory above a token count, a sequence that always runs out
of memory, a sequence that kills the worker (once, guarded by a marker file, or always), a
model that cannot be loaded, and a report of the device and CUDA_VISIBLE_DEVICES each worker saw.
This module must not import torch at the top: spawned workers import it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from virnucpro.contracts import STAGE_ESM
from virnucpro.embeddings.base import EmbedderWrapper
from virnucpro.errors import ModelError

DIM = 8


def fake_vector(seq: str, dim: int = DIM) -> np.ndarray:
    """The embedding the fake model gives ``seq``."""
    digest = hashlib.sha256(seq.encode()).digest()
    return (np.frombuffer(digest[:dim], dtype=np.uint8).astype(np.float32) - 128.0) / 64.0


def out_of_memory(message: str = "CUDA out of memory. Tried to allocate 2.00 GiB") -> Exception:
    """A torch.OutOfMemoryError (torch imported only when a test needs one)."""
    import torch

    return torch.OutOfMemoryError(message)


DEVICE_FAILURE = "CUDA error: an illegal memory access was encountered"


def die_if_asked(sequences: list[str], die_on: str | None, marker: str | None, death: str = "kill") -> None:
    """When ``die_on`` is in the batch (only once when ``marker`` is given): SIGKILL this process
    (``death="kill"``), or raise the error of a GPU that failed for good (``death="device"``)."""
    if die_on is None or die_on not in sequences:
        return
    if marker is not None:
        if os.path.exists(marker):
            return
        Path(marker).touch()
    if death == "device":
        raise RuntimeError(DEVICE_FAILURE)
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class FakeEmbedder:
    """An Embedder: tokens = letters + 2, batches by padded tokens, records what it was asked."""

    model: str = "fake"
    dim: int = DIM
    stage: str = STAGE_ESM
    default_token_budget: int = 2048  # used when the caller gives no budget
    oom_above: int | None = None  # padded batch tokens above this raise out-of-memory
    oom_always: frozenset[str] = frozenset()  # sequences that run out of memory even alone
    oom_error: str = "torch"  # "torch": torch.OutOfMemoryError; "runtime": RuntimeError message
    die_on: str | None = None  # embedding this sequence SIGKILLs the process ...
    marker: str | None = None  # ... only while this file does not exist (it is created first)
    death: str = "kill"  # "kill": SIGKILL; "device": a CUDA error that leaves the GPU unusable
    fail_on: str | None = None  # embedding this sequence raises a non-memory error
    nan_on: str | None = None  # this sequence's embedding is NaN (an overflow)
    delay_s: float = 0.0  # seconds every embed_batch call takes
    barrier: tuple[str, int] | None = None  # (report folder, workers): the first batch waits for them all
    budgets: list[int] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)  # padded tokens of every embed_batch call

    def identity(self) -> dict[str, str]:
        return {"model": self.model, "dim": str(self.dim), "precision": "fp32"}

    def token_count(self, sequence: str) -> int:
        return len(sequence) + 2

    def padded(self, sequences: list[str]) -> int:
        return max(self.token_count(s) for s in sequences) * len(sequences)

    def make_batches(self, sequences: list[str], token_budget: int) -> list[list[int]]:
        self.budgets.append(token_budget)
        order = sorted(range(len(sequences)), key=lambda i: (-len(sequences[i]), i))
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            if current and self.padded([sequences[j] for j in current + [i]]) > token_budget:
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def embed_batch(self, sequences: list[str]) -> np.ndarray:
        padded = self.padded(sequences)
        self.calls.append(padded)
        if self.barrier is not None:
            folder, workers = self.barrier
            deadline = time.monotonic() + 60
            while len(list(Path(folder).glob("*.json"))) < workers and time.monotonic() < deadline:
                time.sleep(0.05)
            self.barrier = None
        time.sleep(self.delay_s)
        die_if_asked(sequences, self.die_on, self.marker, self.death)
        if self.fail_on in sequences:
            raise ValueError("model exploded")
        if (self.oom_above is not None and padded > self.oom_above) or any(s in self.oom_always for s in sequences):
            if self.oom_error == "torch":
                raise out_of_memory()
            raise RuntimeError("CUDA error: out of memory")
        return np.stack([np.full(self.dim, np.nan) if s == self.nan_on else fake_vector(s, self.dim) for s in sequences])


@dataclass
class FakeSpec:
    """Picklable "what to load" for spawned workers; ``load`` builds a FakeEmbedder."""

    model: str = "fake"
    stage: str = STAGE_ESM
    die_on: str | None = None
    marker: str | None = None
    death: str = "kill"
    load_error: str | None = None  # load raises ModelError with this message
    report_dir: str | None = None  # load writes <pid>.json with the device and CUDA_VISIBLE_DEVICES ...
    report_barrier: int = 0  # ... and the first batch waits (up to 60 s) until this many workers have reported
    delay_s: float = 0.0  # seconds every batch takes

    def load(self, device: str = "cpu") -> FakeEmbedder:
        if self.report_dir is not None:
            report = {"device": device, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
            Path(self.report_dir, f"{os.getpid()}.json").write_text(json.dumps(report))
        if self.load_error is not None:
            raise ModelError(self.load_error)
        embedder = FakeEmbedder(
            model=self.model, die_on=self.die_on, marker=self.marker, death=self.death, delay_s=self.delay_s
        )
        if self.report_barrier:  # in the first batch: the manager starts the other workers once this one loaded
            embedder.barrier = (self.report_dir, self.report_barrier)
        return embedder


def write_fasta(path: Path, records: list[tuple[str, str]]) -> Path:
    """Write ``records`` as FASTA and return ``path``."""
    path.write_text("".join(f">{rid}\n{seq}\n" for rid, seq in records))
    return path


def protein(seed: int, length: int) -> str:
    """A deterministic protein sequence."""
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=length))


class WrappedEmbedder(EmbedderWrapper):
    """A real embedder that can die on a sequence or hit a genuine allocator out-of-memory error."""

    def __init__(self, inner, die_on: str | None, marker: str | None, oom_above: int | None) -> None:
        super().__init__(inner)
        self.die_on, self.marker, self.oom_above = die_on, marker, oom_above

    def embed_batch(self, sequences: list[str]) -> np.ndarray:
        die_if_asked(sequences, self.die_on, self.marker)
        if self.oom_above is not None and max(map(self.token_count, sequences)) * len(sequences) > self.oom_above:
            import torch

            torch.empty(1 << 46, dtype=torch.uint8, device=self.inner.device)  # 64 TiB: a real OutOfMemoryError
        return self.inner.embed_batch(sequences)


@dataclass
class WrappedSpec:
    """Loads a real model from ``inner`` (an EsmSpec or DnaSpec) and wraps it in a WrappedEmbedder."""

    inner: object
    die_on: str | None = None
    marker: str | None = None
    oom_above: int | None = None

    @property
    def stage(self) -> str:
        return self.inner.stage  # type: ignore[attr-defined]

    def load(self, device: str = "cpu") -> WrappedEmbedder:
        inner = self.inner.load(device)  # type: ignore[attr-defined]
        return WrappedEmbedder(inner, self.die_on, self.marker, self.oom_above)
