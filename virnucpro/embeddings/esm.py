"""ESM-2 protein embeddings through fair-esm: loading, token-budget batching, mean pooling.

- **Model**: a fair-esm name (``esm2_t36_3B_UR50D``; downloaded once into the torch hub cache,
  ``$TORCH_HOME/hub/checkpoints``) or a local ``*.pt`` file with its ``*-contact-regression.pt``
  beside it (fair-esm's own local loader). Representation layer: the final one by default.
- **Pooling**: the mean of the chosen layer over residue positions ``1..len`` (BOS, EOS and
  padding excluded), computed in float32 whatever the model's precision.
- **Batching**: length-sorted batches of at most ``token_budget`` padded tokens, as fair-esm's
  ``FastaBatchedDataset.get_batch_indices`` (BOS and EOS counted); a sequence longer than the
  budget gets a batch of its own. Batched results equal one-sequence-per-batch ones (fp32,
  within 1e-5): padding is masked in attention and excluded from the mean.
- **Long proteins**: ESM-2 was trained on at most 1024 positions (1022 residues + BOS/EOS).
  A longer protein is split into ``ceil(len / 1022)`` consecutive windows of near-equal length
  (no overlap, each <= 1022 residues); each window is embedded on its own (with its own BOS/EOS)
  and the protein's embedding is the residue-weighted mean of the window means, i.e. the mean
  over all its residues of their per-window representations. Proteins up to 1022 residues are
  embedded whole, exactly as upstream.
- **Precision**: fp32 on the CPU; on CUDA the model is cast to bf16/fp16 (see
  :mod:`virnucpro.embeddings.precision`) except its rotary position tables, which are computed
  in fp32 and then cast (bf16 cannot represent positions above 256 exactly).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from virnucpro.contracts import STAGE_ESM
from virnucpro.embeddings.precision import dtype_name, resolve_dtype
from virnucpro.errors import InputError, ModelError
from virnucpro.log import get_logger

log = get_logger("esm")

MAX_RESIDUES = 1022  # ESM-2's 1024 positions minus BOS and EOS
_SPECIAL_TOKENS = 2  # BOS (<cls>) and EOS


# --------------------------------------------------------------------------- batching (shared with dna.py)


def token_budget_batches(
    shapes: Sequence[tuple[int, int]], sort_keys: Sequence[int], token_budget: int
) -> list[list[int]]:
    """Length-sorted batches of at most ``token_budget`` padded tokens.

    ``shapes[i] = (rows, row_tokens)``: sequence ``i`` occupies ``rows`` rows of ``row_tokens``
    tokens (one row unless it is split into windows). A batch costs ``max row_tokens * total rows``.
    Sequences are taken in order of ``(sort_keys[i], i)``; a sequence that does not fit closes the
    current batch (fair-esm's rule), so one bigger than the budget ends up alone.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    rows_in_batch = widest = 0
    for index in sorted(range(len(shapes)), key=lambda i: (sort_keys[i], i)):
        rows, row_tokens = shapes[index]
        if current and max(widest, row_tokens) * (rows_in_batch + rows) > token_budget:
            batches.append(current)
            current, rows_in_batch, widest = [], 0, 0
        current.append(index)
        rows_in_batch += rows
        widest = max(widest, row_tokens)
    if current:
        batches.append(current)
    return batches


def split_windows(sequence: str, max_residues: int = MAX_RESIDUES) -> list[str]:
    """Consecutive, non-overlapping windows of near-equal length, each at most ``max_residues`` long."""
    count = max(1, -(-len(sequence) // max_residues))
    base, extra = divmod(len(sequence), count)
    windows, start = [], 0
    for number in range(count):
        size = base + (1 if number < extra else 0)
        windows.append(sequence[start : start + size])
        start += size
    return windows


# --------------------------------------------------------------------------- the embedder


class EsmEmbedder:
    """A loaded fair-esm model that turns protein sequences into pooled float32 vectors."""

    stage = STAGE_ESM

    def __init__(
        self,
        model: nn.Module,
        alphabet,
        name: str,
        layer: int,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        max_residues: int = MAX_RESIDUES,
    ) -> None:
        self.model = model.eval()
        self.alphabet = alphabet
        self.name = name
        self.layer = layer
        self.device = torch.device(device)
        self.dtype = dtype
        self.max_residues = max_residues
        self.dim = int(model.embed_dim)
        self._converter = alphabet.get_batch_converter()
        self._residues = frozenset(tok for tok in alphabet.standard_toks if len(tok) == 1)

    def identity(self) -> dict[str, str]:
        """Model, layer, precision and pooling: what determines the numbers."""
        return {
            "kind": "esm",
            "model": self.name,
            "layer": str(self.layer),
            "precision": dtype_name(self.dtype),
            "dim": str(self.dim),
            "pooling": "mean over residues (BOS/EOS excluded)",
            "max_residues": str(self.max_residues),
        }

    def _shape(self, sequence: str) -> tuple[int, int]:
        windows = -(-len(sequence) // self.max_residues) if sequence else 1
        widest = -(-len(sequence) // windows)
        return windows, widest + _SPECIAL_TOKENS

    def token_count(self, sequence: str) -> int:
        """Padded tokens this sequence costs alone (all its windows, BOS/EOS included)."""
        rows, row_tokens = self._shape(sequence)
        return rows * row_tokens

    def make_batches(self, sequences: list[str], token_budget: int) -> list[list[int]]:
        """Length-sorted batches of at most ``token_budget`` padded tokens (see token_budget_batches)."""
        return token_budget_batches([self._shape(s) for s in sequences], [len(s) for s in sequences], token_budget)

    def _check(self, sequence: str) -> str:
        sequence = sequence.upper()
        if not sequence:
            raise InputError("empty protein sequence")
        invalid = set(sequence) - self._residues
        if invalid:
            raise InputError(f"protein sequence has invalid residue(s) {''.join(sorted(invalid))!r}")
        return sequence

    def embed_batch(self, sequences: list[str]) -> np.ndarray:
        """Mean-pooled embeddings, float32 ``[len(sequences), dim]``, in the given order."""
        if not sequences:
            return np.zeros((0, self.dim), dtype=np.float32)
        pieces: list[str] = []
        owners: list[int] = []
        for index, sequence in enumerate(sequences):
            for window in split_windows(self._check(sequence), self.max_residues):
                pieces.append(window)
                owners.append(index)
        _labels, _strs, tokens = self._converter([("", piece) for piece in pieces])
        tokens = tokens.to(self.device)
        with torch.inference_mode():
            hidden = self.model(tokens, repr_layers=[self.layer])["representations"][self.layer].float()
            lengths = torch.tensor([len(p) for p in pieces], device=self.device)
            positions = torch.arange(tokens.shape[1], device=self.device)
            residues = (positions[None, :] >= 1) & (positions[None, :] <= lengths[:, None])
            sums = hidden.masked_fill(~residues[:, :, None], 0.0).sum(dim=1)
            owner_index = torch.tensor(owners, device=self.device)
            totals = torch.zeros(len(sequences), self.dim, device=self.device).index_add_(0, owner_index, sums)
            counts = torch.zeros(len(sequences), device=self.device).index_add_(0, owner_index, lengths.float())
            pooled = totals / counts[:, None]
        return pooled.cpu().numpy().astype(np.float32, copy=False)


# --------------------------------------------------------------------------- loading


def allow_esm_checkpoints() -> None:
    """Let torch's weights-only unpickler (default since torch 2.6) read fair-esm checkpoints.

    fair-esm checkpoints store their configuration as an ``argparse.Namespace``; nothing else
    is added to the allow-list.
    """
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:
        add_safe_globals([argparse.Namespace])


def known_model_names() -> list[str]:
    """fair-esm's pretrained ESM-1/ESM-2 names (the functions of ``esm.pretrained``)."""
    import esm

    return sorted(name for name in dir(esm.pretrained) if re.fullmatch(r"esm(1[bv]?|2)_t\d+\w*", name))


def _hub_dir() -> str:
    return f"{torch.hub.get_dir()}/checkpoints"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _load_fair_esm(model: str) -> tuple[nn.Module, object, str]:
    """(network, alphabet, name recorded in the metadata) for a fair-esm name or a local .pt path."""
    import esm

    allow_esm_checkpoints()
    if model.endswith(".pt"):
        path = Path(model).expanduser()
        regression = path.with_name(f"{path.stem}-contact-regression.pt")
        if not path.is_file():
            raise ModelError(f"{model}: ESM model file not found")
        if not regression.is_file() and not re.search("esm1v|esm_if", path.stem):
            raise ModelError(
                f"{model}: fair-esm needs {regression.name} beside the model file "
                f"(download both from https://dl.fbaipublicfiles.com/fair-esm/)"
            )
        try:
            network, alphabet = esm.pretrained.load_model_and_alphabet_local(str(path))
        except Exception as error:  # noqa: BLE001  (any failure to read the checkpoint is a model error)
            raise ModelError(
                f"{model}: cannot load this ESM checkpoint ({_first_line(error)}); keep fair-esm's file name "
                f"(e.g. esm2_t36_3B_UR50D.pt) and its -contact-regression.pt beside it"
            ) from None
        return network, alphabet, str(path.resolve())
    if model not in known_model_names():
        raise ModelError(
            f"unknown ESM model {model!r}: use a fair-esm name (e.g. esm2_t36_3B_UR50D, esm2_t33_650M_UR50D) "
            f"or a local .pt file"
        )
    try:
        network, alphabet = esm.pretrained.load_model_and_alphabet_hub(model)
    except Exception as error:  # noqa: BLE001  (no network, truncated download, ...)
        raise ModelError(
            f"cannot load ESM model {model!r} ({_first_line(error)}); it is downloaded once into {_hub_dir()}: "
            f"on an offline machine, fetch it first where there is network with "
            f"`python -c \"import esm; esm.pretrained.{model}()\"` (same TORCH_HOME), or pass the local .pt path"
        ) from None
    return network, alphabet, model


def _resolve_layer(layer: int | None, num_layers: int, name: str) -> int:
    if layer is None:
        return num_layers
    resolved = layer + num_layers + 1 if layer < 0 else layer
    if not 0 <= resolved <= num_layers:
        raise ModelError(f"ESM layer {layer} does not exist in {name} (layers 0..{num_layers}, or -1 for the last)")
    return resolved


def cast_model(model: nn.Module, device: str, dtype: torch.dtype) -> nn.Module:
    """Move ``model`` to ``device`` in ``dtype``, keeping rotary position tables exact (fp32, then cast)."""
    from esm.rotary_embedding import RotaryEmbedding

    rotary = {m: m.inv_freq.detach().float().clone() for m in model.modules() if isinstance(m, RotaryEmbedding)}
    model = model.to(device=device, dtype=dtype)
    if dtype == torch.float32:
        return model
    for module, inv_freq in rotary.items():
        module.inv_freq = inv_freq.to(device)
        module._update_cos_sin_tables = _tables_in_input_dtype(module._update_cos_sin_tables)
    return model


def _tables_in_input_dtype(compute_tables):
    def update(x: torch.Tensor, seq_dimension: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = compute_tables(x, seq_dimension=seq_dimension)
        return cos.to(x.dtype), sin.to(x.dtype)

    return update


def load_esm_embedder(
    model: str, layer: int | None = None, device: str = "cpu", precision: str = "auto"
) -> EsmEmbedder:
    """Load a fair-esm model once (name or local ``.pt``) on ``device``; errors are one-line ModelErrors."""
    dtype = resolve_dtype(precision, device)
    network, alphabet, name = _load_fair_esm(model)
    resolved = _resolve_layer(layer, int(network.num_layers), model)
    network = cast_model(network.eval(), device, dtype)
    log.debug("ESM model %s loaded on %s (%s, layer %d)", name, device, dtype_name(dtype), resolved)
    return EsmEmbedder(network, alphabet, name, resolved, device=device, dtype=dtype)
