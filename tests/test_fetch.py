"""``virnucpro fetch-model``: models given by name, brought from the usual caches into a directory.

Stand-in caches (a torch hub cache and a Hugging Face cache holding the tiny test models under
real names) keep this offline.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from virnucpro.errors import ModelError
from virnucpro.fetch import fetch_model

from nextflow_runner import hugging_face_cache, torch_hub_cache


def test_esm_model_comes_from_the_torch_hub_cache_with_its_regression_head(
    test_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(torch_hub_cache(tmp_path / "torch", "esm2_t6_8M_UR50D", test_models.esm)))
    written = fetch_model("esm", "esm2_t6_8M_UR50D", tmp_path / "out")
    assert [p.name for p in written] == ["esm2_t6_8M_UR50D.pt", "esm2_t6_8M_UR50D-contact-regression.pt"]
    assert written[0].read_bytes() == test_models.esm.read_bytes()


def test_dna_model_comes_from_the_hugging_face_cache_offline(test_models, tmp_path: Path) -> None:
    hf_home = hugging_face_cache(tmp_path / "hf", "someone/tiny-dna", test_models.dna)
    run = fetch_model_cli("dna", "someone/tiny-dna", tmp_path / "out", hf_home)
    assert run.returncode == 0, run.stderr
    target = tmp_path / "out" / "tiny-dna"
    expected = sorted(p.relative_to(test_models.dna) for p in test_models.dna.rglob("*") if p.is_file() and p.suffix != ".py")
    assert sorted(p.relative_to(target) for p in target.rglob("*") if p.is_file()) == expected
    assert not any(p.is_symlink() for p in target.rglob("*"))  # copies: a container sees them too


def test_fetched_models_load(test_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from virnucpro.embeddings.esm import check_esm_model

    monkeypatch.setenv("TORCH_HOME", str(torch_hub_cache(tmp_path / "torch", "esm2_t6_8M_UR50D", test_models.esm)))
    model, _regression = fetch_model("esm", "esm2_t6_8M_UR50D", tmp_path / "out")
    check_esm_model(str(model))  # fair-esm's layout: the regression head beside the weights


@pytest.mark.parametrize(
    "kind, name, message",
    [
        ("esm", "esm2_t99_bogus", "unknown ESM model 'esm2_t99_bogus'"),
        ("classifier", "400", "a classifier to fetch is 300 or 500"),
        ("weights", "x", "the model kinds are esm, dna, classifier"),
    ],
)
def test_bad_names_are_one_line_model_errors(tmp_path: Path, kind: str, name: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        fetch_model(kind, name, tmp_path)


def test_uncached_hub_model_offline_says_how_to_fetch_it(tmp_path: Path) -> None:
    run = fetch_model_cli("dna", "nobody/none", tmp_path / "out", tmp_path / "empty")
    assert run.returncode == ModelError.exit_code
    (line,) = run.stderr.strip().splitlines()
    assert re.search(r"cannot fetch DNA model 'nobody/none' .* `virnucpro fetch-model dna nobody/none", line), line


def fetch_model_cli(kind: str, name: str, outdir: Path, hf_home: Path) -> subprocess.CompletedProcess:
    """``virnucpro fetch-model`` in a fresh interpreter with an offline Hugging Face cache: huggingface_hub
    reads HF_HOME and HF_HUB_OFFLINE once, when it is imported (as in a pipeline task)."""
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "virnucpro", "fetch-model", kind, name, "--outdir", str(outdir)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
