"""Our DNABERT-2 code: the published bert_layers.py's numbers, ALiBi, packed rows, weight files and names.

tests/fixtures/dnabert2_reference.npz holds what DNABERT-S's published ``bert_layers.py``
(MosaicBERT, as in the MAGICS-LAB/DNABERT_S repository; not part of this repository) computed,
in fp32 on the CPU, for a padded batch of nine sequences of 1 to 777 bp on the random DNABERT-2
made by ``make_dna(seed=23, shape=PARITY_SHAPE)`` (12 heads, like DNABERT-2: the slopes of a
head count that is not a power of two): per sequence the mean of the last hidden state over its
tokens, and the hidden states of its first and last token. The weights are regenerated here from
the seed (their digest is in the fixture).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from virnucpro.embeddings import dnabert
from virnucpro.embeddings.dnabert import (
    alibi_bias,
    alibi_slopes,
    alibi_varlen_attention,
    encoder_forward,
    packed_encoder_forward,
)
from virnucpro.embeddings.dnabert_files import (
    inspect_model_folder,
    load_model_folder,
    published_to_ours,
    read_safetensors,
)
from virnucpro.embeddings.esm_forward import unpadded_layout
from virnucpro.errors import ModelError
from virnucpro.testmodels import make_dna

FIXTURE = Path(__file__).parent / "fixtures" / "dnabert2_reference.npz"
PARITY_SEED = 23
PARITY_SHAPE = {"layers": 2, "hidden": 48, "heads": 12, "intermediate": 64}


@pytest.fixture(scope="module")
def parity_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dna(tmp_path_factory.mktemp("parity"), seed=PARITY_SEED, shape=PARITY_SHAPE)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _packed(tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Padded rows as (tokens, positions, starts, widest) of the packed layout."""
    starts = torch.cat([torch.zeros(1, dtype=torch.int32), lengths.cumsum(0).to(torch.int32)])
    real = torch.arange(tokens.shape[1])[None, :] < lengths[:, None]
    positions = torch.arange(tokens.shape[1]).expand_as(tokens)[real]
    return tokens[real], positions, starts, int(lengths.max())


def test_the_published_bert_layers_numbers(parity_model: Path, reference: dict[str, np.ndarray]) -> None:
    """Same hidden states as DNABERT-S's published code, padded and packed, fp32: measured 2.2e-6."""
    digest = hashlib.sha256()
    for key, value in torch.load(parity_model / "pytorch_model.bin", weights_only=True).items():
        digest.update(key.encode() + value.numpy().tobytes())
    assert digest.hexdigest() == str(reference["weights_sha256"]), "make_dna's weights changed: the fixture is stale"
    model, _tokenizer = load_model_folder(parity_model, "parity")
    tokens = torch.from_numpy(reference["tokens"]).long()
    lengths = torch.from_numpy(reference["lengths"]).long()
    rows = torch.arange(len(lengths))
    with torch.inference_mode():
        padded = encoder_forward(model, tokens, lengths)
        flat, positions, starts, widest = _packed(tokens, lengths)
        packed = packed_encoder_forward(model, flat, positions, starts, widest)
    real = torch.arange(tokens.shape[1])[None, :] < lengths[:, None]
    pooled = (padded * real[:, :, None]).sum(1) / lengths[:, None]
    np.testing.assert_allclose(pooled.numpy(), reference["pooled"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(padded[:, 0].numpy(), reference["first"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(padded[rows, lengths - 1].numpy(), reference["last"], atol=1e-5, rtol=0)
    torch.testing.assert_close(packed, padded[real], atol=1e-5, rtol=0)


def test_alibi_slopes_and_bias() -> None:
    assert alibi_slopes(8) == [2.0**-k for k in range(1, 9)]  # the ALiBi paper's slopes for 8 heads
    # 12 heads (DNABERT-2): the 8-head series, then every other slope of the 16-head series 2**(-k/2)
    assert alibi_slopes(12) == pytest.approx([2.0**-k for k in range(1, 9)] + [2.0**-0.5, 2.0**-1.5, 2.0**-2.5, 2.0**-3.5])
    bias = alibi_bias(torch.tensor([0.5, 0.25]), 3)
    assert bias.shape == (2, 3, 3) and bias[0, 0, 2] == bias[0, 2, 0] == -1.0 and bias[1, 1, 0] == -0.25
    assert torch.all(bias.diagonal(dim1=1, dim2=2) == 0)


def test_unpadded_layout() -> None:
    rows, columns, keep = unpadded_layout(torch.tensor([0, 2, 5, 6], dtype=torch.int32), 3)
    assert rows.tolist() == [0, 0, 1, 1, 1, 2] and columns.tolist() == [0, 1, 0, 1, 2, 0]
    assert keep.tolist() == [[True, True, False], [True, True, True], [True, False, False]]


def _attention_per_row(q, k, v, starts, slopes):
    """Plain attention with the ALiBi bias, one sequence at a time (what the packed kernels must compute)."""
    out = torch.empty_like(q)
    for begin, end in zip(starts[:-1].tolist(), starts[1:].tolist()):
        qi, ki, vi = (t[begin:end].transpose(0, 1).float() for t in (q, k, v))  # [heads, tokens, dim]
        scores = qi @ ki.transpose(1, 2) / math.sqrt(q.shape[-1]) + alibi_bias(slopes, end - begin)
        out[begin:end] = (scores.softmax(-1) @ vi).transpose(0, 1).to(q.dtype)
    return out


def test_packed_attention_equals_attention_per_sequence() -> None:
    generator = torch.Generator().manual_seed(5)
    starts = torch.tensor([0, 1, 9, 12, 40], dtype=torch.int32)
    q, k, v = (torch.randn(40, 4, 8, generator=generator) for _ in range(3))
    slopes = torch.tensor(alibi_slopes(4))
    expected = _attention_per_row(q, k, v, starts, slopes)
    torch.testing.assert_close(alibi_varlen_attention(q, k, v, starts, 28, slopes), expected, atol=1e-5, rtol=0)


def test_the_flash_attention_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where FlashAttention's varlen kernel runs (CUDA, half precision, flash_attn installed), it gets
    the packed tensors, the row starts, the widest row and the slopes in fp32; checked here with a
    stand-in kernel computing the attention one sequence at a time (no GPU needed)."""
    calls = []

    def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                               softmax_scale=None, causal=False, alibi_slopes=None):
        calls.append((cu_seqlens_q.dtype, max_seqlen_q, max_seqlen_k, alibi_slopes.dtype, q.is_contiguous(), causal))
        return _attention_per_row(q, k, v, cu_seqlens_q, alibi_slopes)

    monkeypatch.setitem(sys.modules, "flash_attn", types.SimpleNamespace(flash_attn_varlen_func=flash_attn_varlen_func))
    monkeypatch.setattr(dnabert, "flash_alibi_runs", lambda device, dtype: True)
    generator = torch.Generator().manual_seed(6)
    starts = torch.tensor([0, 5, 7, 20], dtype=torch.int32)
    qkv = torch.randn(20, 3, 4, 8, generator=generator)  # the layout of the fused product: not contiguous per part
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    slopes = torch.tensor(alibi_slopes(4))
    got = alibi_varlen_attention(q, k, v, starts, 13, slopes)
    assert calls == [(torch.int32, 13, 13, torch.float32, True, False)]
    monkeypatch.setattr(dnabert, "flash_alibi_runs", lambda device, dtype: False)
    torch.testing.assert_close(got, alibi_varlen_attention(q, k, v, starts, 13, slopes), atol=1e-5, rtol=0)


def test_flash_attention_is_used_only_where_it_can_run(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not dnabert.flash_alibi_runs(torch.device("cpu"), torch.bfloat16)
    dnabert.flash_alibi_available.cache_clear()
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # not installed
    assert not dnabert.flash_alibi_available(0)
    dnabert.flash_alibi_available.cache_clear()
    monkeypatch.setitem(sys.modules, "flash_attn", types.SimpleNamespace(flash_attn_varlen_func=lambda q, k, v: q))
    assert not dnabert.flash_alibi_available(0)  # a kernel without ALiBi
    dnabert.flash_alibi_available.cache_clear()


# --------------------------------------------------------------------------- files and names


def test_the_test_model_is_in_dnabert_s_format(test_models) -> None:
    folder = Path(test_models.dna)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "bert_layers.BertModel" and config["model_type"] == "bert"
    assert {"alibi_starting_size", "attention_probs_dropout_prob", "type_vocab_size"} <= config.keys()
    weights = torch.load(folder / "pytorch_model.bin", weights_only=True)
    assert "encoder.layer.1.attention.self.Wqkv.weight" in weights and "encoder.layer.0.mlp.gated_layers.weight" in weights
    assert "encoder.layer.0.mlp.gated_layers.bias" not in weights and "pooler.dense.weight" in weights
    assert weights["encoder.layer.0.mlp.gated_layers.weight"].shape == (2 * config["intermediate_size"], 32)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    assert tokenizer["model"]["type"] == "BPE" and tokenizer["post_processor"]["type"] == "TemplateProcessing"
    assert not list(folder.glob("*.py"))


def test_published_names() -> None:
    assert published_to_ours("encoder.layer.11.attention.self.Wqkv.weight") == "layers.11.qkv.weight"
    assert published_to_ours("bert.encoder.layer.0.mlp.gated_layers.weight") == "layers.0.mlp_in.weight"
    assert published_to_ours("encoder.layer.3.output.LayerNorm.gamma") == "layers.3.mlp_norm.weight"
    assert published_to_ours("embeddings.LayerNorm.beta") == "embeddings.norm.bias"
    for unused in ("pooler.dense.weight", "cls.predictions.bias", "bert.embeddings.position_ids"):
        assert published_to_ours(unused) is None
    assert published_to_ours("encoder.layer.0.mlp.swiglu.weight") == "encoder.layer.0.mlp.swiglu.weight"


def test_dnabert_2_117m_layout_and_safetensors_load_the_same(test_models, tmp_path: Path) -> None:
    """DNABERT-2-117M's file (saved from its masked-LM model: a ``bert.`` prefix and an LM head), and
    the same weights as model.safetensors, give the same model as DNABERT-S's layout."""
    safetensors = pytest.importorskip("safetensors.torch")
    weights = torch.load(Path(test_models.dna) / "pytorch_model.bin", weights_only=True)
    mlm = tmp_path / "mlm"
    mlm.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (mlm / name).write_bytes((Path(test_models.dna) / name).read_bytes())
    torch.save({**{f"bert.{k}": v for k, v in weights.items() if not k.startswith("pooler.")},
                "cls.predictions.bias": torch.zeros(300)}, mlm / "pytorch_model.bin")
    converted = tmp_path / "converted"
    converted.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (converted / name).write_bytes((Path(test_models.dna) / name).read_bytes())
    safetensors.save_file(weights, converted / "model.safetensors", metadata={"format": "pt"})
    assert read_safetensors(converted / "model.safetensors").keys() == weights.keys()
    expected = load_model_folder(Path(test_models.dna), "dna")[0].state_dict()
    for folder in (mlm, converted):
        got = load_model_folder(folder, folder.name)[0].state_dict()
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)


def test_read_safetensors_equals_the_library(tmp_path: Path) -> None:
    safetensors = pytest.importorskip("safetensors.torch")
    tensors = {"a": torch.randn(3, 4), "b": torch.randn(5).half(), "c": torch.arange(7), "d": torch.randn(2, 2).bfloat16(),
               "e": torch.zeros(0, 3)}
    safetensors.save_file(tensors, tmp_path / "x.safetensors", metadata={"format": "pt"})
    got = read_safetensors(tmp_path / "x.safetensors")
    assert got.keys() == tensors.keys() and all(torch.equal(got[k], tensors[k]) for k in tensors)
    assert read_safetensors(tmp_path / "x.safetensors", data=False)["a"] == (3, 4)
    (tmp_path / "bad.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_safetensors(tmp_path / "bad.safetensors")


def test_weights_that_do_not_match_the_config(test_models, tmp_path: Path) -> None:
    folder = tmp_path / "dna"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (folder / name).write_bytes((Path(test_models.dna) / name).read_bytes())
    weights = torch.load(Path(test_models.dna) / "pytorch_model.bin", weights_only=True)
    cases = {
        "missing layers.1.mlp_out.weight": {k: v for k, v in weights.items() if k != "encoder.layer.1.mlp.wo.weight"},
        "wrong shape layers.0.qkv.weight": {**weights, "encoder.layer.0.attention.self.Wqkv.weight": torch.zeros(3, 32)},
        "unexpected layers.2.qkv.weight": {**weights, "encoder.layer.2.attention.self.Wqkv.weight": torch.zeros(96, 32)},
    }
    for message, state in cases.items():
        torch.save(state, folder / "pytorch_model.bin")
        with pytest.raises(ModelError, match=message):
            inspect_model_folder(folder, "dna")
