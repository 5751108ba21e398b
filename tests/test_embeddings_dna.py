"""DNA embeddings: masked mean with [CLS]/[SEP], batched equal to one-at-a-time, packed equal to padded,
transformers' numbers on a BERT folder, no code from a model folder or the hub ever runs."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from virnucpro.cli import main
from virnucpro.contracts import EXIT_FAILED, EXIT_OK, STAGE_DNA
from virnucpro.embeddings.dna import DnaEmbedder, load_dna_embedder, model_fingerprint, resolve_dna_source
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
    """The reference: one sequence, no padding, ``model(input_ids)[0]``, mean over every token."""
    input_ids = torch.tensor([embedder.tokenizer.encode(sequence).ids])
    with torch.inference_mode():
        hidden = embedder.model(input_ids)
    return hidden[0].mean(dim=0).numpy()


def test_identity(embedder: DnaEmbedder, test_models) -> None:
    assert embedder.stage == STAGE_DNA and embedder.dim == 32
    identity = embedder.identity()
    assert identity["model"] == str(Path(test_models.dna).resolve()) and identity["precision"] == "fp32"
    assert embedder.model.shape.architecture == "DNABERT-2"


def test_pooling_includes_cls_and_sep(embedder: DnaEmbedder) -> None:
    sequence = _dna()[4]
    encoded = embedder.tokenizer.encode(sequence).ids
    assert [embedder.tokenizer.id_to_token(i) for i in (encoded[0], encoded[-1])] == ["[CLS]", "[SEP]"]
    got = embedder.embed_batch([sequence])[0]
    np.testing.assert_allclose(got, _upstream_way(embedder, sequence), atol=1e-6)
    with torch.inference_mode():  # and it differs from the mean without the special tokens
        hidden = embedder.model(torch.tensor([encoded]))[0]
    assert not np.allclose(got, hidden[1:-1].mean(0).numpy(), atol=1e-4)
    assert np.allclose(embedder.embed_batch([sequence.lower()])[0], got)  # case does not matter


@pytest.fixture(scope="module")
def singles(embedder: DnaEmbedder) -> np.ndarray:
    """``_dna()`` embedded one at a time (computed once for every budget)."""
    return _single(embedder, _dna())


@pytest.mark.parametrize("budget", [1, 64, 300, 10_000])
def test_batched_equals_single(embedder: DnaEmbedder, singles: np.ndarray, budget: int) -> None:
    np.testing.assert_allclose(_batched(embedder, _dna(), budget), singles, atol=1e-5, rtol=0)


def test_packed_batches_equal_padded_ones(test_models, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unpadded batches (all tokens in one row, attention per sequence) give the padded numbers; on
    the CPU they run only when forced (VIRNUCPRO_DNA_PACKED=1), and summary.json says which ran."""
    padded = load_dna_embedder(str(test_models.dna))
    assert not padded.uses_packed  # the CPU: padded unless forced
    monkeypatch.setenv("VIRNUCPRO_DNA_PACKED", "1")
    packed = load_dna_embedder(str(test_models.dna))
    assert packed.uses_packed
    calls = []
    original = packed._packed_sums
    monkeypatch.setattr(packed, "_packed_sums", lambda rows: calls.append(len(rows)) or original(rows))
    sequences = _dna(seed=5)
    np.testing.assert_allclose(packed.embed_batch(sequences), padded.embed_batch(sequences), atol=1e-5, rtol=0)
    assert sum(calls) == len(sequences)


def test_batches_respect_the_token_budget(embedder: DnaEmbedder) -> None:
    sequences = _dna()
    for budget in (64, 300, 1000):
        for batch in embedder.make_batches(sequences, budget):
            padded = max(embedder.token_count(sequences[i]) for i in batch) * len(batch)
            assert padded <= budget or len(batch) == 1
    assert embedder.token_count("ACGT") == len(embedder.tokenizer.encode("ACGT").ids)


@pytest.mark.slow
def test_threads_can_share_the_embedder(embedder: DnaEmbedder) -> None:
    """CPU batches run side by side: batching and embedding from eight threads at once give the
    numbers of one thread (the tokenizer is only read after loading)."""
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
        with pytest.raises(ModelError, match=r"Hugging Face's layout \(config\.json"):
            resolve_dna_source(str(not_a_model))


def test_missing_or_broken_files_are_one_line_model_errors(test_models, tmp_path: Path) -> None:
    cases = {
        "no tokenizer": (lambda d: (d / "tokenizer.json").unlink(), "no tokenizer.json"),
        "no weights": (lambda d: (d / "pytorch_model.bin").unlink(), "no DNA model weights"),
        "truncated weights": (lambda d: _truncate(d / "pytorch_model.bin"), "cannot read the DNA model weights"),
        "bad config": (lambda d: (d / "config.json").write_text("{"), "cannot read the DNA model's config.json"),
        "wrong width": (lambda d: _edit_config(d, hidden_size=64), "do not match config.json"),
        "no layers": (lambda d: _edit_config(d, num_hidden_layers=0), "num_hidden_layers"),
    }
    for name, (damage, message) in cases.items():
        folder = tmp_path / name.replace(" ", "_")
        shutil.copytree(test_models.dna, folder)
        damage(folder)
        for call in (resolve_dna_source, load_dna_embedder):  # found before any work, and at loading
            with pytest.raises(ModelError, match=message) as caught:
                call(str(folder))
            assert "\n" not in str(caught.value) and str(folder) in str(caught.value), name


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


# --------------------------------------------------------------------------- a classic BERT folder


@pytest.fixture(scope="module")
def bert_folder(test_models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A transformers ``BertModel`` saved with ``save_pretrained`` (model.safetensors), with the test tokenizer."""
    transformers = pytest.importorskip("transformers")
    directory = tmp_path_factory.mktemp("bert") / "dna"
    config = transformers.BertConfig(
        vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=2048,
    )
    torch.manual_seed(4)
    model = transformers.BertModel(config).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases, so that every parameter matters
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                parameter.add_(0.1 * torch.randn_like(parameter))
    model.save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(Path(test_models.dna) / name, directory / name)
    return directory


def test_a_bert_folder_gives_transformers_numbers(bert_folder: Path) -> None:
    """Classic BERT (absolute positions, GELU MLP; the format of earlier test models): our code on its
    safetensors weights equals transformers' BertModel, masked mean over padded batches, 1e-5."""
    import transformers

    assert (bert_folder / "model.safetensors").is_file()
    ours = load_dna_embedder(str(bert_folder))
    assert ours.model.shape.architecture == "BERT" and ours.model.shape.max_positions == 2048
    reference = transformers.BertModel.from_pretrained(str(bert_folder)).eval()
    sequences = _dna(seed=9)
    encoded = [ours.tokenizer.encode(s).ids for s in sequences]
    width = max(map(len, encoded))
    ids = torch.tensor([row + [0] * (width - len(row)) for row in encoded])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in encoded])
    with torch.inference_mode():
        hidden = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    expected = ((hidden * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True)).numpy()
    np.testing.assert_allclose(ours.embed_batch(sequences), expected, atol=1e-5, rtol=0)
    ours.packed = True
    np.testing.assert_allclose(ours.embed_batch(sequences), expected, atol=1e-5, rtol=0)
    with pytest.raises(InputError, match="2048 positions"):
        ours.embed_batch(["ACGT" * 3000])


# --------------------------------------------------------------------------- no code from a model folder

# Written for these tests: files named by config.json's auto_map that leave a marker (or fail) when
# imported. The loader must never import them; transformers' remote-code loading would.
MARKER_CODE = textwrap.dedent(
    """
    import os
    from pathlib import Path

    Path(os.environ.get("VIRNUCPRO_TEST_MARKER", "/nonexistent/marker")).write_text("code from the model folder ran")
    raise RuntimeError("code from the model folder ran")
    """
)
CODE_FILES = ("bert_layers.py", "configuration_bert.py", "tokenization_dna.py", "bert_padding.py")


def _with_code(folder: Path, **config_changes) -> Path:
    """``folder`` with marker-writing code files that its config.json's auto_map points at."""
    for name in CODE_FILES:
        (folder / name).write_text(MARKER_CODE)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_bert.BertConfig",
        "AutoModel": "bert_layers.BertModel",
        "AutoTokenizer": ["tokenization_dna.DnaTokenizer", None],
    }
    (folder / "config.json").write_text(json.dumps({**config, **config_changes}))
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": ["tokenization_dna.DnaTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return folder


@pytest.fixture()
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "MARKER"
    monkeypatch.setenv("VIRNUCPRO_TEST_MARKER", str(path))
    return path


def test_code_in_a_model_folder_never_runs(test_models, tmp_path: Path, marker: Path) -> None:
    """A DNABERT-S folder as published (config.json's auto_map names its bert_layers.py): loaded,
    checked and embedded with our code; the folder's Python files are never imported."""
    from virnucpro.embeddings.base import ModelShape
    from virnucpro.embeddings.dna import DnaSpec

    folder = _with_code(shutil.copytree(test_models.dna, tmp_path / "DNABERT-S"))
    assert resolve_dna_source(str(folder)) == str(folder.resolve())
    assert DnaSpec(str(folder)).shape() == ModelShape(32)
    assert model_fingerprint(str(folder))
    embedder = load_dna_embedder(str(folder))
    sequences = _dna()[:4]
    plain = load_dna_embedder(str(test_models.dna))
    np.testing.assert_array_equal(embedder.embed_batch(sequences), plain.embed_batch(sequences))
    fasta = tmp_path / "reads.fa"
    fasta.write_text("".join(f">r{i}\n{s}\n" for i, s in enumerate(sequences)))
    assert main(["embed-dna", str(fasta), "--outdir", str(tmp_path / "out"), "--dna-model", str(folder), "-q"]) == EXIT_OK
    assert not marker.exists()
    assert not list(folder.glob("__pycache__")) and not any("bert_layers" in m for m in sys.modules)


def test_a_model_we_do_not_implement_is_one_error_line(test_models, tmp_path: Path, marker: Path) -> None:
    """A folder whose weights are not DNABERT-2's or BERT's (here: DNABERT-2 weights renamed, and a
    model_type of another architecture), with code that would run it: one line, exit 1, no code run."""
    renamed = _with_code(shutil.copytree(test_models.dna, tmp_path / "renamed"))
    weights = torch.load(renamed / "pytorch_model.bin", weights_only=True)
    torch.save({k.replace("mlp.gated_layers", "mlp.swiglu"): v for k, v in weights.items()}, renamed / "pytorch_model.bin")
    other_type = _with_code(shutil.copytree(test_models.dna, tmp_path / "other_type"), model_type="nucleotide_transformer")
    fasta = tmp_path / "reads.fa"
    fasta.write_text(">r\nACGTACGTAC\n")
    for folder in (renamed, other_type):
        done = subprocess.run(
            [sys.executable, "-m", "virnucpro", "embed-dna", str(fasta), "--outdir", str(tmp_path / folder.name),
             "--dna-model", str(folder), "-q"],
            capture_output=True, text=True, timeout=300, env={**os.environ, "VIRNUCPRO_TEST_MARKER": str(marker)},
        )
        assert done.returncode == EXIT_FAILED, done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"virnucpro: error: {folder}: "), done.stderr
        assert "not a DNABERT-2 (DNABERT-S) or BERT model" in lines[0] or "do not match" in lines[0]
        assert not (tmp_path / folder.name / "reads.npz").exists()
    assert not marker.exists()


def test_a_weight_file_with_code_is_refused_without_running_it(test_models, tmp_path: Path, marker: Path) -> None:
    """pytorch_model.bin is read with torch.load(weights_only=True): a pickle that would call a
    function is refused, and the function never runs."""
    import pickle

    class Hostile:
        def __reduce__(self):
            return (Path.write_text, (marker, "unpickling ran code"))

    folder = shutil.copytree(test_models.dna, tmp_path / "hostile")
    with open(folder / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"embeddings.word_embeddings.weight": Hostile()}, handle, protocol=2)
    for call in (resolve_dna_source, load_dna_embedder):
        with pytest.raises(ModelError, match="cannot read the DNA model weights"):
            call(str(folder))
    assert not marker.exists()


# --------------------------------------------------------------------------- hub ids


def test_a_local_directory_copy_loads_offline(test_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    copy = tmp_path / "DNABERT-S"
    shutil.copytree(test_models.dna, copy)
    embedder = load_dna_embedder(str(copy))
    original = load_dna_embedder(str(test_models.dna))
    np.testing.assert_array_equal(embedder.embed_batch(_dna()[:3]), original.embed_batch(_dna()[:3]))


def test_a_hub_id_downloads_data_files_only(test_models, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub id not in the cache is fetched with huggingface_hub's snapshot_download, asked for the
    config, tokenizer and weight files only: the repository's Python files are not even downloaded."""
    import huggingface_hub

    from virnucpro.embeddings import dnabert_files

    asked = []

    def snapshot_download(repo_id: str, **options) -> str:
        asked.append((repo_id, options))
        return str(test_models.dna)

    monkeypatch.setattr(dnabert_files, "hub_cache_snapshot", lambda hub_id: None)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    embedder = load_dna_embedder("example-org/not-cached")
    assert embedder.name == "example-org/not-cached" and embedder.dim == 32
    [(repo_id, options)] = asked
    patterns = options["allow_patterns"]
    assert repo_id == "example-org/not-cached" and "pytorch_model.bin" in patterns and "tokenizer.json" in patterns
    assert not any(p.endswith(".py") or "*" in p for p in patterns)


def _hub_cache_snapshot(model_dir: Path, home: Path, hub_id: str) -> Path:
    """``model_dir`` copied into a Hugging Face cache under ``home`` as the snapshot of ``hub_id``."""
    snapshot = home / "hub" / ("models--" + hub_id.replace("/", "--")) / "snapshots" / ("0" * 40)
    shutil.copytree(model_dir, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    return snapshot


def _load_from_hub_cache(home: Path, hub_id: str, workdir: Path, marker: Path) -> tuple[list[str], str, str]:
    """Load ``hub_id`` with load_dna_embedder in a subprocess whose Hugging Face cache is ``home``
    and whose hub is unreachable; returns [embedding width, model name], the model files'
    fingerprint and stderr."""
    code = textwrap.dedent(
        f"""
        import sys
        import huggingface_hub
        import huggingface_hub.file_download as download

        def asked(*args, **kwargs):
            print("ASKED THE HUB", file=sys.stderr)
            raise OSError("no network in this test")

        download.get_hf_file_metadata = asked
        huggingface_hub.snapshot_download = asked
        from virnucpro.embeddings.dna import DnaSpec, load_dna_embedder

        embedder = load_dna_embedder({hub_id!r})
        assert DnaSpec({hub_id!r}).shape().dim == embedder.dim
        print(embedder.embed_batch(["ACGTACGTAA"]).shape[1], embedder.identity()["model"])
        print(embedder.identity()["model_files"])
        """
    )
    env = {**os.environ, "HF_HOME": str(home), "HF_ENDPOINT": "http://127.0.0.1:9", "VIRNUCPRO_TEST_MARKER": str(marker)}
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=workdir, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    first, fingerprint = done.stdout.splitlines()
    return first.split(), fingerprint, done.stderr


@pytest.mark.slow
def test_a_hub_id_in_the_local_cache_loads_without_asking_the_hub(test_models, tmp_path: Path, marker: Path) -> None:
    """Offline, the hub client retries each file for half a minute before using the cache: a cached
    model must not ask at all. The snapshot holds DNABERT-S's code files, as one downloaded by
    transformers would: they are never imported. A subprocess, so the cache location is read from
    the environment."""
    from virnucpro.embeddings.base import local_model_fingerprint

    snapshot = _hub_cache_snapshot(test_models.dna, tmp_path / "hf", "virnucpro/tiny-dna")
    _with_code(snapshot)
    printed, fingerprint, stderr = _load_from_hub_cache(tmp_path / "hf", "virnucpro/tiny-dna", tmp_path, marker)
    assert "ASKED THE HUB" not in stderr
    assert printed == [str(load_dna_embedder(str(test_models.dna)).dim), "virnucpro/tiny-dna"]
    # --resume sees the cached revision and its files, not just the name
    assert fingerprint == f"revision {'0' * 40}, {local_model_fingerprint(str(snapshot))}"
    assert not marker.exists()


def test_a_missing_local_path_is_not_taken_for_a_hub_id(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    with pytest.raises(ModelError, match="DNA model directory not found"):
        load_dna_embedder(str(tmp_path / "models" / "DNABERT-S"))


def test_the_fingerprint_notices_one_file_replaced_with_its_old_size_and_date(test_models, tmp_path: Path) -> None:
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
