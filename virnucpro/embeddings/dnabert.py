"""DNABERT-2's encoder (the architecture of DNABERT-S) and classic BERT's, as our own code on weights read as tensors.

DNABERT-S (``zhihan1996/DNABERT-S``) is a DNABERT-2 model: MosaicBERT's ``bert_layers.py``,
published as remote code beside the weights. We run none of it; this module computes the same
thing from the weights alone:

- **Embeddings**: word embedding + token-type embedding 0, then LayerNorm. No position
  embeddings (ALiBi). Classic BERT adds its absolute position embeddings before the LayerNorm.
- **Each layer** (post-LayerNorm): one fused query/key/value product; attention per head with
  MosaicBERT's ALiBi bias ``-slope[h] * |i - j|`` added to the scaled scores (:func:`alibi_slopes`;
  none for classic BERT), padding masked out as keys; output product + residual, LayerNorm;
  then the gated-linear-unit MLP: one bias-free product to ``2 x intermediate``,
  ``GELU(first half) * second half`` (exact GELU), product back + residual, LayerNorm. Classic
  BERT: a GELU MLP (``intermediate.dense``, ``output.dense``).
- **Output**: the last layer's hidden states. The pooler and the heads are not used (virnucpro
  mean-pools the hidden states).

Two layouts: padded rows (:func:`encoder_forward`: ``scaled_dot_product_attention`` with the
ALiBi bias and the padding in one float mask; the CPU path) and packed rows
(:func:`packed_encoder_forward`: all tokens of a batch in one unpadded row; on CUDA in half
precision the attention is FlashAttention's variable-length kernel with ``alibi_slopes`` when
the ``flash_attn`` package is installed, :func:`flash_alibi_available`; otherwise padded for
the attention only).

Checked once against the published ``bert_layers.py`` (DNABERT-S's remote code as published in
the MAGICS-LAB/DNABERT_S repository, ``evaluate/model_codes`` at commit e33f440; run outside
this repository on random weights, fp32, padded batches of 1 to 777 bp): the same hidden states
to float rounding, max abs difference 2.3e-6 over every real token (hidden states of order one;
12 and 4 heads). tests/test_dnabert.py re-checks against the outputs it produced
(tests/fixtures/dnabert2_reference.npz). The embeddings also equal those of virnucpro's earlier
loader (transformers running that code): max abs difference 5e-7, prediction scores 6e-8.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from virnucpro.embeddings.cpu_linear import linear
from virnucpro.embeddings.esm_forward import half_on_cuda, padded_varlen_attention, varlen_attention


@dataclass(frozen=True)
class BertShape:
    """The numbers that define one of the encoders this module runs."""

    alibi: bool  # True: DNABERT-2 (ALiBi, gated MLP); False: classic BERT (absolute positions, GELU MLP)
    vocab_size: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    type_vocab_size: int
    max_positions: int | None  # classic BERT's position table; None: no limit (ALiBi)
    layer_norm_eps: float

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def architecture(self) -> str:
        return "DNABERT-2" if self.alibi else "BERT"


def alibi_slopes(heads: int) -> list[float]:
    """MosaicBERT's ALiBi slope per head: a geometric series ``start ** (i + 1)`` with
    ``start = 2 ** (-8 / heads)`` when ``heads`` is a power of two; otherwise the series of the
    largest power of two below, then every other slope of the next power's series (DNABERT-2
    has 12 heads)."""
    if math.log2(heads).is_integer():
        start = 2 ** (-(2 ** -(math.log2(heads) - 3)))
        return [start ** (i + 1) for i in range(heads)]
    lower = 2 ** math.floor(math.log2(heads))
    return alibi_slopes(lower) + alibi_slopes(2 * lower)[0::2][: heads - lower]


def alibi_bias(slopes: torch.Tensor, tokens: int) -> torch.Tensor:
    """``[heads, tokens, tokens]`` fp32: ``-slope[h] * |i - j|`` (query ``i``, key ``j``)."""
    positions = torch.arange(tokens, device=slopes.device)
    distance = (positions[None, :] - positions[:, None]).abs()
    return slopes.float()[:, None, None] * -distance[None]


def alibi_mask(slopes: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``[rows, heads, width, width]`` fp32 attention mask of padded rows: the ALiBi bias, and -inf
    for the keys that are padding (``real [rows, width]`` is False there)."""
    return alibi_bias(slopes, real.shape[1])[None].masked_fill(~real[:, None, None, :], float("-inf"))


# --------------------------------------------------------------------------- the model


class _Embeddings(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.word = nn.Embedding(shape.vocab_size, shape.hidden)
        self.token_type = nn.Embedding(shape.type_vocab_size, shape.hidden)
        self.position = None if shape.alibi else nn.Embedding(shape.max_positions, shape.hidden)
        self.norm = nn.LayerNorm(shape.hidden, eps=shape.layer_norm_eps)


class _Layer(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        hidden, intermediate = shape.hidden, shape.intermediate
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=shape.layer_norm_eps)
        # DNABERT-2: gate and value in one bias-free product; classic BERT: one product, then GELU
        self.mlp_in = nn.Linear(hidden, 2 * intermediate, bias=False) if shape.alibi else nn.Linear(hidden, intermediate)
        self.mlp_out = nn.Linear(intermediate, hidden)
        self.mlp_norm = nn.LayerNorm(hidden, eps=shape.layer_norm_eps)


class DnaBert(nn.Module):
    """The encoder's parameters under our names (see :func:`virnucpro.embeddings.dnabert_files.published_to_ours`);
    calling it runs :func:`encoder_forward`."""

    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.shape = shape
        self.embeddings = _Embeddings(shape)
        self.layers = nn.ModuleList(_Layer(shape) for _ in range(shape.layers))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states ``[batch, tokens, hidden]`` of padded rows (``lengths``: real tokens per row; None: all)."""
        if lengths is None:
            lengths = torch.full((tokens.shape[0],), tokens.shape[1], device=tokens.device)
        return encoder_forward(self, tokens, lengths)

    def slopes(self, device: torch.device) -> torch.Tensor | None:
        """ALiBi slopes ``[heads]`` fp32 on ``device``; None for classic BERT."""
        if not self.shape.alibi:
            return None
        return torch.tensor(alibi_slopes(self.shape.heads), dtype=torch.float32, device=device)


def build_model(shape: BertShape, state: dict[str, torch.Tensor]) -> DnaBert:
    """A :class:`DnaBert` holding the tensors of ``state`` (our names, shapes checked), no random init."""
    with torch.device("meta"):
        model = DnaBert(shape)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


# --------------------------------------------------------------------------- the forward pass


def _embed(model: DnaBert, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    embeddings = model.embeddings
    x = F.embedding(tokens, embeddings.word.weight) + embeddings.token_type.weight[0]
    if embeddings.position is not None:
        x = x + F.embedding(positions, embeddings.position.weight)
    return embeddings.norm(x)


def _layer(layer: _Layer, x: torch.Tensor, shape: BertShape, attend) -> torch.Tensor:
    """One post-LayerNorm layer on ``x [..., hidden]``; ``attend(q, k, v)`` on ``[..., heads, head_dim]``."""
    qkv = linear(x, layer.qkv.weight, layer.qkv.bias).view(*x.shape[:-1], 3, shape.heads, shape.head_dim)
    context = attend(qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]).reshape(x.shape)
    x = layer.attn_norm(linear(context, layer.attn_out.weight, layer.attn_out.bias, residual=x))
    if shape.alibi:
        gate, value = linear(x, layer.mlp_in.weight, None).chunk(2, dim=-1)
        inner = F.gelu(gate) * value
    else:
        inner = linear(x, layer.mlp_in.weight, layer.mlp_in.bias, gelu=True)
    return layer.mlp_norm(linear(inner, layer.mlp_out.weight, layer.mlp_out.bias, residual=x))


def _layers(model: DnaBert, x: torch.Tensor, attend) -> torch.Tensor:
    for block in model.layers:
        x = _layer(block, x, model.shape, attend)
    return x


def encoder_forward(model: DnaBert, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Hidden states ``[batch, tokens, hidden]`` of padded rows; row ``i`` has ``lengths[i]`` real tokens
    (padding on the right: never attended to, its own outputs are not meaningful)."""
    width = tokens.shape[1]
    positions = torch.arange(width, device=tokens.device)
    real = positions[None, :] < lengths[:, None]
    slopes = model.slopes(tokens.device)
    if slopes is not None:
        mask = alibi_mask(slopes, real)
    else:
        mask = None if bool(real.all()) else real[:, None, None, :]

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [batch, heads, tokens, head_dim]
        bias = mask if mask is None or mask.dtype == torch.bool else mask.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2)

    return _layers(model, _embed(model, tokens, positions[None, :]), attend)


def packed_encoder_forward(
    model: DnaBert, tokens: torch.Tensor, positions: torch.Tensor, starts: torch.Tensor, widest: int
) -> torch.Tensor:
    """:func:`encoder_forward` on unpadded rows; returns ``[n, hidden]``.

    ``tokens`` and ``positions`` (within its row) are ``[n]``; row ``i`` is ``starts[i]:starts[i+1]``
    (int32), ``widest`` the longest row.
    """
    slopes = model.slopes(tokens.device)

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if slopes is None:
            return varlen_attention(q, k, v, starts, widest)
        return alibi_varlen_attention(q, k, v, starts, widest, slopes)

    return _layers(model, _embed(model, tokens, positions), attend)


def alibi_varlen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, starts: torch.Tensor, widest: int, slopes: torch.Tensor
) -> torch.Tensor:
    """Attention with the ALiBi bias within each row of packed ``[n, heads, head_dim]`` tensors.

    FlashAttention's variable-length kernel with ``alibi_slopes`` where it runs
    (:func:`flash_alibi_runs`); elsewhere the rows are padded for ``scaled_dot_product_attention``
    and unpadded again (same numbers, slower).
    """
    if flash_alibi_runs(q.device, q.dtype):
        from flash_attn import flash_attn_varlen_func

        q, k, v = (t.contiguous() for t in (q, k, v))
        return flash_attn_varlen_func(q, k, v, starts, starts, widest, widest, alibi_slopes=slopes.float())

    return padded_varlen_attention(q, k, v, starts, widest, lambda keep: alibi_mask(slopes, keep).to(q.dtype))


def flash_alibi_runs(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether FlashAttention's variable-length kernel with ALiBi serves tensors of ``dtype`` on ``device``:
    CUDA, half precision, and :func:`flash_alibi_available`."""
    return half_on_cuda(device, dtype) and flash_alibi_available(device.index or 0)


@functools.cache
def flash_alibi_available(device_index: int) -> bool:
    """True when the ``flash_attn`` package (FlashAttention 2, not a dependency of virnucpro) is
    installed, its ``flash_attn_varlen_func`` takes ``alibi_slopes``, and CUDA device
    ``device_index`` is Ampere (sm80) or newer."""
    try:
        from flash_attn import flash_attn_varlen_func
    except Exception:  # noqa: BLE001  (not installed, or built for another torch/CUDA: not usable)
        return False
    if "alibi_slopes" not in inspect.signature(flash_attn_varlen_func).parameters:
        return False
    return torch.cuda.get_device_capability(device_index) >= (8, 0)
