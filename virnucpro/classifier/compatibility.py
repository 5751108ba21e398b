"""Whether a classifier fits the embeddings it is given: dimensions, chunk length, models, layer."""

from __future__ import annotations

import re
from pathlib import Path

from virnucpro.classifier.model import ClassifierMeta
from virnucpro.errors import ModelError
from virnucpro.log import get_logger

log = get_logger("classifier")

_MODEL_SUFFIXES = (".pt", ".pth")


def model_name_key(name: str) -> str:
    """How model names are compared: the last path component, without .pt/.pth, case-insensitive.

    ``zhihan1996/DNABERT-S``, ``/models/DNABERT-S`` and a Hugging Face cache snapshot
    ``.../models--zhihan1996--DNABERT-S/snapshots/<rev>`` all give ``dnabert-s``;
    ``esm2_t36_3B_UR50D`` and ``/data/esm2_t36_3B_UR50D.pt`` both give ``esm2_t36_3b_ur50d``.
    """
    text = name.strip().replace("\\", "/").rstrip("/")
    hub_cache = re.search(r"models--[^/]*--([^/]+)/snapshots/[^/]+$", text)
    if hub_cache:
        text = hub_cache.group(1)
    base = text.rsplit("/", 1)[-1]
    for suffix in _MODEL_SUFFIXES:
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
    return base.lower()


def check_compatible(
    meta: ClassifierMeta,
    *,
    dna_dim: int,
    esm_dim: int,
    chunk_length: int | None = None,
    dna_model: str | None = None,
    esm_model: str | None = None,
    esm_layer: int | None = None,
    source: Path | str | None = None,
) -> None:
    """Refuse features the classifier was not trained on (one-line ModelError).

    Dimensions are always compared; chunk length and ESM layer only when both the checkpoint
    and the caller name them. Differing model names (see :func:`model_name_key`) only warn,
    since a local copy of the right model may be named anything. Callers should
    pass the resolved ESM layer (not None for "final") so the check can apply.
    """
    named = str(source or meta.path or meta.source or "")
    # A file name leads the message; a description (e.g. "virnucpro make-test-models ...") is labelled.
    where = f"{named}: " if named.lower().endswith(_MODEL_SUFFIXES) else f"classifier ({named}): " if named else ""
    if (dna_dim, esm_dim) != (meta.dna_dim, meta.esm_dim):
        raise ModelError(
            f"{where}classifier expects DNA {meta.dna_dim}-d + protein {meta.esm_dim}-d features, "
            f"but the embedding models give {dna_dim}-d + {esm_dim}-d"
        )
    if chunk_length is not None and meta.chunk_length is not None and chunk_length != meta.chunk_length:
        raise ModelError(
            f"{where}classifier was trained on {meta.chunk_length} bp chunks, not --chunk-length {chunk_length}"
        )
    for label, ours, theirs in (("DNA", dna_model, meta.dna_model), ("ESM", esm_model, meta.esm_model)):
        if ours and theirs and model_name_key(ours) != model_name_key(theirs):
            # A warning, not an error: a local copy of the right model may have any directory name.
            log.warning("%sclassifier was trained on %s model '%s', not '%s'", where, label, theirs, ours)
    if esm_layer is not None and meta.esm_layer is not None and esm_layer != meta.esm_layer:
        raise ModelError(f"{where}classifier was trained on ESM layer {meta.esm_layer}, not layer {esm_layer}")
