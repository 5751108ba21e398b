"""The Triton rotary kernel on a real GPU (device machine only): tests/test_rotary_triton.py's
kernel checks, run in a child pytest on ``cuda:0`` so that this pytest never initialises CUDA
(the engine tests check that the parent never does)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from virnucpro.engine import devices

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(devices.visible_gpu_count() == 0, reason="needs a CUDA GPU"),
]


def test_the_rotary_kernel_on_the_gpu() -> None:
    pytest.importorskip("triton")
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "VIRNUCPRO_ROTARY_TEST_DEVICE": "cuda:0"}
    for name in ("TRITON_INTERPRET", "VIRNUCPRO_TRITON_ROTARY"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "tests/test_rotary_triton.py"],
        capture_output=True, text=True, timeout=300, env=env, cwd=repo,
    )
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    # every kernel check ran on the GPU: the only skips are the two checks of the parent's CPU run
    skipped = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 2 and all("child run" in line for line in skipped), skipped
