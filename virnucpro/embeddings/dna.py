"""DNABERT-S nucleotide embeddings: loading, batching, mean pooling, on our own DNABERT-2 code.

- **Model**: a Hugging Face hub id (default ``zhihan1996/DNABERT-S``; its config, tokenizer and
  weights, no code files, are downloaded once into the Hugging Face cache by huggingface_hub,
  which honours ``HF_HUB_OFFLINE``) or a local directory in the same layout. The folder is read
  as data (:mod:`virnucpro.embeddings.dnabert_files`): ``config.json``, the weights as tensors
  (``model.safetensors``, or ``pytorch_model.bin`` through ``torch.load(weights_only=True)``)
  and ``tokenizer.json``. No code from the folder or the hub runs: the ``auto_map`` of
  DNABERT-S's ``config.json`` (its ``bert_layers.py``) is ignored, and the network is our own
  implementation of DNABERT-2 (or classic BERT), :mod:`virnucpro.embeddings.dnabert`, checked
  against the published ``bert_layers.py`` to float rounding. transformers is not used.
- **Pooling**: as upstream, the mean of the last hidden state over ALL real tokens, [CLS] and
  [SEP] included; in a padded batch the padding is masked in attention and left out of the
  mean, so batched results equal one-at-a-time ones (fp32, within 1e-5). Computed in fp32.
- **Batching**: length-sorted batches of at most ``token_budget`` padded tokens (special tokens
  counted), the same rule as for ESM-2 (:func:`virnucpro.embeddings.batching.token_budget_batches`).
  On the CPU a batch is run in consecutive groups small enough for their activations to stay in
  cache (:func:`virnucpro.embeddings.batching.cpu_token_cap`): same numbers, faster. Linear
  layers run through :func:`virnucpro.embeddings.cpu_linear.linear` (oneDNN on AVX-512 CPUs).
- **Packed batches** (``packed=True`` or ``VIRNUCPRO_DNA_PACKED=1``): all tokens of a batch in one
  unpadded row; on CUDA in half precision the attention is FlashAttention's variable-length
  kernel with ALiBi slopes when the optional ``flash_attn`` package is installed (classic BERT:
  torch's own varlen kernel), else padded for the attention only. By default (``packed=None``)
  packed exactly where that kernel runs, padded elsewhere (the CPU always).
- **Precision**: in half precision (bf16/fp16 on CUDA, bf16 on a CPU with bf16 instructions) the
  weights stay fp32 and the forward pass runs under ``torch.autocast`` (LayerNorms and the pooling
  in fp32); fp32 otherwise.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from virnucpro.contracts import STAGE_DNA
from virnucpro.embeddings.base import ModelShape, local_model_fingerprint
from virnucpro.embeddings.batching import cpu_token_cap, row_groups, token_budget_batches
from virnucpro.embeddings.dnabert import DnaBert, encoder_forward, flash_alibi_runs, packed_encoder_forward
from virnucpro.embeddings.dnabert_files import (
    WEIGHT_FILES,
    hub_cache_snapshot,
    hub_snapshot,
    inspect_model_folder,
    load_model_folder,
)
from virnucpro.embeddings.esm_forward import flash_varlen_runs, unpadded_layout
from virnucpro.embeddings.precision import (
    dtype_name,
    load_checked,
    parity_candidates,
    probe_frames,
    resolve_dtype,
)
from virnucpro.embeddings.store import META_MODEL, META_PRECISION
from virnucpro.errors import InputError, ModelError, describe
from virnucpro.log import get_logger

log = get_logger("dna")

# Tokens per batch when --dna-batch-size is not given, CPU and GPU alike (the DNA stage is a small
# share of a run; no GPU measurement argues for another figure yet).
DNA_TOKEN_BUDGET = 8192
PACKED_ENV = "VIRNUCPRO_DNA_PACKED"
_PAD_ID = 0  # what fills padded places: never attended to, never pooled
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class DnaEmbedder:
    """A DNABERT-2 (or BERT) model and its tokenizer that turn DNA sequences into pooled float32 vectors.

    Safe to call from several threads at once (CPU batches side by side): the tokenizer is only
    read after loading, and the forward passes share nothing but the weights.
    """

    stage = STAGE_DNA

    def __init__(
        self,
        model: DnaBert,
        tokenizer,
        name: str,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        packed: bool | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.device = torch.device(device)
        self.dtype = dtype
        self.dim = model.shape.hidden
        self.packed = packed_from_environment() if packed is None else packed
        self.default_token_budget = DNA_TOKEN_BUDGET
        self._cpu_tokens = cpu_token_cap(max(m.out_features for m in model.modules() if isinstance(m, nn.Linear)))

    def set_precision(self, dtype: torch.dtype) -> None:
        """Run in ``dtype`` from now on (by autocast: the weights stay fp32)."""
        self.dtype = dtype

    @property
    def uses_packed(self) -> bool:
        """Whether batches run unpadded now: as forced, else where a variable-length attention kernel runs."""
        if self.packed is not None:
            return self.packed
        if self.model.shape.alibi:
            return flash_alibi_runs(self.device, self.dtype)
        return flash_varlen_runs(self.device, self.dtype)

    def identity(self) -> dict[str, str]:
        """Model, precision and pooling: what determines the numbers."""
        return {
            "kind": "dna",
            META_MODEL: self.name,
            "model_files": model_fingerprint(self.name),
            META_PRECISION: dtype_name(self.dtype),
            "dim": str(self.dim),
            "pooling": "mean over all tokens ([CLS] and [SEP] included)",
        }

    def encode(self, sequences: list[str]) -> list[list[int]]:
        """Token ids of the uppercased ``sequences``, [CLS] and [SEP] included."""
        return [encoding.ids for encoding in self.tokenizer.encode_batch([s.upper() for s in sequences])]

    def token_count(self, sequence: str) -> int:
        """Tokens of this sequence, [CLS] and [SEP] included."""
        return len(self.tokenizer.encode(sequence.upper()).ids)

    def make_batches(self, sequences: list[str], token_budget: int) -> list[list[int]]:
        """Length-sorted batches of at most ``token_budget`` padded tokens."""
        lengths = [len(ids) for ids in self.encode(sequences)] if sequences else []
        return token_budget_batches([(1, n) for n in lengths], lengths, token_budget)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype != torch.float32:  # bf16/fp16 on a GPU, bf16 on a CPU that has it
            return torch.autocast(device_type=self.device.type, dtype=self.dtype)
        return contextlib.nullcontext()

    def embed_batch(self, sequences: list[str]) -> np.ndarray:
        """Mean-pooled embeddings, float32 ``[len(sequences), dim]``, in the given order."""
        if not sequences:
            return np.zeros((0, self.dim), dtype=np.float32)
        if any(not s for s in sequences):
            raise InputError("empty DNA sequence")
        rows = self.encode(sequences)
        limit = self.model.shape.max_positions
        if limit is not None and max(map(len, rows)) > limit:
            raise InputError(f"DNA sequence of {max(map(len, rows))} tokens; the model has {limit} positions")
        if self.device.type == "cpu":  # cache-sized groups of rows (same numbers, faster)
            groups = row_groups([len(ids) for ids in rows], self._cpu_tokens)
        else:
            groups = [range(len(rows))]
        forward = self._packed_sums if self.uses_packed else self._padded_sums
        with torch.inference_mode():
            sums = torch.cat([forward(rows[g.start : g.stop]) for g in groups])
            lengths = torch.tensor([len(ids) for ids in rows], device=sums.device)
            pooled = sums / lengths[:, None].float()
        return pooled.cpu().numpy().astype(np.float32, copy=False)

    def _padded_sums(self, rows: list[list[int]]) -> torch.Tensor:
        """fp32 sums of the last hidden state over each row's tokens, the rows padded on the right."""
        lengths = [len(ids) for ids in rows]
        tokens = np.full((len(rows), max(lengths)), _PAD_ID, dtype=np.int64)
        for row, ids in enumerate(rows):
            tokens[row, : len(ids)] = ids
        tokens_t = torch.from_numpy(tokens).to(self.device)
        lengths_t = torch.tensor(lengths, device=self.device)
        with self._autocast():
            hidden = encoder_forward(self.model, tokens_t, lengths_t)
        real = torch.arange(tokens.shape[1], device=self.device)[None, :] < lengths_t[:, None]
        return hidden.float().masked_fill(~real[:, :, None], 0.0).sum(dim=1)

    def _packed_sums(self, rows: list[list[int]]) -> torch.Tensor:
        """As :meth:`_padded_sums`, computed on all rows' tokens in one unpadded row."""
        lengths = np.array([len(ids) for ids in rows], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)])
        flat = np.fromiter((t for ids in rows for t in ids), dtype=np.int64, count=int(starts[-1]))
        positions = np.arange(len(flat)) - np.repeat(starts[:-1], lengths)
        device, widest = self.device, int(lengths.max())
        starts_t = torch.from_numpy(starts).to(device=device, dtype=torch.int32)
        with self._autocast():
            hidden = packed_encoder_forward(
                self.model, torch.from_numpy(flat).to(device), torch.from_numpy(positions).to(device), starts_t, widest
            )
        # each token's row to (row, position) of a padded buffer, summed per row: a fixed order on
        # every device (index_add_ on CUDA adds in whatever order)
        row, column, _keep = unpadded_layout(starts_t, widest)
        buffer = torch.zeros(len(rows), widest, self.dim, device=device)
        buffer[row, column] = hidden.float()
        return buffer.sum(dim=1)


def packed_from_environment() -> bool | None:
    """``VIRNUCPRO_DNA_PACKED=1`` forces packed (unpadded) batches, ``0`` padded ones; unset: None (choose)."""
    value = os.environ.get(PACKED_ENV, "").strip().lower()
    return None if not value else value in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------- loading


def model_fingerprint(source: str) -> str:
    """:func:`local_model_fingerprint` of a local directory, or of a hub id's cached snapshot
    (with its revision), so ``--resume`` notices a new revision too."""
    if Path(source).is_dir():
        return local_model_fingerprint(source)
    snapshot = hub_cache_snapshot(source)
    if snapshot is None:
        return local_model_fingerprint(source)
    return f"revision {snapshot.name}, {local_model_fingerprint(str(snapshot))}"


def resolve_dna_source(model: str) -> str:
    """A local directory (resolved) or a hub id, checked as far as it is on this machine: a local
    directory's (or a cached hub id's) files must be a model this package runs, read without
    loading the weights (:func:`virnucpro.embeddings.dnabert_files.inspect_model_folder`).
    Every problem is a one-line ModelError.

    ``org/name`` is a hub id unless ``org`` is a local directory (and the hub id is not in the
    local cache): then it was meant as a path.
    """
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(
                f"{model}: a DNA model is a directory in Hugging Face's layout (config.json, tokenizer.json, "
                f"weights) or a hub id"
            )
        inspect_model_folder(path, model)
        return str(path.resolve())
    cached = hub_cache_snapshot(model) if _HUB_ID.fullmatch(model) else None
    if not _HUB_ID.fullmatch(model) or ("/" in model and path.parent.is_dir() and cached is None):
        raise ModelError(f"{model}: DNA model directory not found")
    if cached is not None and _has_weights(cached):
        inspect_model_folder(cached, model)
    return model


def _has_weights(directory: Path) -> bool:
    return any((directory / name).is_file() for name in WEIGHT_FILES)


def _hub_error(model: str, error: BaseException) -> ModelError:
    return ModelError(
        f"cannot load DNA model {model!r} ({describe(error, typed=True, limit=200)}); it is downloaded once into "
        f"the Hugging Face cache: on an offline machine, fetch it first where there is network with `hf download {model}` "
        f"(same HF_HOME; then set HF_HUB_OFFLINE=1), or pass a local directory with its files"
    )


def _load_model(model: str) -> tuple[DnaBert, object, str]:
    """(network on the CPU in fp32, tokenizer, source) of a hub id or a local directory; ModelErrors."""
    source = resolve_dna_source(model)
    if Path(source).is_dir():
        directory = Path(source)
    else:
        try:
            directory = hub_snapshot(source)
        except Exception as error:  # noqa: BLE001  (network, missing files, offline without a cache: model errors)
            raise _hub_error(model, error) from None
    network, tokenizer = load_model_folder(directory, model)
    return network, tokenizer, source


def load_dna_embedder(
    model: str, device: str = "cpu", precision: str = "auto", packed: bool | None = None
) -> DnaEmbedder:
    """Load a DNA model once (hub id or local directory) on ``device``; errors are one-line ModelErrors.

    ``precision`` auto on a GPU: half precision only after the parity check of
    :mod:`virnucpro.embeddings.precision`. ``packed``: unpadded batches (see the module docstring).
    """
    network, tokenizer, source = _load_model(model)
    network = network.to(device)

    def load(dtype: torch.dtype) -> DnaEmbedder:  # the weights stay fp32 (autocast): nothing is reloaded
        log.debug("DNA model %s (%s) loaded on %s (%s)", source, network.shape.architecture, device, dtype_name(dtype))
        return DnaEmbedder(network, tokenizer, source, device=device, dtype=dtype, packed=packed)

    candidates = parity_candidates(precision, device)
    if candidates:
        return load_checked(load, candidates, [nucleotide for nucleotide, _ in probe_frames()], f"DNA model on {device}")
    return load(resolve_dtype(precision, device))


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class DnaSpec:
    """A DNA model to load (a hub id or a local model folder) and its precision.

    Implements :class:`~virnucpro.embeddings.base.ModelSpec`: plain picklable data that spawned
    workers load on their own device.
    """

    model: str
    precision: str = "auto"
    stage: ClassVar[str] = STAGE_DNA

    def __str__(self) -> str:
        """For log lines: ``DNA model zhihan1996/DNABERT-S (precision auto)``."""
        return f"DNA model {self.model} (precision {self.precision})"

    def check(self) -> None:
        """A path that does not exist, or is not a model folder we implement, is a one-line ModelError."""
        resolve_dna_source(self.model)

    def load(self, device: str = "cpu") -> DnaEmbedder:
        """Load the model on ``device``; call once per process."""
        return load_dna_embedder(self.model, device=device, precision=self.precision)

    def shape(self) -> ModelShape | None:
        """The hidden size from the model's ``config.json`` (a local directory, or the hub cache), read
        as JSON: never goes to the network and never runs code from the model folder."""
        from virnucpro.embeddings.dnabert_files import cached_config

        hidden = (cached_config(self.model) or {}).get("hidden_size")
        return ModelShape(hidden) if isinstance(hidden, int) and not isinstance(hidden, bool) and hidden > 0 else None
