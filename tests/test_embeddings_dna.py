"""DNA embeddings: masked mean with [CLS]/[SEP], batched equal to one-at-a-time, DNABERT-S-style remote code."""

from __future__ import annotations

import json
import random
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from virnucpro.contracts import STAGE_DNA
from virnucpro.embeddings.dna import DnaEmbedder, load_dna_embedder, resolve_dna_source
from virnucpro.errors import InputError, ModelError


def _dna(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices("ACGT", k=n)) for n in (1, 5, 40, 40, 120, 301, 500, 777)]


@pytest.fixture(scope="module")
def embedder(test_models) -> DnaEmbedder:
    return load_dna_embedder(str(test_models.dna))


def _single(embedder: DnaEmbedder, sequences: list[str]) -> np.ndarray:
    return np.stack([embedder.embed_batch([s])[0] for s in sequences])


def _batched(embedder: DnaEmbedder, sequences: list[str], budget: int) -> np.ndarray:
    batches = embedder.make_batches(sequences, budget)
    assert sorted(i for batch in batches for i in batch) == list(range(len(sequences)))
    out = np.zeros((len(sequences), embedder.dim), dtype=np.float32)
    for batch in batches:
        out[batch] = embedder.embed_batch([sequences[i] for i in batch])
    return out


def _upstream_way(embedder: DnaEmbedder, sequence: str) -> np.ndarray:
    """The reference: one sequence, ``model(input_ids)[0]``, mean over every token."""
    input_ids = embedder.tokenizer(sequence, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        hidden = embedder.model(input_ids)[0]
    return hidden[0].mean(dim=0).numpy()


def test_identity(embedder: DnaEmbedder, test_models) -> None:
    assert embedder.stage == STAGE_DNA and embedder.dim == 32
    identity = embedder.identity()
    assert identity["model"] == str(Path(test_models.dna).resolve()) and identity["precision"] == "fp32"


def test_pooling_includes_cls_and_sep(embedder: DnaEmbedder) -> None:
    sequence = _dna()[4]
    encoded = embedder.tokenizer(sequence)["input_ids"]
    assert encoded[0] == embedder.tokenizer.cls_token_id and encoded[-1] == embedder.tokenizer.sep_token_id
    got = embedder.embed_batch([sequence])[0]
    np.testing.assert_allclose(got, _upstream_way(embedder, sequence), atol=1e-6)
    with torch.inference_mode():  # and it differs from the mean without the special tokens
        hidden = embedder.model(torch.tensor([encoded]))[0][0]
    assert not np.allclose(got, hidden[1:-1].mean(0).numpy(), atol=1e-4)


@pytest.fixture(scope="module")
def singles(embedder: DnaEmbedder) -> np.ndarray:
    """``_dna()`` embedded one at a time (computed once for every budget)."""
    return _single(embedder, _dna())


@pytest.mark.parametrize("budget", [1, 64, 300, 10_000])
def test_batched_equals_single(embedder: DnaEmbedder, singles: np.ndarray, budget: int) -> None:
    np.testing.assert_allclose(_batched(embedder, _dna(), budget), singles, atol=1e-5, rtol=0)


def test_batches_respect_the_token_budget(embedder: DnaEmbedder) -> None:
    sequences = _dna()
    for budget in (64, 300, 1000):
        for batch in embedder.make_batches(sequences, budget):
            padded = max(embedder.token_count(sequences[i]) for i in batch) * len(batch)
            assert padded <= budget or len(batch) == 1
    assert embedder.token_count("ACGT") == len(embedder.tokenizer("ACGT")["input_ids"])


@pytest.mark.slow
def test_threads_can_share_the_embedder(embedder: DnaEmbedder) -> None:
    """CPU batches run side by side: batching (tokenizer without padding) and embedding (with
    padding) from eight threads at once; transformers switches the padding on the shared Rust
    tokenizer at each call, which fails ("Already borrowed", unpadded tensors) without the lock."""
    from concurrent.futures import ThreadPoolExecutor

    rng = random.Random(3)
    sequences = ["".join(rng.choices("ACGT", k=rng.randint(100, 220))) for _ in range(400)]
    expected = {i: embedder.embed_batch(sequences[i : i + 2]) for i in range(0, 400, 8)}

    def task(i: int) -> np.ndarray | None:
        if i % 8:
            embedder.make_batches(sequences[i : i + 50], 1000)
            return None
        return embedder.embed_batch(sequences[i : i + 2])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(task, range(0, 400, 2)))  # raises the first thread's error, if any
    for i, got in zip(range(0, 400, 2), results):
        if i % 8 == 0:
            np.testing.assert_allclose(got, expected[i], atol=1e-5, rtol=0)


def test_empty_sequence_is_an_input_error(embedder: DnaEmbedder) -> None:
    with pytest.raises(InputError):
        embedder.embed_batch(["ACGT", ""])


def test_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_dna_embedder(str(tmp_path / "no_such_model"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelError, match="directory"):
        load_dna_embedder(str(tmp_path / "file"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError) as caught:
        load_dna_embedder(str(tmp_path / "empty"))
    assert "\n" not in str(caught.value)
    for not_a_model in (tmp_path, tmp_path / "empty"):  # e.g. the models/ folder: refused before any work
        with pytest.raises(ModelError, match=r"save_pretrained layout \(with config\.json\)"):
            resolve_dna_source(str(not_a_model))


# --------------------------------------------------------------------------- DNABERT-S-style remote code

# Written for this test (not DNABERT-S's code): the patterns the loader must cope with - a
# module-level ``flash_attn_qkvpacked_func`` that is set when Triton imports and fails when
# called, an ALiBi table built in __init__ from a plain CPU tensor, a tuple output, and an
# ``einops`` import (transformers refuses remote code whose imports are not installed).
REMOTE_CODE = textwrap.dedent(
    '''
    import math

    import torch
    from einops import rearrange
    from torch import nn
    from transformers import BertConfig, PreTrainedModel


    def _triton_kernel(*args, **kwargs):
        raise RuntimeError("dot() got an unexpected keyword argument 'trans_b'")


    flash_attn_qkvpacked_func = _triton_kernel


    class AlibiTable(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.heads = config.num_attention_heads
            self.rebuild_alibi_tensor(size=8)

        def rebuild_alibi_tensor(self, size, device=None):
            slopes = torch.Tensor([0.5 ** (i + 1) for i in range(self.heads)]).to(device)
            positions = torch.arange(size, device=device)
            self.alibi = -slopes[:, None, None] * (positions[None, :] - positions[:, None]).abs()[None]
            self._current_alibi_size = size


    class StandInModel(PreTrainedModel):
        config_class = BertConfig
        base_model_prefix = "stand_in"

        def __init__(self, config):
            super().__init__(config)
            self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
            self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
            self.encoder = AlibiTable(config)
            self.post_init()

        def forward(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs):
            if flash_attn_qkvpacked_func is not None:
                flash_attn_qkvpacked_func()
            mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            x = self.embed(input_ids)
            n = x.shape[1]
            if self.encoder._current_alibi_size < n:
                self.encoder.rebuild_alibi_tensor(size=n, device=x.device)
            q, k, v = rearrange(self.qkv(x), "b s (t d) -> t b s d", t=3)
            scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]) + self.encoder.alibi[0, :n, :n].to(x.device)
            scores = scores.masked_fill(~mask.bool()[:, None, :], float("-inf"))
            hidden = torch.tanh(scores.softmax(-1) @ v + x) * mask[:, :, None]
            return hidden, None
    '''
)


@pytest.fixture(scope="module")
def remote_code_model(test_models, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A local model directory whose config points AutoModel at REMOTE_CODE (trust_remote_code)."""
    import importlib.util

    directory = tmp_path_factory.mktemp("remote") / "stand_in_dnabert"
    directory.mkdir()
    (directory / "stand_in_layers.py").write_text(REMOTE_CODE)
    spec = importlib.util.spec_from_file_location("stand_in_layers_for_saving", directory / "stand_in_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(test_models.dna))
    config = transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_attention_heads=2, num_hidden_layers=1, intermediate_size=32
    )
    config.auto_map = {"AutoModel": "stand_in_layers.StandInModel"}
    torch.manual_seed(1)
    model = module.StandInModel(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory, model


@pytest.mark.skipif(int(transformers.__version__.split(".")[0]) < 5, reason="meta-device init is transformers 5")
def test_remote_code_fails_on_meta_device_without_the_loader(remote_code_model) -> None:
    directory, _ = remote_code_model
    with pytest.raises(Exception, match="meta"):
        transformers.AutoModel.from_pretrained(str(directory), trust_remote_code=True)


def test_remote_code_model_loads_and_uses_pytorch_attention(remote_code_model) -> None:
    directory, saved = remote_code_model
    embedder = load_dna_embedder(str(directory))
    assert type(embedder.model).__name__ == "StandInModel"
    assert torch.equal(embedder.model.embed.weight, saved.embed.weight)  # weights loaded, not re-initialised
    assert embedder.model.encoder.alibi.device.type == "cpu"
    sequences = _dna(seed=3)  # would raise the Triton error if the kernel were still selected
    single = _single(embedder, sequences)
    np.testing.assert_allclose(_batched(embedder, sequences, 200), single, atol=1e-5, rtol=0)
    np.testing.assert_allclose(single[5], _upstream_way(embedder, sequences[5]), atol=1e-6)


def test_local_directory_copy_loads_offline(test_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    copy = tmp_path / "DNABERT-S"
    shutil.copytree(test_models.dna, copy)
    embedder = load_dna_embedder(str(copy))
    original = load_dna_embedder(str(test_models.dna))
    np.testing.assert_array_equal(embedder.embed_batch(_dna()[:3]), original.embed_batch(_dna()[:3]))


def _hub_cache_snapshot(model_dir: Path, home: Path, hub_id: str) -> Path:
    """``model_dir`` copied into a Hugging Face cache under ``home`` as the snapshot of ``hub_id``."""
    snapshot = home / "hub" / ("models--" + hub_id.replace("/", "--")) / "snapshots" / ("0" * 40)
    shutil.copytree(model_dir, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    return snapshot


def _load_from_hub_cache(home: Path, hub_id: str, workdir: Path) -> tuple[list[str], str, str]:
    """Load ``hub_id`` with load_dna_embedder in a subprocess whose Hugging Face cache is ``home``
    and whose hub is unreachable; returns [embedding width, model name], the model files'
    fingerprint and stderr."""
    import os
    import subprocess
    import sys

    code = textwrap.dedent(
        f"""
        import sys
        import huggingface_hub.file_download as download

        def asked(*args, **kwargs):
            print("ASKED THE HUB", file=sys.stderr)
            raise OSError("no network in this test")

        download.get_hf_file_metadata = asked
        from virnucpro.embeddings.dna import load_dna_embedder

        embedder = load_dna_embedder({hub_id!r})
        print(embedder.embed_batch(["ACGTACGTAA"]).shape[1], embedder.identity()["model"])
        print(embedder.identity()["model_files"])
        """
    )
    env = {**os.environ, "HF_HOME": str(home), "HF_ENDPOINT": "http://127.0.0.1:9"}
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=workdir, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    first, fingerprint = done.stdout.splitlines()
    return first.split(), fingerprint, done.stderr


@pytest.mark.slow
def test_a_hub_id_in_the_local_cache_loads_without_asking_the_hub(test_models, tmp_path: Path) -> None:
    """Offline, the hub client retries each file for half a minute before using the cache: a cached
    model must not ask at all. A subprocess, so the cache location is read from the environment."""
    from virnucpro.embeddings.base import local_model_fingerprint

    snapshot = _hub_cache_snapshot(test_models.dna, tmp_path / "hf", "virnucpro/tiny-dna")
    printed, fingerprint, stderr = _load_from_hub_cache(tmp_path / "hf", "virnucpro/tiny-dna", tmp_path)
    assert "ASKED THE HUB" not in stderr
    assert printed == [str(load_dna_embedder(str(test_models.dna)).dim), "virnucpro/tiny-dna"]
    # --resume sees the cached revision and its files, not just the name
    assert fingerprint == f"revision {'0' * 40}, {local_model_fingerprint(str(snapshot))}"


# DNABERT-S revisions before July 2024: config.json sends AutoConfig to the repository's own
# configuration_bert.BertConfig while the model class declares transformers' BertConfig.
OLD_REVISION_CONFIG = "import transformers\n\n\nclass BertConfig(transformers.BertConfig):\n    pass\n"


@pytest.fixture()
def old_revision_model(remote_code_model, tmp_path: Path) -> Path:
    """The stand-in remote-code model in the layout of an old DNABERT-S revision, in a hub cache."""
    directory, _ = remote_code_model
    snapshot = _hub_cache_snapshot(directory, tmp_path / "hf", "virnucpro/old-dnabert")
    (snapshot / "configuration_bert.py").write_text(OLD_REVISION_CONFIG)
    config = json.loads((snapshot / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_bert.BertConfig", **config["auto_map"]}
    (snapshot / "config.json").write_text(json.dumps(config))
    return tmp_path / "hf"


@pytest.mark.skipif(int(transformers.__version__.split(".")[0]) >= 5, reason="transformers 5 compares config names")
def test_old_revision_is_refused_by_transformers_4_without_the_loader(old_revision_model) -> None:
    with pytest.raises(ValueError, match="config_class"):
        transformers.AutoModel.from_pretrained(
            "virnucpro/old-dnabert",
            trust_remote_code=True,
            local_files_only=True,
            cache_dir=str(old_revision_model / "hub"),
        )


@pytest.mark.slow
def test_old_revision_loads(old_revision_model, tmp_path: Path) -> None:
    printed, _, stderr = _load_from_hub_cache(old_revision_model, "virnucpro/old-dnabert", tmp_path)
    assert "ASKED THE HUB" not in stderr
    assert printed == ["16", "virnucpro/old-dnabert"]


def test_a_missing_local_path_is_not_taken_for_a_hub_id(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    with pytest.raises(ModelError, match="DNA model directory not found"):
        load_dna_embedder(str(tmp_path / "models" / "DNABERT-S"))


def test_the_fingerprint_notices_one_file_replaced_with_its_old_size_and_date(test_models, tmp_path: Path) -> None:
    import os

    from virnucpro.embeddings.dna import model_fingerprint

    model = tmp_path / "dna"
    shutil.copytree(test_models.dna, model)
    weights = max(model.iterdir(), key=lambda p: p.stat().st_size)
    before = model_fingerprint(str(model))
    newest = max(p.stat().st_mtime_ns for p in model.iterdir())
    older = weights.stat().st_mtime_ns - 10**9
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # other weights, same size
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(older, older))  # `cp -p` of a file older than the rest
    assert max(p.stat().st_mtime_ns for p in model.iterdir()) == newest  # the old summary would not see it
    changed = model_fingerprint(str(model))
    assert changed != before
    (model / ".git").mkdir()  # a git-lfs clone of the model: git's own files are not the model
    (model / ".git" / "index").write_text("changes with every git status")
    (model / ".gitattributes").write_text("*.safetensors filter=lfs")
    assert model_fingerprint(str(model)) == changed

