"""The SHA-256 of a model file's content, computed once per version of the file.

A model file is identified by what it holds, not by its path, size and modification time: new
weights copied over old ones with the old dates (images built with fixed file times do this)
must not pass for the old model. Reading an 11 GB checkpoint takes seconds, so a digest is
remembered, in this process and in ``<cache>/model-digests.json``, under the file's device,
inode, size, modification time and change time; the change time is set by the kernel on any
write and cannot be set back, so a file written since has another key and is read again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from virnucpro.log import get_logger

log = get_logger("models")

DIGEST_CACHE = "model-digests.json"

_known: dict[str, str] = {}  # this process's digests by key


def _key(path: str) -> str:
    stat = os.stat(path)
    return f"{os.path.realpath(path)}\0{stat.st_dev}\0{stat.st_ino}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}"


def _cache_file() -> Path:
    from virnucpro.classifier.reference import default_cache_dir

    return default_cache_dir() / DIGEST_CACHE


def _read_cache(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _remember(key: str, digest: str) -> None:
    """Add one digest to the cache file (best effort: an unwritable cache only costs time)."""
    from virnucpro.atomic import atomic_write_text

    path = _cache_file()
    try:
        known = _read_cache(path)
        known[key] = digest
        atomic_write_text(path, json.dumps(known, sort_keys=True))
    except OSError as error:
        log.debug("%s: model digest not cached (%s)", path, error.strerror or error)


def cached_sha256(path: str) -> str:
    """The hex SHA-256 of ``path``'s content (read only when this version of the file is new)."""
    from virnucpro.seqio import file_sha256

    key = _key(path)
    if key in _known:
        return _known[key]
    digest = _read_cache(_cache_file()).get(key)
    if digest is None:
        digest = file_sha256(path)
        if _key(path) == key:  # unchanged while it was read
            _remember(key, digest)
    _known[key] = digest
    return digest
