"""ESM-2 embeddings: fair-esm loading, token-budget batching equal to one-by-one, long proteins, errors."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from virnucpro.contracts import STAGE_ESM
from virnucpro.embeddings.esm import (
    MAX_RESIDUES,
    EsmEmbedder,
    allow_esm_checkpoints,
    cast_model,
    load_esm_embedder,
    split_windows,
    token_budget_batches,
)
from virnucpro.embeddings.precision import resolve_dtype
from virnucpro.errors import InputError, ModelError

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"


def _proteins(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lengths = [1, 7, 7, 30, 99, 166, 250, 400, 1022, 1023, 2500]
    return ["".join(rng.choices(AMINO_ACIDS, k=n)) for n in lengths]


@pytest.fixture(scope="module")
def embedder(test_models) -> EsmEmbedder:
    return load_esm_embedder(str(test_models.esm))


def _single(embedder: EsmEmbedder, sequences: list[str]) -> np.ndarray:
    return np.stack([embedder.embed_batch([s])[0] for s in sequences])


def _by_reference(embedder: EsmEmbedder, sequence: str) -> np.ndarray:
    """Mean over residues 1..len of the final layer, straight from the fair-esm model."""
    _, _, tokens = embedder.alphabet.get_batch_converter()([("x", sequence)])
    with torch.inference_mode():
        hidden = embedder.model(tokens, repr_layers=[embedder.layer])["representations"][embedder.layer]
    return hidden[0, 1 : len(sequence) + 1].mean(0).numpy()


def test_loads_through_fair_esm_local_loader(test_models) -> None:
    import esm

    allow_esm_checkpoints()
    model, alphabet = esm.pretrained.load_model_and_alphabet_local(str(test_models.esm))
    assert model.num_layers == 2 and model.embed_dim == 32
    assert alphabet.prepend_bos and alphabet.append_eos


def test_identity_and_defaults(embedder: EsmEmbedder, test_models) -> None:
    assert embedder.stage == STAGE_ESM
    assert embedder.dim == 32 and embedder.layer == 2  # final layer by default
    identity = embedder.identity()
    assert identity["model"] == str(Path(test_models.esm).resolve())
    assert identity["layer"] == "2" and identity["precision"] == "fp32"
    assert all(isinstance(v, str) for v in identity.values())


def test_pooling_is_mean_over_residues_excluding_bos_eos(embedder: EsmEmbedder) -> None:
    sequence = _proteins()[4]
    np.testing.assert_allclose(embedder.embed_batch([sequence])[0], _by_reference(embedder, sequence), atol=1e-6)
    # and it is not the mean with BOS/EOS included
    _, _, tokens = embedder.alphabet.get_batch_converter()([("x", sequence)])
    with torch.inference_mode():
        hidden = embedder.model(tokens, repr_layers=[2])["representations"][2][0]
    assert not np.allclose(embedder.embed_batch([sequence])[0], hidden.mean(0).numpy(), atol=1e-4)


@pytest.fixture(scope="module")
def singles(embedder: EsmEmbedder) -> np.ndarray:
    """``_proteins()`` embedded one at a time (computed once for every budget)."""
    return _single(embedder, _proteins())


@pytest.mark.parametrize("budget", [1, 100, 1030, 4096])
def test_batched_equals_single(embedder: EsmEmbedder, singles: np.ndarray, budget: int) -> None:
    sequences = _proteins()
    expected = singles
    batches = embedder.make_batches(sequences, budget)
    assert sorted(i for batch in batches for i in batch) == list(range(len(sequences)))
    got = np.zeros_like(expected)
    for batch in batches:
        got[batch] = embedder.embed_batch([sequences[i] for i in batch])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert got.dtype == np.float32


def test_batches_respect_the_token_budget(embedder: EsmEmbedder) -> None:
    sequences = _proteins()[:-2]  # up to 1022 residues: one row each
    for budget in (64, 600, 5000):
        for batch in embedder.make_batches(sequences, budget):
            padded = max(embedder.token_count(sequences[i]) for i in batch) * len(batch)
            assert padded <= budget or len(batch) == 1


def test_batching_matches_fair_esm_rule() -> None:
    from esm.data import FastaBatchedDataset

    lengths = [5, 300, 17, 17, 90, 1000, 2, 64, 64, 700]
    sequences = ["A" * n for n in lengths]
    dataset = FastaBatchedDataset([str(i) for i in range(len(lengths))], sequences)
    for budget in (50, 512, 2048):
        expected = dataset.get_batch_indices(budget, extra_toks_per_seq=2)
        assert token_budget_batches([(1, n + 2) for n in lengths], lengths, budget) == expected


def test_long_protein_is_windowed_and_residue_weighted(embedder: EsmEmbedder) -> None:
    sequence = _proteins()[-1]  # 2500 residues
    windows = split_windows(sequence)
    assert "".join(windows) == sequence and len(windows) == 3
    assert all(len(w) <= MAX_RESIDUES for w in windows) and max(map(len, windows)) - min(map(len, windows)) <= 1
    weighted = sum(len(w) * _by_reference(embedder, w) for w in windows) / len(sequence)
    np.testing.assert_allclose(embedder.embed_batch([sequence])[0], weighted, atol=1e-5)
    assert embedder.token_count(sequence) == 3 * (834 + 2)
    assert embedder.token_count("A" * MAX_RESIDUES) == MAX_RESIDUES + 2


def test_window_sums_are_added_per_protein_in_a_fixed_order() -> None:
    from virnucpro.embeddings.esm import _sum_rows_by_owner

    rows = torch.from_numpy(np.random.default_rng(3).normal(size=(6, 4)).astype(np.float32))
    owners = [0, 0, 0, 1, 2, 2]
    got = _sum_rows_by_owner(rows, owners, 3)
    expected = np.stack([rows[0:3].sum(0).numpy(), rows[3].numpy(), rows[4:6].sum(0).numpy()])
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    assert _sum_rows_by_owner(rows, list(range(6)), 6) is rows  # one window each: nothing to add


def test_invalid_and_empty_proteins(embedder: EsmEmbedder) -> None:
    with pytest.raises(InputError, match="invalid residue"):
        embedder.embed_batch(["ACDE*FG"])
    with pytest.raises(InputError, match="empty"):
        embedder.embed_batch([""])
    np.testing.assert_array_equal(embedder.embed_batch(["acdef"]), embedder.embed_batch(["ACDEF"]))


def test_layer_choice(test_models) -> None:
    first = load_esm_embedder(str(test_models.esm), layer=1)
    last = load_esm_embedder(str(test_models.esm), layer=-1)
    assert first.layer == 1 and last.layer == 2
    assert not np.allclose(first.embed_batch(["MKVLA"]), last.embed_batch(["MKVLA"]))
    with pytest.raises(ModelError, match="layer 3"):
        load_esm_embedder(str(test_models.esm), layer=3)


def test_model_errors(tmp_path: Path, test_models) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_esm_embedder(str(tmp_path / "esm2_t6_missing.pt"))
    with pytest.raises(ModelError, match="unknown ESM model"):
        load_esm_embedder("esm2_not_a_model")
    lonely = tmp_path / "esm2_t2_lonely.pt"
    lonely.write_bytes(Path(test_models.esm).read_bytes())
    with pytest.raises(ModelError, match="contact-regression"):
        load_esm_embedder(str(lonely))
    junk = tmp_path / "esm2_t2_junk.pt"
    junk.write_bytes(b"not a checkpoint")
    (tmp_path / "esm2_t2_junk-contact-regression.pt").write_bytes(b"")
    with pytest.raises(ModelError) as caught:
        load_esm_embedder(str(junk))
    assert "\n" not in str(caught.value)


def test_hub_name_offline_is_a_clear_model_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import esm

    def offline(name):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(esm.pretrained, "load_model_and_alphabet_hub", offline)
    with pytest.raises(ModelError, match=r"esm\.pretrained\.esm2_t6_8M_UR50D\(\)"):
        load_esm_embedder("esm2_t6_8M_UR50D")


def test_a_hub_name_s_fingerprint_is_that_of_its_cached_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, test_models
) -> None:
    import esm

    from virnucpro.embeddings.base import local_model_fingerprint
    from virnucpro.embeddings.esm import allow_esm_checkpoints, hub_checkpoint

    allow_esm_checkpoints()
    local = esm.pretrained.load_model_and_alphabet_local(str(test_models.esm))
    monkeypatch.setattr(esm.pretrained, "load_model_and_alphabet_hub", lambda name: local)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    cached = Path(hub_checkpoint("esm2_t6_8M_UR50D"))
    assert cached.parent == tmp_path / "checkpoints"
    cached.parent.mkdir()
    cached.write_bytes(b"weights of download A")
    first = load_esm_embedder("esm2_t6_8M_UR50D").identity()["model_files"]
    assert first == local_model_fingerprint(str(cached)) != ""
    cached.write_bytes(b"weights of download B")  # fetched again, same size: --resume must notice
    assert load_esm_embedder("esm2_t6_8M_UR50D").identity()["model_files"] != first


def test_precision_choice(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("fp16", "cpu") == torch.float32  # fp16 is emulated on CPUs: fp32
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert resolve_dtype("auto", "cuda:0") == torch.bfloat16
    assert resolve_dtype("fp32", "cuda:1") == torch.float32
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert resolve_dtype("auto", "cuda") == torch.float16
    assert resolve_dtype("bf16", "cuda") == torch.bfloat16


def test_half_precision_cast_keeps_rotary_positions_exact(test_models) -> None:
    """bf16 cannot hold positions > 256: the rotary tables are computed in fp32 and then cast."""
    full = load_esm_embedder(str(test_models.esm))
    half_model = cast_model(_fresh(test_models), "cpu", torch.bfloat16)
    half = EsmEmbedder(half_model, full.alphabet, full.name, full.layer, dtype=torch.bfloat16)
    rotary = next(m for m in half.model.modules() if type(m).__name__ == "RotaryEmbedding")
    reference = next(m for m in full.model.modules() if type(m).__name__ == "RotaryEmbedding")
    assert torch.equal(rotary.inv_freq, reference.inv_freq)  # fp32, not rounded through bf16
    x = torch.zeros(1, 600, 8, dtype=torch.bfloat16)
    cos, _sin = rotary._update_cos_sin_tables(x, seq_dimension=-2)
    assert cos.dtype == torch.bfloat16
    positions = torch.arange(600, dtype=torch.float32)
    exact = torch.cat([torch.outer(positions, reference.inv_freq)] * 2, dim=-1).cos().to(torch.bfloat16)
    assert torch.equal(cos[0], exact)
    sequence = _proteins()[7]
    a, b = full.embed_batch([sequence])[0], half.embed_batch([sequence])[0]
    assert float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)) > 0.99


def _fresh(test_models):
    import esm

    allow_esm_checkpoints()
    model, _alphabet = esm.pretrained.load_model_and_alphabet_local(str(test_models.esm))
    return model.eval()
