"""Small helpers shared by several test modules (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from virnucpro.embeddings.base import ModelSpec


def model_spec(kind: str, model: str, **options) -> ModelSpec:
    """The spec of the ``esm`` or ``dna`` model ``model`` (for tests run over both models)."""
    from virnucpro.embeddings.dna import DnaSpec
    from virnucpro.embeddings.esm import EsmSpec

    return {"esm": EsmSpec, "dna": DnaSpec}[kind](model, **options)


@contextlib.contextmanager
def captured_log(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """INFO records of the ``virnucpro`` logger into caplog, even after setup_logging stopped propagation."""
    logger = logging.getLogger("virnucpro")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # caplog's handler is attached here: no second copy through the root
    try:
        yield
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)
        logger.propagate = propagate


def model_args(models) -> list[str]:
    """The options that make predict use the tiny test models, quietly."""
    return [
        "--classifier", str(models.classifier),
        "--esm-model", str(models.esm),
        "--dna-model", str(models.dna),
        "--quiet",
    ]  # fmt: skip


def read_tsv(path: Path) -> list[dict[str, str]]:
    """A tab-separated table with a header, as one dict per row."""
    header, *rows = [line.split("\t") for line in path.read_text().splitlines()]
    return [dict(zip(header, row)) for row in rows]
