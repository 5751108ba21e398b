"""The interface every embedding model offers to the worker engine and the pipeline."""

from __future__ import annotations

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


class EmbedderSpec:
    """What to load, as plain picklable data, so spawned workers can load the model themselves."""

    def __init__(self, kind: str, model: str, layer: int | None = None, precision: str = "auto") -> None:
        if kind not in ("esm", "dna"):
            raise ValueError(f"unknown embedder kind {kind!r}")
        self.kind = kind
        self.model = model
        self.layer = layer
        self.precision = precision

    def __repr__(self) -> str:
        return f"EmbedderSpec({self.kind!r}, {self.model!r}, layer={self.layer!r}, precision={self.precision!r})"

    def __str__(self) -> str:
        """For log lines: ``ESM-2 model esm2_t36_3B_UR50D (layer 36, precision auto)``."""
        what = "ESM-2 model" if self.kind == "esm" else "DNA model"
        layer = f"layer {self.layer}, " if self.layer is not None else ""
        return f"{what} {self.model} ({layer}precision {self.precision})"

    def check(self) -> None:
        """Refuse, before any work and without loading, a model that cannot be found: a missing
        path or an unknown name is a one-line ModelError."""
        if self.kind == "esm":
            from virnucpro.embeddings.esm import check_esm_model

            check_esm_model(self.model)
        else:
            from virnucpro.embeddings.dna import resolve_dna_source

            resolve_dna_source(self.model)

    def load(self, device: str = "cpu") -> Embedder:
        """Load the model on ``device`` ("cpu" or "cuda:N"); call once per process."""
        if self.kind == "esm":
            from virnucpro.embeddings.esm import load_esm_embedder

            return load_esm_embedder(self.model, layer=self.layer, device=device, precision=self.precision)
        from virnucpro.embeddings.dna import load_dna_embedder

        return load_dna_embedder(self.model, device=device, precision=self.precision)


def local_model_fingerprint(model: str) -> str:
    """The files of a local model file or directory: count, bytes and a digest of each file's
    relative path, size and modification time ("" when ``model`` is not a local path). Hidden
    files and folders (``.git``, ``.cache``) are not the model and are left out.

    Stored in the embedders' identity, so ``--resume`` notices a model replaced under the same
    name, one file at a time (weights copied over with their old dates too). Cheap: the files
    are listed, not read.
    """
    import hashlib
    import os

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
        stat = os.stat(name)
        total += stat.st_size
        listing.update(f"{os.path.relpath(name, path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return f"{len(files)} files, {total} bytes, listing sha256 {listing.hexdigest()[:16]}"
