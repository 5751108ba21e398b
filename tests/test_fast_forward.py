"""The speed paths of the embedders give the numbers of the stock models.

ESM-2: our forward (SDPA, in-place rotary, fused GELU, early stop at the chosen layer) against
fair-esm's ``ESM2.forward`` at every layer, with oneDNN and with BLAS linears, padded and packed.
DNA: the oneDNN linears against the BLAS ones. fp32, 1e-5. Which linears run
where (the switch, else AVX-512).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from virnucpro.embeddings import cpu_linear
from virnucpro.embeddings.batching import cpu_token_cap, row_groups
from virnucpro.embeddings.cpu_linear import OneDnnLinear, linear, restore_linears, use_onednn_linears
from virnucpro.embeddings.dna import load_dna_embedder
from virnucpro.embeddings.esm import EsmEmbedder, load_esm_embedder
from virnucpro.embeddings.esm_forward import encoder_forward, fused_qkv

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"


@pytest.fixture()
def onednn_switch(monkeypatch: pytest.MonkeyPatch):
    """``onednn_switch("1")`` sets VIRNUCPRO_ONEDNN for this test, ``None`` unsets it (the choice is
    cached per process)."""

    def switch(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(cpu_linear.ENV_SWITCH, raising=False)
        else:
            monkeypatch.setenv(cpu_linear.ENV_SWITCH, value)
        cpu_linear.onednn_chosen.cache_clear()

    yield switch
    switch(None)


def _force_onednn(switch) -> None:
    if not cpu_linear.onednn_usable():
        pytest.skip("oneDNN's fused linear is not usable in this torch build")
    switch("1")


def _proteins(lengths: tuple[int, ...], seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(AMINO_ACIDS, k=n)) for n in lengths]


@pytest.mark.parametrize("backend", ["1", "0"])  # oneDNN linears, then the BLAS ones
@pytest.mark.parametrize("layer", [0, 1, 2])
def test_esm_forward_equals_fair_esm_at_every_layer(test_models, layer: int, backend: str, onednn_switch) -> None:
    if backend == "1":
        _force_onednn(onednn_switch)
    else:
        onednn_switch("0")
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


def test_packed_attention_gets_contiguous_query_and_key(test_models, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rotary step writes query and key as separate blocks: FlashAttention's varlen kernel
    wants contiguous inputs, and strided ones cost it two copies per layer (6% of ESM-2 3B's
    kernel time on an H200 before, docs/performance.md)."""
    from virnucpro.embeddings import esm_forward

    seen: list[tuple[bool, bool]] = []
    real = esm_forward.varlen_attention

    def recording(q, k, v, starts, widest):
        seen.append((q.is_contiguous(), k.is_contiguous()))
        return real(q, k, v, starts, widest)

    monkeypatch.setattr(esm_forward, "varlen_attention", recording)
    embedder = load_esm_embedder(str(test_models.esm), packed=True)
    embedder.embed_batch(_proteins((5, 40, 90)))
    assert len(seen) == embedder.layer and all(q and k for q, k in seen)


def test_esm_packed_from_environment(test_models, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRNUCPRO_ESM_PACKED", "1")
    assert load_esm_embedder(str(test_models.esm)).uses_packed
    monkeypatch.setenv("VIRNUCPRO_ESM_PACKED", "0")
    assert not load_esm_embedder(str(test_models.esm)).uses_packed
    monkeypatch.delenv("VIRNUCPRO_ESM_PACKED")
    unset = load_esm_embedder(str(test_models.esm))
    assert unset.packed is None and not unset.uses_packed  # the CPU runs padded (faster there)


@pytest.mark.parametrize(
    ("capability", "dtype", "packed"),
    [((9, 0), torch.bfloat16, True), ((8, 0), torch.float16, True), ((9, 0), torch.float32, False),
     ((7, 5), torch.bfloat16, False)],
)
def test_packed_is_the_gpu_default_where_flash_varlen_runs(
    test_models, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capability, dtype, packed: bool
) -> None:
    """Unforced, a CUDA embedder runs packed batches exactly where FlashAttention's variable-length
    kernel runs (half precision, Ampere or newer: faster on an H200, docs/performance.md), padded
    otherwise, without a warning; the choice follows a later cast (the parity check's fp32 -> bf16)."""
    from virnucpro.embeddings import esm_forward

    monkeypatch.delenv("VIRNUCPRO_ESM_PACKED", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    esm_forward.flash_varlen_available.cache_clear()
    try:
        loaded = load_esm_embedder(str(test_models.esm))
        with caplog.at_level("WARNING", logger="virnucpro"):  # nothing runs on the "GPU": only the choice is made
            on_gpu = EsmEmbedder(loaded.model, loaded.alphabet, loaded.name, loaded.layer, device="cuda:0")
            assert not on_gpu.uses_packed  # fp32 as loaded
            on_gpu.dtype = dtype  # what set_precision records (without moving weights to a GPU here)
            assert on_gpu.uses_packed is packed
        assert not caplog.records
    finally:
        esm_forward.flash_varlen_available.cache_clear()


def test_the_default_token_budget_depends_on_the_device(test_models) -> None:
    """2,048 tokens per ESM-2 batch on the CPU (the reference's), 65,536 on a GPU (measured)."""
    loaded = load_esm_embedder(str(test_models.esm))
    assert loaded.default_token_budget == 2048
    on_gpu = EsmEmbedder(loaded.model, loaded.alphabet, loaded.name, loaded.layer, device="cuda:0")
    assert on_gpu.default_token_budget == 65536
    assert load_dna_embedder(str(test_models.dna)).default_token_budget == 8192


@pytest.mark.parametrize(("capability", "kernel"), [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_packed_attention_uses_flash_only_where_it_runs(
    test_models, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capability, kernel: bool
) -> None:
    """FlashAttention's variable-length kernel needs an Ampere or newer GPU: on older ones a packed
    embedder says so once and attention runs on padded rows, instead of every batch failing."""
    from virnucpro.embeddings import esm_forward

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    esm_forward.flash_varlen_available.cache_clear()
    try:
        assert esm_forward.flash_varlen_available(0) is kernel
        loaded = load_esm_embedder(str(test_models.esm))
        with caplog.at_level("WARNING", logger="virnucpro"):  # nothing runs on the "GPU": only the choice is made
            EsmEmbedder(loaded.model, loaded.alphabet, loaded.name, loaded.layer, device="cuda:0", packed=True)
        warned = [r for r in caplog.records if "variable-length kernel cannot run here" in r.getMessage()]
        assert len(warned) == (0 if kernel else 1)
    finally:
        esm_forward.flash_varlen_available.cache_clear()


@pytest.mark.parametrize("gelu", [False, True])
def test_linear_equals_torch(gelu: bool, onednn_switch) -> None:
    _force_onednn(onednn_switch)
    generator = torch.Generator().manual_seed(1)
    x, weight, bias = torch.randn(3, 70, 64, generator=generator), torch.randn(96, 64), torch.randn(96)
    expected = F.linear(x, weight, bias)
    expected = F.gelu(expected) if gelu else expected
    torch.testing.assert_close(linear(x, weight, bias, gelu=gelu), expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(linear(x.double(), weight.double(), None), F.linear(x.double(), weight.double()))


@pytest.mark.parametrize(
    ("switch", "avx512", "expected"),
    [("0", True, False), ("off", True, False), ("1", False, True), ("on", False, True),
     ("auto", True, True), ("auto", False, False), (None, True, True), (None, False, False)],
)
def test_onednn_is_chosen_by_the_switch_else_by_avx512(
    monkeypatch: pytest.MonkeyPatch, onednn_switch, switch: str | None, avx512: bool, expected: bool
) -> None:
    """oneDNN pays on AVX-512 CPUs and loses on AVX2 ones (docs/performance.md); the switch overrides."""
    if not cpu_linear.onednn_usable():
        pytest.skip("oneDNN's fused linear is not usable in this torch build")
    monkeypatch.setattr(cpu_linear, "cpu_has_avx512", lambda: avx512)
    onednn_switch(switch)
    assert cpu_linear.onednn_chosen() is expected
    assert cpu_linear.cpu_linear_backend() == ("oneDNN" if expected else "BLAS")


def test_avx512_is_read_from_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    for capability, expected in (("AVX512", True), ("AVX2", False), ("DEFAULT", False), ("NO AVX", False)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert cpu_linear.cpu_has_avx512() is expected


def test_onednn_is_what_runs_on_the_cpu_and_the_switch_turns_it_off(onednn_switch, monkeypatch: pytest.MonkeyPatch) -> None:
    """The equality tests would pass on F.linear alone: here the fused oneDNN op must be called."""
    _force_onednn(onednn_switch)
    real = torch.ops.mkldnn._linear_pointwise
    calls: list[str] = []

    class Spy:
        def __call__(self, *args):
            calls.append("linear")
            return real(*args)

        def binary(self, *args):
            calls.append("residual")
            return real.binary(*args)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", Spy())
    x, weight, bias = torch.randn(4, 8), torch.randn(6, 8), torch.randn(6)
    linear(x, weight, bias)
    linear(x, weight, bias, gelu=True)
    linear(x, weight, bias, residual=torch.randn(4, 6))
    linear(x.double(), weight.double(), bias.double())  # not fp32: F.linear
    assert calls == ["linear", "linear", "residual"]
    onednn_switch("0")
    linear(x, weight, bias)
    linear(x, weight, bias, gelu=True)
    assert calls == ["linear", "linear", "residual"]  # switched off: nothing more through oneDNN


def test_linear_swap_and_restore() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(5, 8)
    expected = model(x)
    assert use_onednn_linears(model) == 2 and all(type(m) is OneDnnLinear for m in (model[0], model[2]))
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=0)
    assert model.state_dict().keys() == state.keys()
    assert restore_linears(model) == 2 and type(model[0]) is nn.Linear


def test_dna_onednn_linears_equal_blas_ones(test_models, onednn_switch) -> None:
    _force_onednn(onednn_switch)
    embedder = load_dna_embedder(str(test_models.dna))
    sequences = ["ACGT" * 20, "GATTACA" * 31, "TTAGGC" * 7]
    fast = embedder.embed_batch(sequences)
    onednn_switch("0")
    np.testing.assert_allclose(fast, embedder.embed_batch(sequences), atol=1e-5, rtol=0)


def test_fused_qkv_shares_storage_and_follows_casts(test_models) -> None:
    embedder = load_esm_embedder(str(test_models.esm))
    attention = embedder.model.layers[0].self_attn
    weight, _bias = fused_qkv(attention)
    assert attention.k_proj.weight.data_ptr() == weight[attention.k_proj.out_features :].data_ptr()  # no copy
    model = embedder.model.double()  # moved after fusing: the fused matrix is rebuilt from the new weights
    _, _, tokens = embedder.alphabet.get_batch_converter()([("", "MKVLAAGIW"), ("", "MKT")])
    with torch.inference_mode():
        expected = model(tokens, repr_layers=[2])["representations"][2]
        got = encoder_forward(model, tokens, 2)
    assert fused_qkv(attention)[0].dtype == torch.float64
    real = tokens.ne(embedder.alphabet.padding_idx)
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=0)  # rotary tables: fp32, cast


def test_linear_residual_equals_torch() -> None:
    generator = torch.Generator().manual_seed(2)
    x, weight, bias = torch.randn(50, 32, generator=generator), torch.randn(24, 32), torch.randn(24)
    residual = torch.randn(50, 24, generator=generator)
    torch.testing.assert_close(linear(x, weight, bias, residual=residual), F.linear(x, weight, bias) + residual,
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        linear(x, weight, bias, gelu=True, residual=residual)


def test_cpu_row_groups_give_the_same_numbers(test_models) -> None:
    """A batch bigger than the CPU cache cap runs in groups of rows: same embeddings as in one piece."""
    esm = load_esm_embedder(str(test_models.esm))
    proteins = _proteins((5, 30, 31, 90, 200, 1500))
    whole = esm.embed_batch(proteins)
    esm._cpu_tokens = 100
    np.testing.assert_allclose(esm.embed_batch(proteins), whole, atol=1e-5, rtol=0)
    dna = load_dna_embedder(str(test_models.dna))
    reads = ["ACGTTGCA" * n for n in (2, 5, 6, 20, 40)]
    whole = dna.embed_batch(reads)
    dna._cpu_tokens = 30
    np.testing.assert_allclose(dna.embed_batch(reads), whole, atol=1e-5, rtol=0)


def test_row_groups() -> None:
    assert row_groups([5, 5, 5, 5], 10) == [range(0, 2), range(2, 4)]
    assert row_groups([1, 20, 3], 10) == [range(0, 1), range(1, 2), range(2, 3)]
    assert row_groups([], 10) == []
    assert cpu_token_cap(1024) == 2048 and cpu_token_cap(10**9) == 256


def test_dna_token_count_matches_the_tokenizer(test_models) -> None:
    embedder = load_dna_embedder(str(test_models.dna))
    reads = ["acgtacgtta" * n for n in (1, 3, 17)] + ["NNACGT", "A"]
    assert [embedder.token_count(r) for r in reads] == [len(ids) for ids in embedder.encode(reads)]
    assert [len(ids) for ids in embedder.encode(reads[:1])] == [len(embedder.tokenizer.encode("ACGTACGTTA").ids)]
