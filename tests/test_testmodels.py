"""make-test-models: real formats, loadable by the real loaders, deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from virnucpro.classifier.checkpoints import load_native
from virnucpro.classifier.compatibility import check_compatible
from virnucpro.cli import main
from virnucpro.embeddings.dna import load_dna_embedder
from virnucpro.embeddings.esm import load_esm_embedder
from virnucpro.testmodels import make_test_models

PROTEINS = ["MKTAYIAKQRQISFVKSHFSRQ", "MSE", "GGGGSWLLLAAPEKRRHD"]
DNA = ["ACGTTGCAAGGCTTAGCCTAG", "ATGAAAGCGTTTTAA", "GGGCCCATATATCGCGTTAAGGCCA"]


def _esm_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def _dna_weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(Path(folder) / "pytorch_model.bin", weights_only=True)


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fair_esm_checkpoint_layout(test_models) -> None:
    checkpoint = torch.load(test_models.esm, map_location="cpu", weights_only=False)
    assert checkpoint["cfg"]["model"].encoder_layers == 2
    assert all(k.startswith(("encoder.sentence_encoder.", "encoder.lm_head.")) for k in checkpoint["model"])
    regression = Path(str(test_models.esm).replace(".pt", "-contact-regression.pt"))
    assert set(torch.load(regression, weights_only=True)["model"]) == {
        "contact_head.regression.weight",
        "contact_head.regression.bias",
    }


def test_dna_directory_loads_offline_with_transformers_tokenizer(test_models, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DNA folder is in DNABERT-S's format (tests/test_dnabert.py checks its files): transformers
    reads its tokenizer (DNABERT-S's users load it with AutoTokenizer) with the same token ids as ours."""
    from transformers import AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(str(test_models.dna))
    assert 100 <= len(tokenizer) <= 300
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("ACGTACGTTAGC")["input_ids"])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and len(tokens) < 14  # BPE merges bases
    assert tokenizer.pad_token == "[PAD]" and tokenizer.mask_token == "[MASK]" and tokenizer.unk_token == "[UNK]"
    dna = load_dna_embedder(str(test_models.dna))
    assert dna.encode(DNA) == tokenizer([s.upper() for s in DNA])["input_ids"]
    assert dna.model.shape.hidden == 32 and dna.model.shape.layers == 2


def test_classifier_matches_the_embedding_models(test_models) -> None:
    model, meta = load_native(test_models.classifier)
    assert not model.training and (meta.dna_dim, meta.esm_dim, meta.chunk_length) == (32, 32, 300)
    assert not torch.allclose(model.bn1.running_mean, torch.zeros(512))
    assert not torch.allclose(model.bn1.running_var, torch.ones(512))
    esm = load_esm_embedder(str(test_models.esm))
    dna = load_dna_embedder(str(test_models.dna))
    check_compatible(
        meta,
        dna_dim=dna.dim,
        esm_dim=esm.dim,
        chunk_length=300,
        dna_model=dna.identity()["model"],
        esm_model=esm.identity()["model"],
        esm_layer=esm.layer,
    )


def test_same_seed_same_models_and_embeddings(tmp_path: Path, test_models) -> None:
    again = make_test_models(tmp_path / "again")
    other = make_test_models(tmp_path / "other", seed=1)
    assert _same_tensors(_esm_weights(test_models.esm), _esm_weights(again.esm))
    assert not _same_tensors(_esm_weights(test_models.esm), _esm_weights(other.esm))
    dna_weights = _dna_weights(test_models.dna)
    assert _same_tensors(dna_weights, _dna_weights(again.dna))
    assert not _same_tensors(dna_weights, _dna_weights(other.dna))
    assert (Path(test_models.dna) / "tokenizer.json").read_bytes() == (again.dna / "tokenizer.json").read_bytes()
    classifiers = [load_native(m.classifier)[0].state_dict() for m in (test_models, again)]
    assert _same_tensors(*classifiers)
    esm_runs = [load_esm_embedder(str(m.esm)).embed_batch(PROTEINS) for m in (test_models, again)]
    np.testing.assert_array_equal(*esm_runs)
    dna_runs = [load_dna_embedder(str(m.dna)).embed_batch(DNA) for m in (test_models, again)]
    np.testing.assert_array_equal(*dna_runs)


def test_cli_prints_the_three_paths(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["make-test-models", str(tmp_path / "m"), "--chunk-length", "500", "--seed", "2", "-q"])
    assert code == 0
    lines = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert set(lines) == {"esm", "dna", "classifier"}
    assert all(Path(p).exists() for p in lines.values())
    assert load_native(Path(lines["classifier"]))[1].chunk_length == 500


def test_every_file_has_the_usual_mode(tmp_path: Path) -> None:
    """Models shared on a cluster must be readable by others (temporary files are made 0600)."""
    import os

    mask = os.umask(0o022)
    try:
        made = make_test_models(tmp_path / "models")
    finally:
        os.umask(mask)
    files = [p for p in (tmp_path / "models").rglob("*") if p.is_file()]
    assert made.dna / "pytorch_model.bin" in files
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: "0o644" for p in files}


def test_unknown_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size"):
        make_test_models(tmp_path, size="huge")
    assert main(["make-test-models", str(tmp_path / "x"), "--size", "huge"]) == 1


def test_a_dna_model_with_a_larger_vocabulary_like_dnabert_s(tmp_path: Path) -> None:
    """benchmarks/gpu_predict.py asks for DNABERT-S's 4,096-token vocabulary: fewer, longer tokens per read."""
    from virnucpro.testmodels import make_dna

    shape = {"layers": 1, "hidden": 32, "heads": 4, "intermediate": 64}
    small = load_dna_embedder(str(make_dna(tmp_path / "small", shape=shape)))
    large = load_dna_embedder(str(make_dna(tmp_path / "large", shape={**shape, "vocab": 1024})))
    read = "ATGGCTAGCAAAGGAGAAGAACTTTTCACTGGAGTTGTCCCAATTCTTGTTGAATTAGATGGTGATGTTAATGGGCACAAATTTTCTGTC" * 3
    assert 300 < large.tokenizer.get_vocab_size() <= 1024
    assert len(large.encode([read])[0]) < len(small.encode([read])[0])
    assert large.embed_batch([read]).shape == (1, 32)
