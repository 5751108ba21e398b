"""The upstream reference classifiers: download once into a cache, verified by git blob id."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from virnucpro.atomic import give_default_mode
from virnucpro.classifier.checkpoints import load_classifier_file, load_reference_pickle
from virnucpro.classifier.model import ClassifierMeta, MLPClassifier
from virnucpro.contracts import CHUNK_LENGTHS
from virnucpro.errors import ModelError
from virnucpro.log import get_logger

log = get_logger("classifier")

# git blob ids (sha1 of b"blob <size>\0" + content) of upstream's 300_model.pth / 500_model.pth.
REFERENCE_BLOB_IDS: dict[int, str] = {
    300: "a0b5b85e7c1e44f00cde146d091beb82b2c8e855",
    500: "fc35d5ef9f1f4564eea7036f34f4f8ec6000d33d",
}

# Upstream: https://github.com/Li-Jing-1997/VirNucPro (branch main), files 300_model.pth and
# 500_model.pth at the repository root (its README runs `python prediction.py in.fa 500 500_model.pth`
# from a clone). The blob id check above pins the exact content whatever the branch holds.
REFERENCE_URL_TEMPLATE = "https://raw.githubusercontent.com/Li-Jing-1997/VirNucPro/main/{chunk_length}_model.pth"

DOWNLOAD_TIMEOUT_S = 60
_READ_BLOCK = 1 << 20


def reference_file_name(chunk_length: int) -> str:
    """Upstream's file name for a chunk length: ``300_model.pth`` or ``500_model.pth``."""
    return f"{chunk_length}_model.pth"


def reference_url(chunk_length: int) -> str:
    """The raw download address of upstream's classifier for ``chunk_length``."""
    _check_chunk_length(chunk_length)
    return REFERENCE_URL_TEMPLATE.format(chunk_length=chunk_length)


def git_blob_id(path: Path) -> str:
    """``git hash-object`` of a file: sha1 of ``b"blob <size>\\0"`` + content."""
    path = Path(path)
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_READ_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$VIRNUCPRO_CACHE``, else ``$XDG_CACHE_HOME/virnucpro``, else ``~/.cache/virnucpro``."""
    if os.environ.get("VIRNUCPRO_CACHE"):
        return Path(os.environ["VIRNUCPRO_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "virnucpro"
    return Path.home() / ".cache" / "virnucpro"


def fetch_reference_classifier(chunk_length: int, cache_dir: Path | None = None) -> Path:
    """Path of upstream's classifier in the cache, downloading and verifying it first if needed.

    A cached file is used only if its blob id matches; a download goes to a temporary file,
    is verified, then renamed into the cache (a wrong file is never kept).
    """
    _check_chunk_length(chunk_length)
    expected = REFERENCE_BLOB_IDS[chunk_length]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / reference_file_name(chunk_length)
    if target.is_file():
        if git_blob_id(target) == expected:
            log.debug("using cached reference classifier %s", target)
            return target
        log.warning("%s: cached file does not match blob id %s; downloading it again", target, expected)
    url = reference_url(chunk_length)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ModelError(f"{cache}: cannot create the classifier cache directory ({error.strerror})") from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=cache)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _download(url, out, target, chunk_length)
        found = git_blob_id(tmp)
        if found != expected:
            raise ModelError(
                f"{url}: downloaded file has git blob id {found}, expected {expected}; not kept in {cache}"
            )
        give_default_mode(tmp)  # a shared cache must be readable by its other users
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("downloaded reference classifier %s -> %s", url, target)
    return target


def _download(url: str, out, target: Path, chunk_length: int) -> None:
    log.info("downloading reference classifier %s", url)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310 (fixed https/file URL)
            shutil.copyfileobj(response, out, _READ_BLOCK)
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise ModelError(
            f"could not download the {chunk_length} bp reference classifier from {url} ({reason}); "
            f"offline? place {reference_file_name(chunk_length)} at {target} "
            f"(e.g. run `virnucpro fetch-classifier {chunk_length}` where there is network) "
            "or pass --classifier PATH"
        ) from None


def resolve_classifier(spec: str, chunk_length: int | None) -> tuple[MLPClassifier, ClassifierMeta]:
    """``--classifier``: "300"/"500" (upstream file from the cache or the web) or a checkpoint path."""
    spec = str(spec).strip()
    if spec in {str(n) for n in CHUNK_LENGTHS}:
        wanted = int(spec)
        if chunk_length is not None and chunk_length != wanted:
            raise ModelError(
                f"--classifier {spec}: the {wanted} bp reference classifier does not match "
                f"--chunk-length {chunk_length}"
            )
        return load_reference_pickle(fetch_reference_classifier(wanted), wanted)
    path = Path(spec).expanduser()
    if not path.is_file() and spec.isdigit():
        raise ModelError(
            f"there is no reference classifier for {spec} bp chunks (only for {' and '.join(map(str, CHUNK_LENGTHS))}): "
            f"give --classifier PATH, a checkpoint trained for {spec} bp chunks (e.g. by `virnucpro train`)"
        )
    if not path.is_file():
        choices = " or ".join(str(n) for n in CHUNK_LENGTHS)
        raise ModelError(
            f"{spec}: classifier file not found (give a checkpoint path, or {choices} for a reference model)"
        )
    return load_classifier_file(path, chunk_length)


def _check_chunk_length(chunk_length: int) -> None:
    if chunk_length not in REFERENCE_BLOB_IDS:
        choices = ", ".join(str(n) for n in sorted(REFERENCE_BLOB_IDS))
        raise ModelError(f"no reference classifier for chunk length {chunk_length} (choose {choices})")
