"""Useful model FLOPs of an embedding run (what the hardware limit is compared with).

For a transformer encoder with ``layers`` layers of width ``d`` whose matrix weights per layer
hold ``P`` numbers (ESM-2 and BERT: ``P = 4 d^2 + 2 d f`` for query, key, value, output and a
feed-forward of width ``f``; ESM-2 has ``f = 4d``, so ``P = 12 d^2``), one sequence of ``L``
tokens (special tokens included, padding excluded) costs

    FLOPs = layers * (2 * P * L  +  4 * d * L^2)

``2 P`` per token for the weight matrices (one multiply and one add per weight) and ``4 d L``
per token for attention (``Q K^T`` and ``A V``: ``L d`` multiply-adds each). Embedding lookups,
layer norms, softmax, GELU, biases, ESM's language-model head and BERT's pooler are not
counted: they are either not needed for an embedding or not matrix work. Only the layers up to
the one whose representation is pooled count. Padding is not counted (it is waste).
ESM-2 3B: d = 2560, 36 layers -> 2 * 12 * 2560^2 * 36 = 5.66 GFLOP per token + attention.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class EncoderShape:
    """What the FLOP count needs: layers run, width, and matrix weights per layer."""

    layers: int
    width: int
    matrix_params_per_layer: int

    def flops(self, token_lengths: Iterable[int]) -> float:
        """FLOPs for sequences of these token lengths (special tokens included)."""
        total = 0.0
        for length in token_lengths:
            total += self.layers * (2.0 * self.matrix_params_per_layer * length + 4.0 * self.width * length * length)
        return total

    def flops_per_token(self) -> float:
        """The weight-matrix part alone (no attention), per token."""
        return 2.0 * self.matrix_params_per_layer * self.layers


def _linear_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


def esm_shape(model: nn.Module, layer: int) -> EncoderShape:
    """Shape of a fair-esm ESM-2 run up to ``layer``."""
    return EncoderShape(layer, int(model.embed_dim), _linear_weights(model.layers[0]))


def esm_shape_from_dims(layers: int, width: int) -> EncoderShape:
    """ESM-2 of ``layers`` layers and width ``width`` (feed-forward 4x), without building it."""
    return EncoderShape(layers, width, 12 * width * width)


def bert_shape(model: nn.Module) -> EncoderShape:
    """Shape of the DNA encoder (DNABERT-2 or BERT, :class:`virnucpro.embeddings.dnabert.DnaBert`): its layers."""
    return EncoderShape(len(model.layers), int(model.shape.hidden), _linear_weights(model.layers[0]))
