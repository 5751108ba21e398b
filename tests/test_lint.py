"""The Python code passes ruff's checks configured in pyproject.toml (syntax, pyflakes, import order)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_ruff_finds_nothing(repo_root: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "virnucpro", "tests", "benchmarks", "bin"],
        cwd=repo_root, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
