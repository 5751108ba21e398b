"""The speed paths of the embedders give the numbers of the stock models.

ESM-2: our forward (SDPA, in-place rotary, fused GELU, oneDNN linears, early stop at the chosen
layer) against fair-esm's ``ESM2.forward`` at every layer, padded and packed. DNA: the oneDNN
linears against the plain ``nn.Linear`` model. fp32, 1e-5.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from virnucpro.embeddings import cpu_linear
from virnucpro.embeddings.cpu_linear import OneDnnLinear, linear, restore_linears, use_onednn_linears
from virnucpro.embeddings.dna import load_dna_embedder
from virnucpro.embeddings.esm import encoder_forward, load_esm_embedder

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"


def _proteins(lengths: tuple[int, ...], seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(AMINO_ACIDS, k=n)) for n in lengths]


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_esm_forward_equals_fair_esm_at_every_layer(test_models, layer: int) -> None:
    embedder = load_esm_embedder(str(test_models.esm), layer=layer)
    sequences = _proteins((1, 9, 50, 99, 166, 400))  # padded rows of very different lengths
    _, _, tokens = embedder.alphabet.get_batch_converter()([("", s) for s in sequences])
    with torch.inference_mode():
        expected = embedder.model(tokens, repr_layers=[layer])["representations"][layer]
        got = encoder_forward(embedder.model, tokens, layer)
    real = tokens.ne(embedder.alphabet.padding_idx)  # padding rows are never read
    assert got.shape == expected.shape
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=0)


def test_esm_packed_equals_padded(test_models) -> None:
    embedder = load_esm_embedder(str(test_models.esm))
    sequences = _proteins((1, 7, 120, 300, 2100))  # the last one is windowed
    padded = embedder.embed_batch(sequences)
    packed = load_esm_embedder(str(test_models.esm), packed=True).embed_batch(sequences)
    np.testing.assert_allclose(packed, padded, atol=1e-5, rtol=0)


def test_esm_packed_from_environment(test_models, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRNUCPRO_ESM_PACKED", "1")
    assert load_esm_embedder(str(test_models.esm)).packed
    monkeypatch.setenv("VIRNUCPRO_ESM_PACKED", "0")
    assert not load_esm_embedder(str(test_models.esm)).packed


@pytest.mark.parametrize("gelu", [False, True])
def test_linear_equals_torch(gelu: bool) -> None:
    generator = torch.Generator().manual_seed(1)
    x, weight, bias = torch.randn(3, 70, 64, generator=generator), torch.randn(96, 64), torch.randn(96)
    expected = F.linear(x, weight, bias)
    expected = F.gelu(expected) if gelu else expected
    torch.testing.assert_close(linear(x, weight, bias, gelu=gelu), expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(linear(x.double(), weight.double(), None), F.linear(x.double(), weight.double()))


def test_onednn_switch_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cpu_linear.ENV_SWITCH, "0")
    cpu_linear.onednn_available.cache_clear()
    try:
        assert not cpu_linear.onednn_available()
    finally:
        monkeypatch.delenv(cpu_linear.ENV_SWITCH)
        cpu_linear.onednn_available.cache_clear()


def test_linear_swap_and_restore() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(5, 8)
    expected = model(x)
    assert use_onednn_linears(model) == 2 and all(type(m) is OneDnnLinear for m in (model[0], model[2]))
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=0)
    assert model.state_dict().keys() == state.keys()
    assert restore_linears(model) == 2 and type(model[0]) is nn.Linear


def test_dna_onednn_model_equals_plain_model(test_models) -> None:
    embedder = load_dna_embedder(str(test_models.dna))
    assert any(type(m) is OneDnnLinear for m in embedder.model.modules())
    sequences = ["ACGT" * 20, "GATTACA" * 31, "TTAGGC" * 7]
    fast = embedder.embed_batch(sequences)
    restore_linears(embedder.model)
    np.testing.assert_allclose(fast, embedder.embed_batch(sequences), atol=1e-5, rtol=0)
