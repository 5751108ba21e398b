"""Tiny random models in the real on-disk formats, for tests, the bundled demo and benchmarks.

- ESM: fair-esm's ``ESM2`` with random weights, saved like fair-esm's own checkpoints
  (``esm2_t{layers}_test_{size}.pt`` = ``{"model": state dict with fair-esm's key prefixes,
  "cfg": {"model": Namespace(...)}}`` plus ``*-contact-regression.pt`` beside it), so
  ``esm.pretrained.load_model_and_alphabet_local`` loads it.
- DNA: a DNABERT-2 (DNABERT-S's architecture) with random weights, in DNABERT-S's published
  on-disk format in ``<outdir>/dna/``: ``config.json`` with its keys and ``auto_map``,
  ``pytorch_model.bin`` with its parameter names, and a BPE tokenizer trained on synthetic DNA
  with the ``tokenizers`` library (``tokenizer.json``; [CLS] ... [SEP] added like DNABERT-S's).
  No transformers needed.
- Classifier: the reference MLP for ``dna_dim + esm_dim`` features with non-trivial
  BatchNorm statistics, as a native checkpoint.

Same ``size`` and ``seed``, same weights (and so the same embeddings and predictions).
"""

from __future__ import annotations

import json
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path

import torch

from virnucpro.atomic import atomic_path
from virnucpro.classifier.model import ClassifierMeta, MLPClassifier

SIZES: dict[str, dict[str, dict[str, int]]] = {
    "tiny": {
        "esm": {"layers": 2, "dim": 32, "heads": 4},
        "dna": {"layers": 2, "hidden": 32, "heads": 4, "intermediate": 64},
    },
    "t6": {
        "esm": {"layers": 6, "dim": 320, "heads": 20},  # the shape of esm2_t6_8M_UR50D
        "dna": {"layers": 4, "hidden": 256, "heads": 4, "intermediate": 1024},
    },
}
DNA_VOCAB_SIZE = 300
DNA_MAX_POSITIONS = 2048
DNA_SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")  # DNABERT-2's order
TOKENIZER_TRAINING_READS = 300


@dataclass
class TestModels:
    """Where make_test_models put the three models."""

    __test__ = False  # not a pytest test class

    esm: Path
    dna: Path
    classifier: Path


def _check_size(size: str) -> dict[str, dict[str, int]]:
    if size not in SIZES:
        raise ValueError(f"unknown test model size {size!r} (choose one of {', '.join(SIZES)})")
    return SIZES[size]


# --------------------------------------------------------------------------- ESM-2


def make_esm(outdir: Path, size: str = "tiny", seed: int = 0) -> Path:
    """A random ESM-2 in fair-esm's checkpoint format; returns the ``.pt`` path."""
    from esm.model.esm2 import ESM2

    shape = _check_size(size)["esm"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ESM2(num_layers=shape["layers"], embed_dim=shape["dim"], attention_heads=shape["heads"])
    state = model.state_dict()
    regression = {k: v for k, v in state.items() if k.startswith("contact_head.")}
    weights = {_fair_esm_key(k): v for k, v in state.items() if not k.startswith("contact_head.")}
    cfg = Namespace(
        arch="ESM2",
        encoder_layers=shape["layers"],
        encoder_embed_dim=shape["dim"],
        encoder_ffn_embed_dim=4 * shape["dim"],
        encoder_attention_heads=shape["heads"],
        token_dropout=True,
        max_positions=1024,
    )
    path = Path(outdir) / f"esm2_t{shape['layers']}_test_{size}.pt"
    _torch_save(path, {"model": weights, "cfg": {"model": cfg}})
    _torch_save(path.with_name(f"{path.stem}-contact-regression.pt"), {"model": regression})
    return path


def _fair_esm_key(key: str) -> str:
    """fair-esm's checkpoint layout: the LM head under ``encoder.``, the rest under ``encoder.sentence_encoder.``."""
    return f"encoder.{key}" if key.startswith("lm_head.") else f"encoder.sentence_encoder.{key}"


def _torch_save(path: Path, payload: object) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


# --------------------------------------------------------------------------- DNABERT-2 (DNABERT-S's format)


def make_dna(outdir: Path, size: str = "tiny", seed: int = 0, shape: dict[str, int] | None = None) -> Path:
    """A random DNABERT-2 in DNABERT-S's published on-disk format; returns the directory (``<outdir>/dna``).

    ``config.json`` with DNABERT-S's keys (``auto_map`` included, naming code files that are not
    written), ``pytorch_model.bin`` with DNABERT-S's parameter names (a plain state dict, pooler
    included), and a BPE tokenizer trained on synthetic DNA (``tokenizer.json``,
    ``tokenizer_config.json``, ``special_tokens_map.json``; [CLS] ... [SEP] added like DNABERT-S's).
    ``shape`` (layers, hidden, heads, intermediate, optionally vocab) overrides the size's.
    """
    shape = shape or _check_size(size)["dna"]
    directory = Path(outdir) / "dna"
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _dna_tokenizer(seed, shape.get("vocab", DNA_VOCAB_SIZE))
    config = dnabert2_config(shape)
    _write_json(directory / "config.json", config)
    _torch_save(directory / "pytorch_model.bin", dnabert2_weights(config, seed))
    with atomic_path(directory / "tokenizer.json") as tmp:
        tokenizer.save(str(tmp))
    special = dict(zip(("unk_token", "cls_token", "sep_token", "pad_token", "mask_token"), DNA_SPECIAL_TOKENS))
    _write_json(directory / "special_tokens_map.json", special)
    _write_json(
        directory / "tokenizer_config.json",
        {**special, "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": DNA_MAX_POSITIONS},
    )
    return directory


def dnabert2_config(shape: dict[str, int]) -> dict:
    """DNABERT-S's ``config.json`` (its keys and fixed values) for a model of ``shape``."""
    return {
        "_name_or_path": "virnucpro/test-dnabert-2",
        "alibi_starting_size": 512,
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_bert.BertConfig",
            "AutoModel": "bert_layers.BertModel",
            "AutoModelForMaskedLM": "bert_layers.BertForMaskedLM",
            "AutoModelForSequenceClassification": "bert_layers.BertForSequenceClassification",
        },
        "classifier_dropout": None,
        "gradient_checkpointing": False,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": shape["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": shape["intermediate"],
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512,
        "model_type": "bert",
        "num_attention_heads": shape["heads"],
        "num_hidden_layers": shape["layers"],
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "transformers_version": "4.28.0",
        "type_vocab_size": 2,
        "use_cache": True,
        "vocab_size": shape.get("vocab", DNA_VOCAB_SIZE),
    }


def dnabert2_weights(config: dict, seed: int) -> dict[str, torch.Tensor]:
    """Random DNABERT-2 weights under DNABERT-S's published names, from ``seed`` alone.

    Matrices ~ N(0, 1/fan_in) (attention scores of order one, so the attention is exercised),
    biases ~ N(0, 0.1^2), LayerNorm scales 1 + N(0, 0.1^2).
    """
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    generator = torch.Generator().manual_seed(seed)

    def normal(*size: int, std: float, mean: float = 0.0) -> torch.Tensor:
        return mean + std * torch.randn(*size, generator=generator)

    def dense(prefix: str, rows: int, columns: int, bias: bool = True) -> dict[str, torch.Tensor]:
        tensors = {f"{prefix}.weight": normal(rows, columns, std=columns**-0.5)}
        return {**tensors, f"{prefix}.bias": normal(rows, std=0.1)} if bias else tensors

    def norm(prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": normal(hidden, std=0.1, mean=1.0), f"{prefix}.bias": normal(hidden, std=0.1)}

    weights = {
        "embeddings.word_embeddings.weight": normal(config["vocab_size"], hidden, std=1.0),
        "embeddings.token_type_embeddings.weight": normal(config["type_vocab_size"], hidden, std=1.0),
        **norm("embeddings.LayerNorm"),
    }
    for number in range(config["num_hidden_layers"]):
        layer = f"encoder.layer.{number}"
        weights.update(dense(f"{layer}.attention.self.Wqkv", 3 * hidden, hidden))
        weights.update(dense(f"{layer}.attention.output.dense", hidden, hidden))
        weights.update(norm(f"{layer}.attention.output.LayerNorm"))
        weights.update(dense(f"{layer}.mlp.gated_layers", 2 * inner, hidden, bias=False))
        weights.update(dense(f"{layer}.mlp.wo", hidden, inner))
        weights.update(norm(f"{layer}.mlp.layernorm"))
    weights.update(dense("pooler.dense", hidden, hidden))
    return weights


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _dna_tokenizer(seed: int, vocab_size: int = DNA_VOCAB_SIZE):
    """A byte-pair tokenizer trained deterministically on synthetic reads, with DNABERT-S's special tokens
    (at most ``vocab_size`` tokens; a larger vocabulary is trained on proportionally more reads)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    from virnucpro.synthetic import synthetic_reads

    backend = Tokenizer(models.BPE(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(DNA_SPECIAL_TOKENS), show_progress=False
    )
    count = TOKENIZER_TRAINING_READS * max(1, vocab_size // DNA_VOCAB_SIZE)
    reads = (seq for _, seq in synthetic_reads(count, (100, 600), seed=seed, prefix="tok"))
    backend.train_from_iterator(reads, trainer)
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    if backend.get_vocab_size() > vocab_size:
        raise RuntimeError(f"the test tokenizer has {backend.get_vocab_size()} tokens, more than {vocab_size}")
    return backend


# --------------------------------------------------------------------------- classifier


def make_classifier(path: Path, dna_dim: int, esm_dim: int, meta: ClassifierMeta, seed: int = 0) -> Path:
    """A seeded native classifier with non-trivial BatchNorm running statistics."""
    from virnucpro.classifier.checkpoints import save_native

    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLPClassifier(dna_dim + esm_dim, hidden_dim=meta.hidden_dim)
    with torch.no_grad():
        size = model.bn1.num_features
        model.bn1.running_mean.copy_(0.1 * torch.randn(size, generator=generator))
        model.bn1.running_var.copy_(0.5 + torch.rand(size, generator=generator))
        model.bn1.weight.copy_(1.0 + 0.1 * torch.randn(size, generator=generator))
        model.bn1.bias.copy_(0.1 * torch.randn(size, generator=generator))
        model.bn1.num_batches_tracked.fill_(100)
    save_native(Path(path), model.eval(), meta)
    return Path(path)


# --------------------------------------------------------------------------- all three


def make_test_models(outdir: Path, size: str = "tiny", seed: int = 0, chunk_length: int = 300) -> TestModels:
    """Write a tiny ESM-2, DNABERT-2 and matching native classifier under ``outdir``."""
    shapes = _check_size(size)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    esm_path = make_esm(outdir, size, seed)
    dna_dir = make_dna(outdir, size, seed)
    dna_dim, esm_dim = shapes["dna"]["hidden"], shapes["esm"]["dim"]
    meta = ClassifierMeta(
        dna_dim=dna_dim,
        esm_dim=esm_dim,
        chunk_length=chunk_length,
        dna_model=str(dna_dir),
        esm_model=str(esm_path),
        esm_layer=shapes["esm"]["layers"],
        source=f"virnucpro make-test-models (size {size}, seed {seed})",
    )
    classifier = make_classifier(outdir / f"classifier_test_{size}_{chunk_length}.pt", dna_dim, esm_dim, meta, seed)
    return TestModels(esm=esm_path, dna=dna_dir, classifier=classifier)
