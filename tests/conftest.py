"""Shared fixtures: the repository root and one set of tiny test models per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from virnucpro.testmodels import TestModels, make_test_models

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (where pyproject.toml, assets/ and docs/ live)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def test_models(tmp_path_factory: pytest.TempPathFactory) -> TestModels:
    """Tiny random ESM-2, DNA BERT and classifier (seed 0, 300 bp), made once per test session."""
    return make_test_models(tmp_path_factory.mktemp("models"))
