"""A DNA model folder read as data: ``config.json``, the weights as tensors, ``tokenizer.json``. No code runs.

A folder in Hugging Face's layout (a local directory, or the snapshot of a hub id in the local
Hugging Face cache) holding:

- ``config.json``: DNABERT-2's keys (``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``,
  ``intermediate_size``, ``layer_norm_eps``, ``vocab_size``, ``type_vocab_size``; classic BERT also
  ``max_position_embeddings``, ``hidden_act`` and ``position_embedding_type``). Its ``auto_map``,
  which names Python files of the folder (DNABERT-S's ``bert_layers.py``), is ignored: those
  files are never imported, and a hub id's are not even downloaded.
- the weights: ``model.safetensors`` (its JSON header and raw tensor data, :func:`read_safetensors`) or ``pytorch_model.bin`` (read with
  ``torch.load(weights_only=True)``, which builds tensors and refuses any other object), under
  DNABERT-2's published names (``encoder.layer.N.attention.self.Wqkv``, ``...mlp.gated_layers``,
  ...) or classic BERT's, with or without a ``bert.`` prefix; the pooler and heads are not used.
- ``tokenizer.json``: the tokenizer, read by the ``tokenizers`` library (DNABERT-S: BPE with
  ``[CLS] ... [SEP]`` added by its post-processor).

Which of the two architectures of :mod:`virnucpro.embeddings.dnabert` a folder holds is told
by its weight names; their shapes must match ``config.json``. Anything else is a one-line
ModelError naming the folder.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch

from virnucpro.embeddings.dnabert import BertShape, DnaBert, build_model
from virnucpro.errors import ModelError, describe, raise_interruption_behind

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # the first present is read
# What a hub id's snapshot needs (no code files): fetched with huggingface_hub's snapshot_download.
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", *WEIGHT_FILES)

# Published names (after an optional "bert." prefix) -> ours (virnucpro.embeddings.dnabert.DnaBert).
# Classic BERT's query, key and value are fused into our "qkv" after renaming.
_RENAMES = [
    (r"embeddings\.word_embeddings\.", "embeddings.word."),
    (r"embeddings\.token_type_embeddings\.", "embeddings.token_type."),
    (r"embeddings\.position_embeddings\.", "embeddings.position."),
    (r"embeddings\.LayerNorm\.", "embeddings.norm."),
    (r"encoder\.layer\.(\d+)\.attention\.self\.Wqkv\.", r"layers.\1.qkv."),
    (r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.", r"layers.\1.\2."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.attn_out."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"layers.\1.attn_norm."),
    (r"encoder\.layer\.(\d+)\.mlp\.gated_layers\.", r"layers.\1.mlp_in."),
    (r"encoder\.layer\.(\d+)\.mlp\.wo\.", r"layers.\1.mlp_out."),
    (r"encoder\.layer\.(\d+)\.mlp\.layernorm\.", r"layers.\1.mlp_norm."),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.mlp_in."),
    (r"encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.mlp_out."),
    (r"encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"layers.\1.mlp_norm."),
]
_UNUSED = re.compile(r"(pooler|cls)\..*|embeddings\.(position_ids|token_type_ids)")  # heads and buffers
_OLD_NORM_NAMES = {".gamma": ".weight", ".beta": ".bias"}  # LayerNorm names of old BERT checkpoints
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}
_MAX_SAFETENSORS_HEADER = 100 << 20


# --------------------------------------------------------------------------- reading files


def read_config(directory: Path, name: str) -> dict:
    """``config.json`` of a model folder as a dict (ModelError when missing or not a JSON object)."""
    path = Path(directory) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelError(f"{name}: cannot read the DNA model's config.json ({describe(error, typed=True)})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{name}: the DNA model's config.json is not a JSON object")
    return config


def weight_file(directory: Path, name: str) -> Path:
    """The folder's weight file: ``model.safetensors``, else ``pytorch_model.bin``."""
    for candidate in WEIGHT_FILES:
        if (Path(directory) / candidate).is_file():
            return Path(directory) / candidate
    sharded = [p.name for p in Path(directory).glob("*.index.json")]
    hint = f" (sharded weights, {sharded[0]}, are not supported)" if sharded else ""
    raise ModelError(f"{name}: no DNA model weights ({' or '.join(WEIGHT_FILES)}) in {directory}{hint}")


def _load_bin(path: Path, mmap: bool) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError as error:
        if not mmap or "mmap" not in str(error):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)  # the legacy (not zip) format


def read_safetensors(path: Path, data: bool = True) -> dict:
    """Name -> tensor (``data``) or shape of every tensor of a ``.safetensors`` file.

    The format: an 8-byte little-endian header size, a JSON header (per tensor: ``dtype``,
    ``shape``, ``data_offsets`` into the data after the header), the data. Read here in a few
    lines rather than with the ``safetensors`` package (tests compare both).
    """
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        if not 2 <= size <= _MAX_SAFETENSORS_HEADER:
            raise ValueError(f"not a safetensors file (header size {size})")
        header = json.loads(handle.read(size))
        if not isinstance(header, dict):
            raise ValueError("not a safetensors file (header is not a JSON object)")
        header.pop("__metadata__", None)
        body = bytearray(handle.read()) if data else bytearray()
    tensors: dict = {}
    for key, entry in header.items():
        shape, (begin, end) = tuple(int(n) for n in entry["shape"]), entry["data_offsets"]
        if not data:
            tensors[key] = shape
            continue
        dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
        count = math.prod(shape)
        if not 0 <= begin <= end <= len(body) or end - begin != count * dtype.itemsize:
            raise ValueError(f"tensor {key}: data offsets {begin}..{end} do not fit its shape {shape} or the file")
        if count == 0:
            tensors[key] = torch.empty(shape, dtype=dtype)
        else:
            tensors[key] = torch.frombuffer(body, dtype=dtype, count=count, offset=begin).reshape(shape)
    return tensors


def _read_tensors(path: Path, name: str, data: bool) -> dict:
    """Name -> tensor (``data``) or shape of every tensor in a weight file; shapes alone read no data."""
    try:
        if path.suffix == ".safetensors":
            return read_safetensors(path, data)
        state = _load_bin(path, mmap=not data)
    except Exception as error:  # noqa: BLE001  (truncated, not a weight file, a refused pickle: all model errors)
        raise_interruption_behind(error)
        raise ModelError(f"{name}: cannot read the DNA model weights {path} ({describe(error, typed=True)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{name}: {path} is not a state dict of tensors")
    return state if data else {key: tuple(value.shape) for key, value in state.items()}


def read_tokenizer(directory: Path, name: str):
    """The folder's ``tokenizer.json`` as a ``tokenizers.Tokenizer``, padding and truncation off."""
    from tokenizers import Tokenizer

    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise ModelError(f"{name}: the DNA model has no tokenizer.json (a fast tokenizer's file) in {directory}")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # noqa: BLE001  (malformed JSON or an unknown component)
        raise_interruption_behind(error)
        raise ModelError(f"{name}: cannot read {path} ({describe(error, typed=True)})") from None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


# --------------------------------------------------------------------------- names and shapes


def published_to_ours(key: str) -> str | None:
    """Our parameter name for a published one (None: not used, the pooler or a head); unknown names unchanged."""
    key = key.removeprefix("bert.")
    for old, new in _OLD_NORM_NAMES.items():
        if key.endswith(old) and "LayerNorm" in key:
            key = key[: -len(old)] + new
    if _UNUSED.fullmatch(key):
        return None
    for pattern, replacement in _RENAMES:
        renamed, count = re.subn(f"^{pattern}", replacement, key)
        if count:
            return renamed
    return key


def _ours(published: dict, name: str) -> dict:
    """The published tensors (or shapes) under our names, classic BERT's query/key/value fused into qkv."""
    renamed: dict = {}
    for key, value in published.items():
        ours = published_to_ours(key)
        if ours is not None:
            renamed[ours] = value
    for key in [k for k in renamed if k.endswith((".query.weight", ".query.bias"))]:
        prefix, kind = key.rsplit(".query.", 1)
        parts = [renamed.pop(f"{prefix}.{which}.{kind}", None) for which in ("query", "key", "value")]
        if any(part is None for part in parts):
            raise ModelError(f"{name}: the DNA model weights have query but not key and value {kind}s")
        if isinstance(parts[0], torch.Tensor):
            renamed[f"{prefix}.qkv.{kind}"] = torch.cat(parts)
        else:
            renamed[f"{prefix}.qkv.{kind}"] = (sum(p[0] for p in parts), *parts[0][1:])
    return renamed


def _int(config: dict, key: str, name: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ModelError(f"{name}: the DNA model's config.json has no valid {key!r} ({value!r})")
    return value


def model_shape(config: dict, published_shapes: dict[str, tuple[int, ...]], name: str) -> BertShape:
    """The architecture and numbers of a folder from its config and its weights' names and shapes;
    ModelError for a model this package does not implement."""
    model_type = config.get("model_type", "bert")
    keys = {published_to_ours(k) for k in published_shapes}
    alibi = any(k and k.endswith(".qkv.weight") for k in keys) and any(k and k.endswith("mlp_in.weight") for k in keys)
    classic = "embeddings.position.weight" in keys
    if model_type != "bert" or alibi == classic:
        raise ModelError(
            f"{name}: not a DNABERT-2 (DNABERT-S) or BERT model (model_type {model_type!r}, weights such as "
            f"{', '.join(sorted(published_shapes)[:3]) or 'none'}); virnucpro runs only these architectures, "
            f"with its own code"
        )
    plain = config.get("position_embedding_type", "absolute") == "absolute" and config.get("hidden_act", "gelu") == "gelu"
    if classic and not plain:
        raise ModelError(
            f"{name}: a BERT model with position_embedding_type {config.get('position_embedding_type')!r} and "
            f"hidden_act {config.get('hidden_act')!r}; virnucpro runs BERT with absolute positions and the exact GELU"
        )
    hidden, heads = _int(config, "hidden_size", name), _int(config, "num_attention_heads", name)
    if hidden % heads:
        raise ModelError(f"{name}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    eps = config.get("layer_norm_eps", 1e-12)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool):
        raise ModelError(f"{name}: the DNA model's config.json has no valid 'layer_norm_eps' ({eps!r})")
    shape = BertShape(
        alibi=not classic,
        vocab_size=_int(config, "vocab_size", name),
        hidden=hidden,
        layers=_int(config, "num_hidden_layers", name),
        heads=heads,
        intermediate=_int(config, "intermediate_size", name),
        type_vocab_size=_int(config, "type_vocab_size", name, 2),
        max_positions=_int(config, "max_position_embeddings", name) if classic else None,
        layer_norm_eps=float(eps),
    )
    _check_shapes(shape, _ours(published_shapes, name), name)
    return shape


def _check_shapes(shape: BertShape, ours: dict[str, tuple[int, ...]], name: str) -> None:
    """ModelError unless the weights are exactly the parameters of ``shape``, with their shapes."""
    with torch.device("meta"):
        expected = {key: tuple(value.shape) for key, value in DnaBert(shape).state_dict().items()}
    missing = sorted(expected.keys() - ours.keys())
    unexpected = sorted(ours.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & ours.keys() if tuple(ours[k]) != expected[k])
    if missing or unexpected or wrong:
        problems = [f"{what} {', '.join(keys[:3])}" for what, keys in
                    (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise ModelError(
            f"{name}: the {shape.architecture} weights do not match config.json ({'; '.join(problems)}; "
            f"our names)"
        )


# --------------------------------------------------------------------------- the folder


def inspect_model_folder(directory: Path, name: str) -> BertShape:
    """Check a folder without reading its weights' data: config, weight names and shapes, tokenizer present."""
    shape = model_shape(read_config(directory, name), _read_tensors(weight_file(directory, name), name, data=False), name)
    if not (Path(directory) / "tokenizer.json").is_file():
        read_tokenizer(directory, name)  # the one-line error for a missing tokenizer.json
    return shape


def load_model_folder(directory: Path, name: str) -> tuple[DnaBert, object]:
    """The model (fp32, on the CPU) and the tokenizer of a folder; ModelError when they cannot be read."""
    config = read_config(directory, name)
    published = _read_tensors(weight_file(directory, name), name, data=True)
    shape = model_shape(config, {key: tuple(value.shape) for key, value in published.items()}, name)
    state = {key: value.float() for key, value in _ours(published, name).items()}
    return build_model(shape, state), read_tokenizer(directory, name)


# --------------------------------------------------------------------------- the Hugging Face cache


def hub_cache_snapshot(hub_id: str) -> Path | None:
    """The local Hugging Face cache's snapshot directory of a hub id holding its config.json (None: not cached)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(hub_id, "config.json")
    except Exception as error:  # noqa: BLE001  (no usable cache, or not a valid hub id)
        raise_interruption_behind(error)
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def _complete(directory: Path) -> bool:
    return all((directory / f).is_file() for f in ("config.json", "tokenizer.json")) and any(
        (directory / f).is_file() for f in WEIGHT_FILES
    )


def hub_snapshot(hub_id: str) -> Path:
    """The snapshot directory of a hub id with the files of :data:`MODEL_FILES` (no code files),
    from the local cache when it is complete there (no network at all), else through huggingface_hub
    (which honours ``HF_HUB_OFFLINE``). Errors are the hub client's."""
    from huggingface_hub import snapshot_download

    cached = hub_cache_snapshot(hub_id)
    if cached is not None and _complete(cached):
        return cached
    return Path(snapshot_download(hub_id, allow_patterns=list(MODEL_FILES)))


def cached_config(model: str) -> dict | None:
    """``config.json`` of a local model directory or of a hub id in the local cache (never the network,
    never any code); None when there is none or it cannot be read."""
    path = Path(model).expanduser()
    directory = path if path.is_dir() else hub_cache_snapshot(model)
    if directory is None:
        return None
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None
