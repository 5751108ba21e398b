"""What every embedding model offers to the worker engine and the pipeline: a :class:`ModelSpec`
(what to load, checked and measured without loading) and an :class:`Embedder` (the loaded model).

This module imports no model module: each model's module implements these protocols."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    """A loaded embedding model (one per process, loaded once).

    The engine owns files, deduplication, out-of-memory retries and failure
    accounting; an embedder only turns sequences into pooled float32 vectors.
    """

    stage: str
    """Stage name for failure lines: contracts.STAGE_ESM or contracts.STAGE_DNA."""

    dim: int
    """Width of one embedding vector."""

    default_token_budget: int
    """Tokens per batch when the caller gives no budget (may depend on the device)."""

    def identity(self) -> dict[str, str]:
        """What determines the numbers (model, layer, precision): stored with outputs for --resume."""

    def token_count(self, sequence: str) -> int:
        """Tokens one sequence costs in a batch (special tokens included)."""

    def make_batches(self, sequences: list[str], token_budget: int) -> list[list[int]]:
        """Group sequence indices into length-sorted batches of at most ``token_budget`` padded tokens.

        Every index appears exactly once; a sequence longer than the budget gets a batch alone.
        """

    def embed_batch(self, sequences: list[str]) -> np.ndarray:
        """Pooled embeddings, float32 ``[len(sequences), dim]``, in the given order.

        Raises torch.OutOfMemoryError (or a RuntimeError mentioning "out of memory") when
        the batch does not fit; the caller retries with smaller batches.
        """


class EmbedderWrapper:
    """Passes the Embedder protocol through to ``inner``; subclasses override ``embed_batch``
    to observe or alter model calls (timing in benchmarks, failure injection in tests)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.stage, self.dim, self.default_token_budget = inner.stage, inner.dim, inner.default_token_budget

    def identity(self) -> dict[str, str]:
        return self.inner.identity()

    def token_count(self, sequence: str) -> int:
        return self.inner.token_count(sequence)

    def make_batches(self, sequences: list[str], token_budget: int) -> list[list[int]]:
        return self.inner.make_batches(sequences, token_budget)

    def embed_batch(self, sequences: list[str]) -> np.ndarray:
        return self.inner.embed_batch(sequences)


@dataclass(frozen=True)
class ModelShape:
    """Width of the pooled embedding and, for ESM-2, the number of layers."""

    dim: int
    layers: int | None = None


class ModelSpec(Protocol):
    """What to load, as plain picklable data, so spawned workers can load the model themselves.

    One frozen class per model implements it: ``EsmSpec`` (:mod:`virnucpro.embeddings.esm`)
    and ``DnaSpec`` (:mod:`virnucpro.embeddings.dna`). ``str(spec)`` names the model for log lines.
    """

    @property
    def stage(self) -> str:
        """Stage name for failure lines (contracts.STAGE_ESM, contracts.STAGE_DNA), known before loading."""

    @property
    def model(self) -> str:
        """The model as the user named it (a path or a name)."""

    def check(self) -> None:
        """Refuse, before any work and without loading, a model that cannot be found (a one-line ModelError)."""

    def load(self, device: str = "cpu") -> Embedder:
        """Load the model on ``device`` ("cpu" or "cuda:N"); called once per process."""

    def shape(self) -> ModelShape | None:
        """The embedding's width (and depth), read without loading the model; None when that is not cheap.

        ``predict`` checks the classifier against it before any embedding work, so a mismatch
        costs seconds, not hours of GPU time; otherwise the check happens after embedding,
        from the embedding files (classify).
        """


def local_model_fingerprint(model: str) -> str:
    """The files of a local model file or directory: count, bytes and a digest of each file's
    relative path and content ("" when ``model`` is not a local path). Hidden files and folders
    (``.git``, ``.cache``) are not the model and are left out.

    Stored in the embedders' identity, so ``--resume`` notices a model replaced under the same
    name, one file at a time, even with its old dates. Each file's content digest is computed
    once per version of the file (:func:`virnucpro.embeddings.file_digest.cached_sha256`).
    """
    import hashlib
    import os

    from virnucpro.embeddings.file_digest import cached_sha256

    path = os.path.expanduser(model)
    if os.path.isfile(path):
        files = [path]
    elif os.path.isdir(path):
        files = []
        for root, directories, names in os.walk(path):
            directories[:] = [d for d in directories if not d.startswith(".")]  # .git, .cache: not the model
            files.extend(os.path.join(root, name) for name in names if not name.startswith("."))
        files.sort()
    else:
        return ""
    listing = hashlib.sha256()
    total = 0
    for name in files:
        total += os.stat(name).st_size
        listing.update(f"{os.path.relpath(name, path)}\0{cached_sha256(name)}\n".encode())
    return f"{len(files)} files, {total} bytes, content sha256 {listing.hexdigest()[:16]}"
