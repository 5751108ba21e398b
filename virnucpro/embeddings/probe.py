"""Embedding widths (and ESM-2 depth) read without loading a model.

`predict` checks the classifier against them before any embedding work, so a mismatch costs
seconds, not hours of GPU time. Anything that cannot be read cheaply gives None; the check
then happens after embedding, from the embedding files (classify).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from virnucpro.errors import raise_interruption_behind

# fair-esm's ESM-2 models by layer count (esm2_t{layers}_...): width of the representations.
ESM2_WIDTHS = {6: 320, 12: 480, 30: 640, 33: 1280, 36: 2560, 48: 5120}


@dataclass(frozen=True)
class ModelShape:
    """Width of the pooled embedding and, for ESM-2, the number of layers."""

    dim: int
    layers: int | None = None


def esm_shape(model: str) -> ModelShape | None:
    """Shape of a fair-esm name (from its ``t{layers}``) or a local ``.pt`` (its stored config, memory-mapped)."""
    if model.endswith(".pt"):
        return _esm_checkpoint_shape(Path(model).expanduser())
    match = re.fullmatch(r"esm2_t(\d+)_\w+", model)
    if match and int(match.group(1)) in ESM2_WIDTHS:
        layers = int(match.group(1))
        return ModelShape(ESM2_WIDTHS[layers], layers)
    return None


def _esm_checkpoint_shape(path: Path) -> ModelShape | None:
    import torch

    from virnucpro.embeddings.esm import allow_esm_checkpoints

    if not path.is_file():
        return None  # the loader reports it, with the fix
    allow_esm_checkpoints()
    try:
        data = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        cfg = data["cfg"]["model"]
        return ModelShape(int(cfg.encoder_embed_dim), int(cfg.encoder_layers))
    except Exception as error:  # noqa: BLE001  (not readable this way: checked after embedding instead)
        raise_interruption_behind(error)
        return None


def dna_shape(model: str) -> ModelShape | None:
    """Hidden size from a DNA model's ``config.json`` (a local directory, or the hub cache), read as JSON.

    Never goes to the network (offline, the hub's retries would cost half a minute for a check
    that the embedding files repeat anyway) and never runs code from the model folder.
    """
    from virnucpro.embeddings.dnabert_files import cached_config

    hidden = (cached_config(model) or {}).get("hidden_size")
    return ModelShape(hidden) if isinstance(hidden, int) and not isinstance(hidden, bool) and hidden > 0 else None
