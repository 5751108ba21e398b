"""Bring a model named by the user (not a local path) into a directory, once per run.

The pipeline's FETCH_MODEL step calls :func:`fetch_model` for each model given by name, and
every embedding task then stages the files it wrote, instead of each task downloading ESM-2 3B
and DNABERT-S again (or failing where ``$HOME`` is not writable). The files come from the
caches the CLI uses (fair-esm's torch hub cache, the Hugging Face cache, the classifier cache),
so a cache prepared on a machine with network serves an offline one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from virnucpro.contracts import CHUNK_LENGTHS
from virnucpro.errors import ModelError, describe, raise_interruption_behind
from virnucpro.log import get_logger

log = get_logger("fetch")

MODEL_KINDS = ("esm", "dna", "classifier")
_FAIR_ESM_URL = "https://dl.fbaipublicfiles.com/fair-esm"  # where fair-esm downloads its weights from


def _place(source: Path, target: Path) -> None:
    """``target`` becomes a copy of ``source`` (a hard link where the file system allows)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _hub_file(url: str, name: str) -> Path:
    """A fair-esm file in the torch hub cache, downloaded there first if missing (as fair-esm does)."""
    import torch

    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s", url)
        try:
            torch.hub.download_url_to_file(url, str(cached), progress=False)
        except Exception as error:  # noqa: BLE001  (no network, refused, truncated)
            raise_interruption_behind(error)
            raise ModelError(
                f"cannot download {url} ({describe(error, typed=True, limit=200)}); offline? put {name} into "
                f"{cached.parent} (same TORCH_HOME) where there is network, or pass a local .pt path"
            ) from None
    return cached


def fetch_esm(name: str, outdir: Path) -> list[Path]:
    """A fair-esm model name -> ``outdir/<name>.pt`` and its ``-contact-regression.pt``."""
    from virnucpro.embeddings.esm import check_esm_model

    check_esm_model(name)
    files = [f"models/{name}.pt"]
    if not ("esm1v" in name or "esm_if" in name):  # fair-esm's rule for a contact-regression head
        files.append(f"regression/{name}-contact-regression.pt")
    placed = []
    for remote in files:
        file_name = remote.rsplit("/", 1)[1]
        _place(_hub_file(f"{_FAIR_ESM_URL}/{remote}", file_name), outdir / file_name)
        placed.append(outdir / file_name)
    return placed


def fetch_dna(name: str, outdir: Path) -> list[Path]:
    """A Hugging Face hub id -> ``outdir/<name after the slash>/``: the snapshot's model files
    (config, weights, tokenizer; never its code files), copied."""
    from virnucpro.embeddings.dnabert_files import hub_snapshot

    try:
        snapshot = hub_snapshot(name)
    except Exception as error:  # noqa: BLE001  (offline without a cached copy, unknown id, ...)
        raise_interruption_behind(error)
        raise ModelError(
            f"cannot fetch DNA model {name!r} ({describe(error, typed=True, limit=200)}); offline? fetch it first "
            f"where there is network with `virnucpro fetch-model dna {name} --outdir DIR` (same HF_HOME, then "
            f"HF_HUB_OFFLINE=1), or pass a local directory"
        ) from None
    target = outdir / name.rsplit("/", 1)[-1]
    for source in sorted(snapshot.rglob("*")):
        if source.is_file():
            _place(source.resolve(), target / source.relative_to(snapshot))
    return [target]


def fetch_classifier(name: str, outdir: Path) -> list[Path]:
    """``300``/``500`` -> the verified reference classifier (``outdir/300_model.pth``)."""
    from virnucpro.classifier.reference import fetch_reference_classifier

    if name not in {str(n) for n in CHUNK_LENGTHS}:
        raise ModelError(f"{name}: a classifier to fetch is 300 or 500 (a checkpoint path needs no fetching)")
    cached = fetch_reference_classifier(int(name))
    _place(cached, outdir / cached.name)
    return [outdir / cached.name]


def fetch_model(kind: str, name: str, outdir: Path) -> list[Path]:
    """Fetch model ``name`` of ``kind`` (esm, dna, classifier) into ``outdir``; the paths written."""
    fetchers = {"esm": fetch_esm, "dna": fetch_dna, "classifier": fetch_classifier}
    if kind not in fetchers:
        raise ModelError(f"{kind}: the model kinds are {', '.join(MODEL_KINDS)}")
    return fetchers[kind](name, outdir)
