"""Shared fixtures: the repository root and one set of tiny test models per session; slow marks for
tests whose files carry none yet."""

from __future__ import annotations

from pathlib import Path

import pytest

from virnucpro.testmodels import TestModels, make_test_models

REPO_ROOT = Path(__file__).resolve().parent.parent

# Slow tests in files maintained with the Nextflow layer, marked here until those files mark them.
SLOW_ELSEWHERE = {
    "tests/test_nextflow_static.py::test_every_file_parses": "parses every Nextflow file with groovy-parser: minutes",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.split("[")[0] in SLOW_ELSEWHERE:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (where pyproject.toml, assets/ and docs/ live)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def test_models(tmp_path_factory: pytest.TempPathFactory) -> TestModels:
    """Tiny random ESM-2, DNA BERT and classifier (seed 0, 300 bp), made once per test session."""
    return make_test_models(tmp_path_factory.mktemp("models"))
