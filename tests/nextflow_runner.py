"""Running the pipeline under a real Nextflow in the tests, and reading what a run left behind.

The Nextflow launcher comes from ``make nextflow`` (tools/nextflow/install.sh): its path is in
``VIRNUCPRO_NEXTFLOW``, else the default release under build/nextflow/. Tasks run with the
test session's Python environment first on the PATH and no container engine.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RELEASE = "25.04.4"  # the Makefile's NXF_VER
TIMEOUT_S = 900


def launcher(variable: str = "VIRNUCPRO_NEXTFLOW", release: str = DEFAULT_RELEASE) -> Path:
    """The Nextflow launcher to test with; skips (fails under ``make test``) when there is none."""
    path = Path(os.environ.get(variable) or REPO_ROOT / "build" / "nextflow" / release / "nextflow")
    if not path.is_file():
        message = f"no Nextflow launcher at {path}: run `make nextflow` (tools/nextflow/install.sh)"
        if os.environ.get("VIRNUCPRO_REQUIRE_NEXTFLOW"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class Run:
    """One ``nextflow`` invocation: its exit code, console output and launch directory."""

    returncode: int
    output: str
    launch_dir: Path

    def published(self, outdir: str = "results") -> Path:
        return self.launch_dir / outdir

    def run_status(self, outdir: str = "results") -> int:
        return int((self.published(outdir) / "pipeline_info" / "run_status.txt").read_text().strip())

    def trace(self, outdir: str = "results") -> list[dict[str, str]]:
        """The rows of this run's trace file (the newest one in pipeline_info/)."""
        traces = sorted((self.published(outdir) / "pipeline_info").glob("execution_trace_*.txt"), key=os.path.getmtime)
        with traces[-1].open(newline="") as handle:
            return list(csv.DictReader(handle, delimiter="\t"))


def nextflow(
    nf: Path, args: list[str], launch_dir: Path, env: dict[str, str] | None = None, check: int | None = None
) -> Run:
    """Run ``nextflow ARGS`` in ``launch_dir`` with this Python's environment first on the PATH."""
    launch_dir.mkdir(parents=True, exist_ok=True)
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "NXF_ANSI_LOG": "false",
        "NXF_DISABLE_CHECK_LATEST": "true",
        **(env or {}),
    }
    done = subprocess.run(
        [str(nf), *args], cwd=launch_dir, env=environment, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    run = Run(done.returncode, done.stdout + done.stderr, launch_dir)
    if check is not None and run.returncode != check:
        raise AssertionError(f"nextflow {' '.join(args)}: exit {run.returncode}, expected {check}\n{run.output[-6000:]}")
    return run


def pipeline(nf: Path, args: list[str], launch_dir: Path, **options) -> Run:
    """``nextflow run <repo> ARGS`` (the pipeline of this clone)."""
    return nextflow(nf, ["run", str(REPO_ROOT), *args], launch_dir, **options)


def task_rows(trace: list[dict[str, str]], process: str) -> list[dict[str, str]]:
    """The trace rows of one process (by its simple name: ``EMBED_ESM``, ``PREDICT``, ...)."""
    return [row for row in trace if row["process"].rsplit(":", 1)[-1] == process]


def samplesheet(path: Path, rows: list[tuple[str, Path]]) -> Path:
    path.write_text("sample,fasta\n" + "".join(f"{sample},{fasta}\n" for sample, fasta in rows))
    return path


# --------------------------------------------------------------------------- models


def poisoned_esm(source: Path, target: Path, token: str) -> Path:
    """A copy of a fair-esm checkpoint whose embedding of ``token`` is NaN: every frame holding that
    token (or every frame, for ``<cls>``) gets a non-finite embedding, which the stage records as
    the failure of that sequence. Written with fair-esm's file layout (regression head beside it)."""
    import torch
    from esm.data import Alphabet

    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    index = Alphabet.from_architecture("ESM-1b").get_idx(token)
    checkpoint["model"]["encoder.sentence_encoder.embed_tokens.weight"][index] = float("nan")
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, target)
    shutil.copyfile(
        source.with_name(f"{source.stem}-contact-regression.pt"), target.with_name(f"{target.stem}-contact-regression.pt")
    )
    return target


def torch_hub_cache(torch_home: Path, name: str, esm_checkpoint: Path) -> Path:
    """A TORCH_HOME whose hub cache holds ``esm_checkpoint`` under the fair-esm model name ``name``
    (as fair-esm's download would have left it)."""
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(esm_checkpoint, checkpoints / f"{name}.pt")
    regression = esm_checkpoint.with_name(f"{esm_checkpoint.stem}-contact-regression.pt")
    shutil.copyfile(regression, checkpoints / f"{name}-contact-regression.pt")
    return torch_home


def hugging_face_cache(hf_home: Path, repo_id: str, model_dir: Path, revision: str = "0" * 40) -> Path:
    """An HF_HOME whose hub cache holds ``model_dir`` as a snapshot of ``repo_id`` (the layout
    huggingface_hub writes), so that it resolves offline (HF_HUB_OFFLINE=1)."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(model_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return hf_home
