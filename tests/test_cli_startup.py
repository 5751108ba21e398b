"""The CLI answers ``--help``, ``--version`` and usage errors without loading the library behind it."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "numpy", "esm", "transformers", "Bio", "matplotlib")

_PROBE = """
import sys
from virnucpro.cli import main
code = main(sys.argv[1:])
print(sorted(name for name in {heavy!r} if name in sys.modules), code, file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["predict", "--help"], ["predict", "--no-such-option"]])
def test_help_version_and_usage_errors_import_no_library(args: list[str], repo_root) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), *args], capture_output=True, text=True, cwd=repo_root,
        timeout=60,
    )
    *_, report = done.stderr.strip().splitlines()
    heavy, code = report.rsplit(" ", 1)
    assert heavy == "[]", f"{args}: imported {heavy}"
    assert int(code) == (1 if "--no-such-option" in args else 0)


def test_make_test_models_offers_every_size() -> None:
    from virnucpro.cli.testmodels import _SIZES
    from virnucpro.testmodels import SIZES

    assert list(_SIZES) == list(SIZES)
