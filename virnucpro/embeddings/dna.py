"""DNABERT-S nucleotide embeddings through transformers: loading, padded batching, mean pooling.

- **Model**: a Hugging Face hub id (default ``zhihan1996/DNABERT-S``, loaded with
  ``trust_remote_code=True``; downloaded once into the Hugging Face cache) or a local
  ``save_pretrained`` directory, through ``AutoTokenizer`` / ``AutoModel``.
- **Pooling**: as upstream, the mean of the last hidden state over ALL real tokens, [CLS] and
  [SEP] included; in a padded batch the padding is masked in attention and left out of the
  mean, so batched results equal one-at-a-time ones (fp32, within 1e-5). Computed in fp32.
- **Batching**: length-sorted batches of at most ``token_budget`` padded tokens (special tokens
  counted), the same rule as for ESM-2 (:func:`virnucpro.embeddings.batching.token_budget_batches`).
  On the CPU a batch is run in consecutive groups small enough for their activations to stay in
  cache (:func:`virnucpro.embeddings.batching.cpu_token_cap`): same numbers, faster.
- **Speed on the CPU**: on AVX-512 CPUs the model's ``nn.Linear`` layers run through oneDNN
  (:mod:`virnucpro.embeddings.cpu_linear`): same weights, fp32, faster than MKL there
  (docs/performance.md); elsewhere torch's BLAS.
- **Precision**: fp32 on the CPU; on CUDA the weights stay fp32 and the forward pass runs under
  ``torch.autocast`` in bf16/fp16. (DNABERT-S's plain PyTorch attention adds an fp32 ALiBi bias
  to the scores, which breaks a model cast wholesale to half precision; autocast does not.)

DNABERT-S remote code (DNABERT-2 architecture, MosaicBERT ``bert_layers.py``; it imports
``einops``, a dependency of this package for that reason) and what the loader does about it,
without uninstalling anything:

1. Its attention switches to a Triton flash-attention kernel whenever ``triton`` imports; that
   kernel fails with current Triton ("dot() got an unexpected keyword argument 'trans_b'").
   After loading, every module-level ``flash_attn_qkvpacked_func`` of the model's Python modules
   is set to None, which selects the code's own PyTorch attention path (:func:`use_pytorch_attention`).
2. Its ALiBi bias table is a plain tensor attribute built in ``__init__``. transformers 5 builds
   models on the meta device, where that construction fails ("Tensor on device meta is not on
   the expected device cpu"); the loader then builds the model class on the CPU instead
   (:func:`_eager_init`). After loading, ALiBi tables are rebuilt on the target device.
3. With transformers 4.x releases after 4.29 and DNABERT-S revisions from before its July 2024
   fix, ``AutoModel`` refuses the model ("config_class ... not consistent"); the loader retries
   with transformers' own ``BertConfig``, the workaround the DNABERT-2 authors give. (transformers
   5 compares config classes by name and does not raise this.)

Checked with transformers 5.24 and 4.40 (CI's `make test` and `make test-min`): the remote-code
loading path of ``AutoModel`` read against DNABERT-S's ``bert_layers.py`` as published in the
MAGICS-LAB/DNABERT_S repository (read, not copied), and run end to end on a local stand-in
module with the same patterns (tests/test_embeddings_dna.py: the meta-device failure, the kernel
switch, the tuple output and, loaded as a hub id from the local cache, the old revisions'
config class). Not checkable offline: the current hub revision of DNABERT-S and its real
weights (so no numeric comparison with upstream), and Triton on a GPU.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from virnucpro.contracts import STAGE_DNA
from virnucpro.embeddings.base import ModelShape, local_model_fingerprint
from virnucpro.embeddings.batching import cpu_token_cap, row_groups, token_budget_batches
from virnucpro.embeddings.cpu_linear import use_onednn_linears
from virnucpro.embeddings.precision import (
    dtype_name,
    is_cuda,
    load_checked,
    parity_candidates,
    probe_frames,
    resolve_dtype,
)
from virnucpro.embeddings.store import META_MODEL, META_PRECISION
from virnucpro.errors import InputError, ModelError, describe, raise_interruption_behind
from virnucpro.log import get_logger

log = get_logger("dna")

# Tokens per batch when --dna-batch-size is not given, CPU and GPU alike (the DNA stage is a small
# share of a run; no GPU measurement argues for another figure yet).
DNA_TOKEN_BUDGET = 8192
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class DnaEmbedder:
    """A loaded transformers model and tokenizer that turn DNA sequences into pooled float32 vectors.

    Safe to call from several threads at once (CPU batches side by side): the tokenizer, whose
    padding setting transformers changes on the shared Rust object at each call, is used by
    one thread at a time; the forward passes run in parallel.
    """

    stage = STAGE_DNA

    def __init__(
        self, model: nn.Module, tokenizer, name: str, device: str = "cpu", dtype: torch.dtype = torch.float32
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"
        self._tokenizer_lock = threading.Lock()
        self.name = name
        self.device = torch.device(device)
        self.dtype = dtype
        self.dim = int(model.config.hidden_size)
        self.default_token_budget = DNA_TOKEN_BUDGET
        widest = max((m.out_features for m in model.modules() if isinstance(m, nn.Linear)), default=1)
        self._cpu_tokens = cpu_token_cap(widest)

    def set_precision(self, dtype: torch.dtype) -> None:
        """Run in ``dtype`` from now on (on CUDA by autocast: the weights stay fp32)."""
        self.dtype = dtype

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

    def _tokenize(self, sequences: list[str], **options) -> dict:
        """The tokenizer's output for the uppercased ``sequences``, one thread at a time."""
        with self._tokenizer_lock:
            return self.tokenizer([s.upper() for s in sequences], **options)

    def _token_lengths(self, sequences: list[str]) -> list[int]:
        return [len(ids) for ids in self._tokenize(sequences, add_special_tokens=True)["input_ids"]]

    def token_count(self, sequence: str) -> int:
        """Tokens of this sequence, [CLS] and [SEP] included."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)  # fast tokenizers: skip the Python wrapper
        if backend is not None:
            with self._tokenizer_lock:
                return len(backend.encode(sequence.upper(), add_special_tokens=True).ids)
        return self._token_lengths([sequence])[0]

    def make_batches(self, sequences: list[str], token_budget: int) -> list[list[int]]:
        """Length-sorted batches of at most ``token_budget`` padded tokens."""
        lengths = self._token_lengths(sequences) if sequences else []
        return token_budget_batches([(1, n) for n in lengths], lengths, token_budget)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if is_cuda(self.device) and self.dtype != torch.float32:
            return torch.autocast(device_type="cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def embed_batch(self, sequences: list[str]) -> np.ndarray:
        """Mean-pooled embeddings, float32 ``[len(sequences), dim]``, in the given order."""
        if not sequences:
            return np.zeros((0, self.dim), dtype=np.float32)
        if any(not s for s in sequences):
            raise InputError("empty DNA sequence")
        encoded = self._tokenize(sequences, padding=True, return_tensors="pt")
        row_tokens = encoded["attention_mask"].sum(dim=1).tolist()
        if self.device.type == "cpu" and max(row_tokens) * len(row_tokens) > self._cpu_tokens:
            groups = row_groups(row_tokens, self._cpu_tokens)  # cache-sized pieces (padding is on the right)
        else:
            groups = [range(len(row_tokens))]
        pooled = [
            self._pooled({k: v[g.start : g.stop, : max(row_tokens[g.start : g.stop])] for k, v in encoded.items()})
            for g in groups
        ]
        return np.concatenate(pooled) if len(pooled) > 1 else pooled[0]

    def _pooled(self, encoded: dict[str, torch.Tensor]) -> np.ndarray:
        """Mean over the real tokens of one padded group, float32 ``[rows, dim]``."""
        inputs = {key: value.to(self.device) for key, value in encoded.items()}
        with torch.inference_mode():
            with self._autocast():
                output = self.model(**inputs)
            hidden = last_hidden_state(output).float()
            real = inputs["attention_mask"].bool()
            sums = hidden.masked_fill(~real[:, :, None], 0.0).sum(dim=1)
            pooled = sums / real.sum(dim=1, keepdim=True).float()
        return pooled.cpu().numpy().astype(np.float32, copy=False)


def last_hidden_state(output) -> torch.Tensor:
    """The last hidden state ``[batch, tokens, hidden]`` from a ModelOutput or a tuple (DNABERT-S)."""
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None:
        hidden = output[0]
    return hidden


# --------------------------------------------------------------------------- remote-code fixes


def use_pytorch_attention(model: nn.Module) -> set[str]:
    """Switch DNABERT-2/-S attention from its Triton kernel to its PyTorch path; returns the modules changed.

    The remote code picks the kernel through a module-level ``flash_attn_qkvpacked_func``
    (None when Triton did not import); setting it to None selects the PyTorch attention.
    """
    changed: set[str] = set()
    for module in model.modules():
        source = sys.modules.get(type(module).__module__)
        if source is not None and getattr(source, "flash_attn_qkvpacked_func", None) is not None:
            source.flash_attn_qkvpacked_func = None
            changed.add(source.__name__)
    return changed


def rebuild_alibi(model: nn.Module, device: str | torch.device) -> int:
    """Rebuild ALiBi bias tables (plain tensors that loading may leave on the meta device) on ``device``."""
    rebuilt = 0
    for module in model.modules():
        rebuild = getattr(module, "rebuild_alibi_tensor", None)
        size = getattr(module, "_current_alibi_size", None)
        if callable(rebuild) and isinstance(size, int):
            rebuild(size=size, device=torch.device(device))
            rebuilt += 1
    return rebuilt


def _eager_init(model_class: type) -> type:
    """``model_class`` built on the CPU rather than on transformers 5's meta device."""

    class EagerInit(model_class):  # type: ignore[misc, valid-type]
        @classmethod
        def get_init_context(cls, *args, **kwargs):
            contexts = super().get_init_context(*args, **kwargs)
            return [c for c in contexts if not (isinstance(c, torch.device) and c.type == "meta")]

    EagerInit.__name__ = EagerInit.__qualname__ = model_class.__name__
    EagerInit.__module__ = model_class.__module__
    return EagerInit


# --------------------------------------------------------------------------- loading


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No progress bars while loading (they would clutter worker logs)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _from_pretrained(source: str, config=None, **hub) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    extra = {} if config is None else {"config": config}
    try:
        return AutoModel.from_pretrained(source, trust_remote_code=True, **extra, **hub)
    except (RuntimeError, NotImplementedError) as error:
        if "meta" not in str(error):
            raise
        first_error = error
    config = config if config is not None else AutoConfig.from_pretrained(source, trust_remote_code=True, **hub)
    class_ref = (getattr(config, "auto_map", None) or {}).get("AutoModel")
    if class_ref is None:
        raise first_error
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    log.debug("%s cannot be built on the meta device; building it on the CPU", source)
    model_class = get_class_from_dynamic_module(class_ref, source, **hub)
    return _eager_init(model_class).from_pretrained(source, config=config, **hub)


def _load_network(source: str, **hub) -> nn.Module:
    try:
        return _from_pretrained(source, **hub)
    except ValueError as error:
        if "config_class" not in str(error):
            raise
    from transformers import BertConfig

    return _from_pretrained(source, BertConfig.from_pretrained(source, **hub), **hub)


def _load_tokenizer_and_network(source: str, **hub) -> tuple[object, nn.Module]:
    from transformers import AutoTokenizer

    with quiet_transformers():
        return AutoTokenizer.from_pretrained(source, trust_remote_code=True, **hub), _load_network(source, **hub)


def _hub_snapshot(source: str) -> str | None:
    """The local Hugging Face cache's snapshot directory of a hub id (None when not cached)."""
    if Path(source).is_dir():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "config.json")
    except Exception as error:  # noqa: BLE001  (no usable cache: load as usual)
        raise_interruption_behind(error)
        return None
    return str(Path(cached).parent) if isinstance(cached, str) else None


def _in_hub_cache(source: str) -> bool:
    """A hub id whose files are in the local Hugging Face cache: it loads without asking the hub
    (offline, the hub client would retry for half a minute per file before using the cache)."""
    return _hub_snapshot(source) is not None


def model_fingerprint(source: str) -> str:
    """:func:`local_model_fingerprint` of a local directory, or of a hub id's cached snapshot
    (with its revision), so ``--resume`` notices a new revision too."""
    snapshot = _hub_snapshot(source)
    if snapshot is None:
        return local_model_fingerprint(source)
    return f"revision {Path(snapshot).name}, {local_model_fingerprint(snapshot)}"


def resolve_dna_source(model: str) -> str:
    """A local directory (resolved) or a hub id; a path that does not exist is a ModelError.

    ``org/name`` is a hub id unless ``org`` is a local directory (and the hub id is not in the
    local cache): then it was meant as a path.
    """
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(
                f"{model}: a DNA model is a directory in transformers' save_pretrained layout (with config.json) "
                f"or a hub id"
            )
        return str(path.resolve())
    if not _HUB_ID.fullmatch(model) or ("/" in model and path.parent.is_dir() and not _in_hub_cache(model)):
        raise ModelError(f"{model}: DNA model directory not found")
    return model


def _load_error(model: str, source: str, error: BaseException) -> ModelError:
    if Path(source).is_dir():
        return ModelError(f"{model}: cannot load this DNA model directory ({describe(error, typed=True)})")
    return ModelError(
        f"cannot load DNA model {model!r} ({describe(error, typed=True, limit=200)}); it is downloaded once into "
        f"the Hugging Face cache: on an offline machine, fetch it first where there is network with `hf download {model}` "
        f"(same HF_HOME; then set HF_HUB_OFFLINE=1), or pass a local save_pretrained directory"
    )


def load_dna_embedder(model: str, device: str = "cpu", precision: str = "auto") -> DnaEmbedder:
    """Load a DNA model once (hub id or local directory) on ``device``; errors are one-line ModelErrors.

    ``precision`` auto on a GPU: half precision only after the parity check of
    :mod:`virnucpro.embeddings.precision`.
    """
    source = resolve_dna_source(model)
    loaded = None
    if _in_hub_cache(source):
        try:
            loaded = _load_tokenizer_and_network(source, local_files_only=True)
        except Exception as error:  # noqa: BLE001  (a file missing from the cache: the hub completes it below)
            raise_interruption_behind(error)
            log.debug("%s: not complete in the local cache (%s); asking the hub", source, describe(error))
    if loaded is None:
        try:
            loaded = _load_tokenizer_and_network(source)
        except Exception as error:  # noqa: BLE001  (network, missing files, incompatible code: all model errors)
            raise _load_error(model, source, error) from None
    tokenizer, network = loaded
    if tokenizer.pad_token is None:
        raise ModelError(f"{model}: the DNA tokenizer has no padding token")
    changed = use_pytorch_attention(network)
    if changed:
        log.debug("Triton flash attention disabled in %s: PyTorch attention", ", ".join(sorted(changed)))
    network = network.to(device).eval()
    rebuild_alibi(network, device)

    def load(dtype: torch.dtype) -> DnaEmbedder:  # the weights stay fp32 (autocast): nothing is reloaded
        if torch.device(device).type == "cpu" and dtype == torch.float32:
            use_onednn_linears(network)  # same weights and numbers, faster GEMMs on AVX-512 CPUs
        log.debug("DNA model %s loaded on %s (%s)", source, device, dtype_name(dtype))
        return DnaEmbedder(network, tokenizer, source, device=device, dtype=dtype)

    candidates = parity_candidates(precision, device)
    if candidates:
        return load_checked(load, candidates, [nucleotide for nucleotide, _ in probe_frames()], f"DNA model on {device}")
    return load(resolve_dtype(precision, device))


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class DnaSpec:
    """A DNA model to load (a hub id or a local ``save_pretrained`` directory) and its precision.

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
        """A path that does not exist, or is not a model directory, is a one-line ModelError."""
        resolve_dna_source(self.model)

    def load(self, device: str = "cpu") -> DnaEmbedder:
        """Load the model on ``device``; call once per process."""
        return load_dna_embedder(self.model, device=device, precision=self.precision)

    def shape(self) -> ModelShape | None:
        """The hidden size from the transformers ``config.json`` (a local directory, or the hub cache).

        Never goes to the network: offline, the hub's retries would cost half a minute for a check
        that the embedding files repeat anyway.
        """
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(self.model, trust_remote_code=True, local_files_only=True)
            return ModelShape(int(config.hidden_size))
        except Exception as error:  # noqa: BLE001  (offline without a cache, or no config: checked later)
            raise_interruption_behind(error)
            return None
