"""ESM-2's forward pass on fair-esm's own layers and weights, run by our code instead of ``ESM2.forward``.

Batch-first; one fused query/key/value product (:func:`fused_qkv`); rotary embeddings applied
without the concatenation; ``scaled_dot_product_attention`` with the padding as a key mask
(:func:`encoder_forward`) or, unpadded, FlashAttention's variable-length kernel on CUDA
(:func:`packed_encoder_forward`); the exact GELU and the residual additions fused into the
matrix products (:func:`virnucpro.embeddings.cpu_linear.linear`); only the layers up to the
one asked for, no language-model head or contact computation. Equal to fair-esm's forward
within 1e-5 in fp32 at every layer (tests/test_fast_forward.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from virnucpro.embeddings import rotary_triton
from virnucpro.embeddings.cpu_linear import linear

TOKEN_DROPOUT_TRAIN_RATIO = 0.15 * 0.8  # fair-esm's rescaling of embeddings (no <mask> tokens here)


def _rotary_tables(
    attention: nn.Module, positions: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``[len(positions), 1, 1, head_dim / 2]`` of fair-esm's rotary embedding, computed in fp32."""
    inv_freq = attention.rot_emb.inv_freq.float()
    angles = torch.outer(positions.to(inv_freq.device, torch.float32), inv_freq)[:, None, None, :]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fair-esm's ``x * cos + rotate_half(x) * sin`` on the query and key ``qk [..., 2, heads, head_dim]``,
    without the concatenation; returns them as two contiguous ``[..., heads, head_dim]`` tensors
    (so attention kernels that want contiguous inputs copy nothing). One Triton kernel on CUDA
    (:mod:`virnucpro.embeddings.rotary_triton`)."""
    if rotary_triton.wanted(qk):
        rotated = rotary_triton.rotate(qk, cos, sin)
        if rotated is not None:
            return rotated
    half = qk.shape[-1] // 2
    x1, x2 = qk[..., :half], qk[..., half:]
    rotated = torch.empty((2, *qk.shape[:-3], *qk.shape[-2:]), dtype=qk.dtype, device=qk.device)
    out = rotated.movedim(0, -3)  # qk's shape, query and key each in one block
    first, second = out[..., :half], out[..., half:]
    torch.mul(x1, cos, out=first)
    first.addcmul_(x2, sin, value=-1.0)
    torch.mul(x2, cos, out=second)
    second.addcmul_(x1, sin)
    return rotated[0], rotated[1]


def fused_qkv(attention: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``[3 * dim, dim]`` matrix (and bias) for the query, key and value projections.

    Built once; the three projections' parameters become views of it, so nothing is stored
    twice and fair-esm's own forward keeps working. Rebuilt if the model was moved or cast since.
    """
    projections = (attention.q_proj, attention.k_proj, attention.v_proj)
    cached = getattr(attention, "_virnucpro_qkv", None)
    if cached is not None and all(
        p.weight.data_ptr() == cached[0][i * p.out_features :].data_ptr() and p.weight.dtype == cached[0].dtype
        for i, p in enumerate(projections)
    ):
        return cached
    with torch.no_grad():
        weight = torch.cat([p.weight.detach() for p in projections])
        bias = torch.cat([p.bias.detach() for p in projections])
        for i, p in enumerate(projections):
            rows = slice(i * p.out_features, (i + 1) * p.out_features)
            p.weight = nn.Parameter(weight[rows], requires_grad=False)
            p.bias = nn.Parameter(bias[rows], requires_grad=False)
    attention._virnucpro_qkv = (weight, bias)
    return weight, bias


def _layer(layer: nn.Module, x: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor], attend) -> torch.Tensor:
    """One fair-esm TransformerLayer on ``x [..., dim]``; ``attend(q, k, v)`` on ``[..., heads, head_dim]``."""
    attention = layer.self_attn
    weight, bias = fused_qkv(attention)
    qkv = linear(layer.self_attn_layer_norm(x), weight, bias)
    qkv = qkv.view(*x.shape[:-1], 3, attention.num_heads, attention.head_dim)
    q, k = _rotate(qkv[..., :2, :, :], *tables)
    context = attend(q, k, qkv[..., 2, :, :]).reshape(x.shape)
    x = linear(context, attention.out_proj.weight, attention.out_proj.bias, residual=x)
    h = linear(layer.final_layer_norm(x), layer.fc1.weight, layer.fc1.bias, gelu=True)
    return linear(h, layer.fc2.weight, layer.fc2.bias, residual=x)


def _embed(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """fair-esm's scaled token embedding (no mask tokens here: token dropout is a fixed 0.88 scale)."""
    x = model.embed_scale * model.embed_tokens(tokens)
    if model.token_dropout:
        x = x * (1 - TOKEN_DROPOUT_TRAIN_RATIO)
    return x


def _layers(model: nn.Module, x: torch.Tensor, positions: torch.Tensor, layer: int, attend) -> torch.Tensor:
    """Layers 1..``layer`` on ``x``, rotary positions ``positions`` (one per row of ``x`` before ``dim``)."""
    if layer == 0:
        return x
    tables = _rotary_tables(model.layers[0].self_attn, positions, x.dtype)
    for block in model.layers[:layer]:
        x = _layer(block, x, tables, attend)
    return x


def _finish(model: nn.Module, x: torch.Tensor, layer: int) -> torch.Tensor:
    return model.emb_layer_norm_after(x) if layer == model.num_layers else x


def encoder_forward(model: nn.Module, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    """Representation ``[batch, tokens, dim]`` of layer ``layer`` of a fair-esm ESM-2, as ``ESM2.forward``."""
    padding = tokens.eq(model.padding_idx)
    x = _embed(model, tokens)
    x = x * (1 - padding.unsqueeze(-1).type_as(x))
    keep = (~padding)[:, None, None, :] if bool(padding.any()) else None
    positions = torch.arange(tokens.shape[1], device=tokens.device)

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [batch, heads, tokens, head_dim]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2)

    return _finish(model, _layers(model, x, positions, layer, attend), layer)


def packed_encoder_forward(
    model: nn.Module, tokens: torch.Tensor, positions: torch.Tensor, starts: torch.Tensor, widest: int, layer: int
) -> torch.Tensor:
    """:func:`encoder_forward` on unpadded rows; returns ``[n, dim]``.

    ``tokens`` and ``positions`` are ``[n]``; row ``i`` is ``starts[i]:starts[i+1]``, ``widest`` the longest row.
    """
    x = _embed(model, tokens)

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return varlen_attention(q, k, v, starts, widest)

    return _finish(model, _layers(model, x, positions, layer, attend), layer)


def varlen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, starts: torch.Tensor, widest: int
) -> torch.Tensor:
    """Attention within each row of packed ``[n, heads, head_dim]`` tensors (rows ``starts[i]:starts[i+1]``).

    FlashAttention's variable-length kernel on CUDA in half precision where it runs
    (:func:`flash_varlen_available`); elsewhere the rows are padded for
    ``scaled_dot_product_attention`` and unpadded again (same numbers, slower).
    """
    if flash_varlen_runs(q.device, q.dtype):
        from torch.nn.attention.varlen import varlen_attn

        q, k, v = (t.contiguous() for t in (q, k, v))
        return varlen_attn(q, k, v, starts, starts, widest, widest)
    return padded_varlen_attention(q, k, v, starts, widest)


def padded_varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    starts: torch.Tensor,
    widest: int,
    mask: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """:func:`varlen_attention` without a variable-length kernel: the rows padded for
    ``scaled_dot_product_attention``, then unpadded again. ``mask(keep)`` gives the attention mask
    from the ``[rows, widest]`` real places (a float bias, for ALiBi); None: those places as keys.
    """
    rows, columns, keep = unpadded_layout(starts, widest)

    def pad(t: torch.Tensor) -> torch.Tensor:
        out = t.new_zeros(len(starts) - 1, widest, *t.shape[1:])
        out[rows, columns] = t
        return out.transpose(1, 2)  # [rows, heads, widest, head_dim]

    attn_mask = keep[:, None, None, :] if mask is None else mask(keep)
    out = F.scaled_dot_product_attention(pad(q), pad(k), pad(v), attn_mask=attn_mask)
    return out.transpose(1, 2)[rows, columns]


def unpadded_layout(starts: torch.Tensor, widest: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each packed token goes in a padded ``[rows, widest]`` layout: its row and column
    (``[n]`` each, for ``padded[rows, columns] = packed``), and the ``[rows, widest]`` mask of real places.

    Row ``i`` of the packed layout is ``starts[i]:starts[i+1]``.
    """
    spans = starts[1:] - starts[:-1]
    rows = torch.repeat_interleave(torch.arange(len(spans), device=starts.device), spans)
    columns = torch.arange(len(rows), device=starts.device) - starts[:-1].long()[rows]
    keep = torch.arange(widest, device=starts.device)[None, :] < spans[:, None]
    return rows, columns, keep


def flash_varlen_runs(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether FlashAttention's variable-length kernel serves tensors of ``dtype`` on ``device``:
    CUDA, half precision, and :func:`flash_varlen_available`."""
    return half_on_cuda(device, dtype) and flash_varlen_available(device.index or 0)


def half_on_cuda(device: torch.device, dtype: torch.dtype) -> bool:
    """A CUDA device and bf16/fp16: where FlashAttention's kernels can serve at all."""
    return device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)


@functools.cache
def flash_varlen_available(device_index: int) -> bool:
    """True when FlashAttention's variable-length kernel can run on CUDA device ``device_index``:
    this torch has ``torch.nn.attention.varlen`` (2.9 and newer) and the GPU is Ampere (sm80) or newer."""
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.get_device_capability(device_index) >= (8, 0)
