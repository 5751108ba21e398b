"""ESM-2 protein embeddings through fair-esm: loading, token-budget batching, mean pooling.

- **Model**: a fair-esm name (``esm2_t36_3B_UR50D``; downloaded once into the torch hub cache,
  ``$TORCH_HOME/hub/checkpoints``) or a local ``*.pt`` file with its ``*-contact-regression.pt``
  beside it (fair-esm's own local loader). Representation layer: the final one by default.
- **Pooling**: the mean of the chosen layer over residue positions ``1..len`` (BOS, EOS and
  padding excluded), computed in float32 whatever the model's precision.
- **Batching**: length-sorted batches of at most ``token_budget`` padded tokens, as fair-esm's
  ``FastaBatchedDataset.get_batch_indices`` (BOS and EOS counted); a sequence longer than the
  budget gets a batch of its own. Batched results equal one-sequence-per-batch ones (fp32,
  within 1e-5): padding is masked in attention and excluded from the mean. On the CPU a batch
  runs in cache-sized groups of rows (:func:`virnucpro.embeddings.batching.cpu_token_cap`).
- **Long proteins**: ESM-2 was trained on at most 1024 positions (1022 residues + BOS/EOS).
  A longer protein is split into ``ceil(len / 1022)`` consecutive windows of near-equal length
  (no overlap, each <= 1022 residues); each window is embedded on its own (with its own BOS/EOS)
  and the protein's embedding is the residue-weighted mean of the window means, i.e. the mean
  over all its residues of their per-window representations. Proteins up to 1022 residues are
  embedded whole, exactly as upstream.
- **Forward pass** (:mod:`virnucpro.embeddings.esm_forward`): fair-esm's layers and weights,
  run by :func:`encoder_forward` rather than ``ESM2.forward`` (SDPA attention, fused GELU,
  oneDNN linears on AVX-512 CPUs, no LM head, stops at the pooled layer): equal to fair-esm's
  forward within 1e-5 in fp32, and faster on the CPU (docs/performance.md). Optional packed
  (unpadded) batches: :func:`packed_encoder_forward`.
- **Precision**: fp32 on the CPU; on CUDA the model is cast to bf16/fp16 (see
  :mod:`virnucpro.embeddings.precision`; ``auto`` only after a parity check) except its rotary position tables, which are computed
  in fp32 and then cast (bf16 cannot represent positions above 256 exactly).
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from virnucpro.contracts import STAGE_ESM
from virnucpro.embeddings.base import ModelShape, local_model_fingerprint
from virnucpro.embeddings.batching import cpu_token_cap, row_groups, token_budget_batches  # noqa: F401  (re-exported)
from virnucpro.embeddings.esm_forward import (
    encoder_forward,
    flash_varlen_available,
    flash_varlen_runs,
    fused_qkv,
    packed_encoder_forward,
)
from virnucpro.embeddings.precision import dtype_name, load_checked, parity_candidates, probe_frames, resolve_dtype
from virnucpro.embeddings.store import META_LAYER, META_MODEL, META_PRECISION
from virnucpro.errors import InputError, ModelError, describe, raise_interruption_behind
from virnucpro.log import get_logger

log = get_logger("esm")

MAX_RESIDUES = 1022  # ESM-2's 1024 positions minus BOS and EOS
_SPECIAL_TOKENS = 2  # BOS (<cls>) and EOS
PACKED_ENV = "VIRNUCPRO_ESM_PACKED"
# Tokens per batch when --esm-batch-size is not given, by "on a GPU": the reference's 2,048 on the
# CPU (bigger batches are cut into cache-sized row groups there anyway); 65,536 on a GPU, where
# small batches leave it underused (docs/performance.md).
ESM_TOKEN_BUDGET_CPU = 2048
ESM_TOKEN_BUDGET_GPU = 65536
# fair-esm's ESM-2 models by layer count (esm2_t{layers}_...): width of the representations.
ESM2_WIDTHS = {6: 320, 12: 480, 30: 640, 33: 1280, 36: 2560, 48: 5120}
_Residues = TypeVar("_Residues", str, np.ndarray)


def split_windows(sequence: _Residues, max_residues: int = MAX_RESIDUES) -> list[_Residues]:
    """Consecutive, non-overlapping windows of near-equal length, each at most ``max_residues`` long.

    ``sequence`` is a string or an array of token ids (windows are then views of it).
    """
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
    """A loaded fair-esm model that turns protein sequences into pooled float32 vectors.

    The forward pass (:func:`encoder_forward`) runs fair-esm's own layers and weights, but not
    its ``ESM2.forward``: batch-first, one fused query/key/value product (:func:`fused_qkv`),
    rotary embeddings without the concatenation, ``scaled_dot_product_attention`` with the
    padding as a key mask, the exact GELU and the residual additions fused into the matrix
    products (oneDNN on AVX-512 CPUs, see :mod:`virnucpro.embeddings.cpu_linear`), only the layers up
    to the chosen one, no language-model head or contact computation. Residues are tokenised
    with a lookup table. It equals fair-esm's forward within 1e-5 in fp32 at every layer
    (tests/test_fast_forward.py, tests/test_embeddings_esm.py).

    ``packed=True`` runs every batch unpadded (all tokens of all sequences in one row, per-token
    rotary positions, attention per sequence); on CUDA the attention is FlashAttention's
    variable-length kernel (``torch.nn.attention.varlen``, half precision; where it cannot run, a
    warning and padded attention per sequence). ``packed=None`` (the default) decides per batch:
    packed where that kernel runs (CUDA, bf16/fp16, Ampere or newer: faster there,
    docs/performance.md), padded elsewhere; ``VIRNUCPRO_ESM_PACKED=1`` or ``0`` forces either.
    """

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
        packed: bool | None = None,
    ) -> None:
        self.model = model.eval()
        self.alphabet = alphabet
        self.name = name
        self.layer = layer
        self.device = torch.device(device)
        self.dtype = dtype
        self.max_residues = max_residues
        self.dim = int(model.embed_dim)
        self.packed = packed_from_environment() if packed is None else packed
        self.default_token_budget = ESM_TOKEN_BUDGET_GPU if self.device.type == "cuda" else ESM_TOKEN_BUDGET_CPU
        if self.packed and self.device.type == "cuda" and not flash_varlen_available(self.device.index or 0):
            log.warning("packed ESM-2 batches: FlashAttention's variable-length kernel cannot run here (torch >= 2.9 "
                        "and an Ampere or newer GPU needed); attention falls back to padded rows (same numbers, slower)")
        self._converter = alphabet.get_batch_converter()
        self._residues = frozenset(tok for tok in alphabet.standard_toks if len(tok) == 1)
        self._codes = _residue_codes(alphabet, self._residues)
        self._cpu_tokens = cpu_token_cap(max(block.fc1.out_features for block in model.layers) if model.layers else 1)
        for block in model.layers:
            fused_qkv(block.self_attn)

    def set_precision(self, dtype: torch.dtype) -> None:
        """Cast the model to ``dtype`` in place (from fp32 to half is one-way: load again for fp32)."""
        self.model = cast_model(self.model, str(self.device), dtype)
        self.dtype = dtype
        for block in self.model.layers:
            fused_qkv(block.self_attn)  # rebuilt now, so the fp32 copy is freed at once

    @property
    def uses_packed(self) -> bool:
        """Whether batches run unpadded now: as forced, else where FlashAttention's varlen kernel runs."""
        if self.packed is not None:
            return self.packed
        return flash_varlen_runs(self.device, self.dtype)

    def identity(self) -> dict[str, str]:
        """Model, layer, precision and pooling: what determines the numbers."""
        return {
            "kind": "esm",
            META_MODEL: self.name,
            "model_files": local_model_fingerprint(self.name) or local_model_fingerprint(hub_checkpoint(self.name)),
            META_LAYER: str(self.layer),
            META_PRECISION: dtype_name(self.dtype),
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

    def _encode(self, sequence: str) -> np.ndarray:
        """Token ids of one protein's residues (upper or lower case); InputError for anything else."""
        if not sequence:
            raise InputError("empty protein sequence")
        raw = np.frombuffer(sequence.encode("utf-8", "replace"), dtype=np.uint8)
        codes = self._codes[raw]
        if len(raw) != len(sequence) or (codes < 0).any():
            invalid = set(sequence.upper()) - self._residues
            raise InputError(f"protein sequence has invalid residue(s) {''.join(sorted(invalid))!r}")
        return codes

    def _pieces(self, sequences: list[str]) -> tuple[list[np.ndarray], list[int]]:
        """Token ids of every window (residues only) and the index of the sequence each belongs to."""
        pieces: list[np.ndarray] = []
        owners: list[int] = []
        for index, sequence in enumerate(sequences):
            codes = self._encode(sequence)
            for window in split_windows(codes, self.max_residues):
                pieces.append(window)
                owners.append(index)
        return pieces, owners

    def embed_batch(self, sequences: list[str]) -> np.ndarray:
        """Mean-pooled embeddings, float32 ``[len(sequences), dim]``, in the given order."""
        if not sequences:
            return np.zeros((0, self.dim), dtype=np.float32)
        pieces, owners = self._pieces(sequences)
        if self.device.type == "cpu":  # cache-sized groups of rows (same numbers, faster)
            groups = row_groups([len(p) + _SPECIAL_TOKENS for p in pieces], self._cpu_tokens)
        else:
            groups = [range(len(pieces))]
        forward = self._packed_sums if self.uses_packed else self._padded_sums
        with torch.inference_mode():
            parts = [forward(pieces[g.start : g.stop]) for g in groups]
            sums = torch.cat([part[0] for part in parts]) if len(parts) > 1 else parts[0][0]
            lengths = torch.cat([part[1] for part in parts]) if len(parts) > 1 else parts[0][1]
            totals = _sum_rows_by_owner(sums, owners, len(sequences))
            counts = _sum_rows_by_owner(lengths.float()[:, None], owners, len(sequences))
            pooled = totals / counts
        return pooled.cpu().numpy().astype(np.float32, copy=False)

    # -- padded batches ------------------------------------------------------------------
    def _padded_tokens(self, pieces: list[np.ndarray]) -> torch.Tensor:
        """``[rows, widest + 2]`` token ids: BOS, residues, EOS, then padding (fair-esm's layout)."""
        alphabet = self.alphabet
        tokens = np.full((len(pieces), max(map(len, pieces)) + _SPECIAL_TOKENS), alphabet.padding_idx, np.int64)
        tokens[:, 0] = alphabet.cls_idx
        for row, piece in enumerate(pieces):
            tokens[row, 1 : len(piece) + 1] = piece
            tokens[row, len(piece) + 1] = alphabet.eos_idx
        return torch.from_numpy(tokens).to(self.device)

    def _padded_sums(self, pieces: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per window: the fp32 sum of the chosen layer over its residues, and its residue count."""
        tokens = self._padded_tokens(pieces)
        hidden = encoder_forward(self.model, tokens, self.layer).float()
        lengths = torch.tensor([len(p) for p in pieces], device=self.device)
        positions = torch.arange(tokens.shape[1], device=self.device)
        residues = (positions[None, :] >= 1) & (positions[None, :] <= lengths[:, None])
        return hidden.masked_fill(~residues[:, :, None], 0.0).sum(dim=1), lengths

    # -- packed batches ------------------------------------------------------------------
    def _packed_sums(self, pieces: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`_padded_sums`, computed on all windows' tokens in one unpadded row."""
        alphabet = self.alphabet
        lengths = np.array([len(p) for p in pieces], dtype=np.int64)
        spans = lengths + _SPECIAL_TOKENS
        starts = np.concatenate([[0], np.cumsum(spans)])
        flat = np.empty(int(starts[-1]), dtype=np.int64)
        for piece, start, length in zip(pieces, starts[:-1], lengths):
            flat[start] = alphabet.cls_idx
            flat[start + 1 : start + 1 + length] = piece
            flat[start + 1 + length] = alphabet.eos_idx
        positions = np.arange(len(flat)) - np.repeat(starts[:-1], spans)
        window = np.repeat(np.arange(len(pieces)), spans)
        is_residue = (positions >= 1) & (positions <= np.repeat(lengths, spans))
        device = self.device
        hidden = packed_encoder_forward(
            self.model,
            torch.from_numpy(flat).to(device),
            torch.from_numpy(positions).to(device),
            torch.from_numpy(starts).to(device=device, dtype=torch.int32),
            int(spans.max()),
            self.layer,
        ).float()
        # Each residue's row goes to (window, residue position) of a padded buffer, summed per
        # window: a fixed order on every device (index_add_ on CUDA adds in whatever order).
        residue_rows = torch.from_numpy(np.flatnonzero(is_residue)).to(device)
        buffer = torch.zeros(len(pieces), int(lengths.max()), self.dim, device=device)
        where = (torch.from_numpy(window[is_residue]).to(device), torch.from_numpy(positions[is_residue] - 1).to(device))
        buffer[where] = hidden.index_select(0, residue_rows)
        return buffer.sum(dim=1), torch.from_numpy(lengths).to(device)


def _sum_rows_by_owner(rows: torch.Tensor, owners: list[int], count: int) -> torch.Tensor:
    """``[count, width]``: the rows of each owner added up (owners are ascending and contiguous).

    Deterministic on every device: the rows are placed in a padded ``[count, most, width]``
    buffer and summed over its middle axis (index_add_ on CUDA adds in whatever order arrives).
    """
    if len(owners) == count:  # one row per owner: nothing to add
        return rows
    owner = np.asarray(owners)
    first = np.searchsorted(owner, owner)  # index of each owner's first row
    slot = np.arange(len(owner)) - first
    buffer = rows.new_zeros(count, int(slot.max()) + 1, rows.shape[1])
    buffer[torch.from_numpy(owner).to(rows.device), torch.from_numpy(slot).to(rows.device)] = rows
    return buffer.sum(dim=1)


def packed_from_environment() -> bool | None:
    """``VIRNUCPRO_ESM_PACKED=1`` forces the packed (unpadded) forward, ``0`` the padded one; unset: None (choose)."""
    value = os.environ.get(PACKED_ENV, "").strip().lower()
    return None if not value else value in ("1", "true", "yes", "on")


def _residue_codes(alphabet, residues: frozenset[str]) -> np.ndarray:
    """Byte -> token id for every residue letter (either case); -1 for every other byte."""
    codes = np.full(256, -1, dtype=np.int64)
    for letter in residues:
        codes[ord(letter.upper())] = codes[ord(letter.lower())] = alphabet.get_idx(letter)
    return codes


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


def hub_checkpoint(name: str) -> str:
    """Where fair-esm keeps the downloaded weights of a model name (the torch hub cache)."""
    return f"{_hub_dir()}/{name}.pt"


def check_esm_model(model: str) -> None:
    """Refuse, without loading anything, a ``--esm-model`` that cannot work: a missing ``.pt`` file,
    one without its contact-regression file, or a name fair-esm does not know (one-line ModelError)."""
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
    elif model not in known_model_names():
        raise ModelError(
            f"unknown ESM model {model!r}: use a fair-esm name (e.g. esm2_t36_3B_UR50D, esm2_t33_650M_UR50D) "
            f"or a local .pt file"
        )


ZIP_LOCAL_HEADER = b"PK\x03\x04"
PICKLE_PROTOCOL_OPCODE = b"\x80"  # how torch's legacy format (pickle protocol 2) begins
FAIR_ESM_URL = "https://dl.fbaipublicfiles.com/fair-esm/models/{name}.pt"


def check_checkpoint_file(path: Path, model: str) -> None:
    """Refuse a checkpoint that cannot load, reading its index only: empty, truncated (a zip without
    its directory, or whose entries run past its end), or without fair-esm's ``model`` weights."""
    import zipfile

    def refuse(why: str) -> ModelError:
        return ModelError(f"{path}: cannot load this ESM checkpoint ({why}); download it again")

    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(4)
    if size == 0:
        raise refuse("an empty file")
    if head[:1] == PICKLE_PROTOCOL_OPCODE:
        return  # torch's legacy format (a pickle stream): read by the loader only
    if head != ZIP_LOCAL_HEADER:
        raise refuse("not a torch checkpoint")
    try:
        with zipfile.ZipFile(path) as archive:
            ends = [info.header_offset + info.compress_size for info in archive.infolist()]
    except (zipfile.BadZipFile, OSError) as error:
        raise refuse(f"truncated or damaged: {describe(error)}") from None
    if max(ends, default=0) > size:
        raise refuse("truncated")
    allow_esm_checkpoints()
    try:
        data = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise_interruption_behind(error)
        if "weights only" in str(error).lower():
            return  # a checkpoint the weights-only reader refuses: fair-esm's own loader decides
        raise refuse(f"damaged: {describe(error, typed=True, limit=200)}") from None
    if not path.stem.endswith("-contact-regression") and not (isinstance(data, dict) and isinstance(data.get("model"), dict)):
        raise refuse("not a fair-esm checkpoint: no 'model' weights")


def check_downloadable(name: str, timeout_s: float = 10.0) -> None:
    """Refuse a fair-esm name that is not in the torch hub cache when its download cannot be reached."""
    import urllib.error
    import urllib.request

    url = FAIR_ESM_URL.format(name=name)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s):
            pass
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise ModelError(
            f"cannot load ESM model {name!r}: not in {_hub_dir()} and {url} cannot be reached ({reason}); "
            f"{_offline_hint(name)}"
        ) from None


def _offline_hint(name: str) -> str:
    return (
        f"on an offline machine, fetch it first where there is network with "
        f"`python -c \"import esm; esm.pretrained.{name}()\"` (same TORCH_HOME), or pass the local .pt path"
    )


def _load_fair_esm(model: str) -> tuple[nn.Module, object, str]:
    """(network, alphabet, name recorded in the metadata) for a fair-esm name or a local .pt path."""
    import esm

    allow_esm_checkpoints()
    check_esm_model(model)
    if model.endswith(".pt"):
        path = Path(model).expanduser()
        try:
            network, alphabet = esm.pretrained.load_model_and_alphabet_local(str(path))
        except Exception as error:  # noqa: BLE001  (any failure to read the checkpoint is a model error)
            raise ModelError(
                f"{model}: cannot load this ESM checkpoint ({describe(error, typed=True)}); keep fair-esm's file name "
                f"(e.g. esm2_t36_3B_UR50D.pt) and its -contact-regression.pt beside it"
            ) from None
        return network, alphabet, str(path.resolve())
    try:
        network, alphabet = esm.pretrained.load_model_and_alphabet_hub(model)
    except Exception as error:  # noqa: BLE001  (no network, truncated download, ...)
        raise ModelError(
            f"cannot load ESM model {model!r} ({describe(error, typed=True, limit=200)}); it is downloaded once into "
            f"{_hub_dir()}: {_offline_hint(model)}"
        ) from None
    return network, alphabet, model


def resolve_layer(layer: int | None, num_layers: int, name: str) -> int:
    """``--esm-layer`` as a layer number (None: the last; negative: from the end); ModelError if absent."""
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
    model: str, layer: int | None = None, device: str = "cpu", precision: str = "auto", packed: bool | None = None
) -> EsmEmbedder:
    """Load a fair-esm model once (name or local ``.pt``) on ``device``; errors are one-line ModelErrors.

    ``precision`` auto on a GPU: half precision only after the parity check of
    :mod:`virnucpro.embeddings.precision`. ``packed``: unpadded batches (see :class:`EsmEmbedder`);
    None reads ``VIRNUCPRO_ESM_PACKED``, else chooses per batch.
    """

    def load(dtype: torch.dtype) -> EsmEmbedder:
        network, alphabet, name = _load_fair_esm(model)
        resolved = resolve_layer(layer, int(network.num_layers), model)
        network = cast_model(network.eval(), device, dtype)
        log.debug("ESM model %s loaded on %s (%s, layer %d)", name, device, dtype_name(dtype), resolved)
        return EsmEmbedder(network, alphabet, name, resolved, device=device, dtype=dtype, packed=packed)

    candidates = parity_candidates(precision, device)
    if candidates:
        return load_checked(load, candidates, [protein for _, protein in probe_frames()], f"ESM-2 on {device}")
    return load(resolve_dtype(precision, device))


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class EsmSpec:
    """An ESM-2 model to load (a fair-esm name or a local ``.pt``), its layer and precision.

    Implements :class:`~virnucpro.embeddings.base.ModelSpec`: plain picklable data that spawned
    workers load on their own device.
    """

    model: str
    layer: int | None = None  # None: the final layer; negative: from the end
    precision: str = "auto"
    stage: ClassVar[str] = STAGE_ESM

    def __str__(self) -> str:
        """For log lines: ``ESM-2 model esm2_t36_3B_UR50D (layer 36, precision auto)``."""
        layer = f"layer {self.layer}, " if self.layer is not None else ""
        return f"ESM-2 model {self.model} ({layer}precision {self.precision})"

    def check(self) -> None:
        """Before any work: a missing, truncated or unreadable checkpoint (or contact-regression file),
        an unknown name, or a name neither in the torch hub cache nor downloadable now, is a one-line
        ModelError (workers would otherwise find it after prepare and the whole DNA stage)."""
        check_esm_model(self.model)
        if self.model.endswith(".pt"):
            path = Path(self.model).expanduser()
            for file in (path, path.with_name(f"{path.stem}-contact-regression.pt")):
                if file.is_file():
                    check_checkpoint_file(file, self.model)
        elif Path(hub_checkpoint(self.model)).is_file():
            check_checkpoint_file(Path(hub_checkpoint(self.model)), self.model)
        else:
            check_downloadable(self.model)

    def load(self, device: str = "cpu") -> EsmEmbedder:
        """Load the model on ``device``; call once per process."""
        return load_esm_embedder(self.model, layer=self.layer, device=device, precision=self.precision)

    def shape(self) -> ModelShape | None:
        """From a fair-esm ESM-2 name (its ``t{layers}``) or a local ``.pt`` (its stored config, memory-mapped)."""
        if self.model.endswith(".pt"):
            return _checkpoint_shape(Path(self.model).expanduser())
        match = re.fullmatch(r"esm2_t(\d+)_\w+", self.model)
        if match and int(match.group(1)) in ESM2_WIDTHS:
            layers = int(match.group(1))
            return ModelShape(ESM2_WIDTHS[layers], layers)
        return None


def _checkpoint_shape(path: Path) -> ModelShape | None:
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
