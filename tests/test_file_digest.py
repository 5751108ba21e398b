"""Model files are identified by content: a digest computed once per version of the file."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from virnucpro.embeddings import file_digest


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VIRNUCPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(file_digest, "_known", {})
    return tmp_path / "cache" / file_digest.DIGEST_CACHE


def test_a_file_is_read_once_per_version_and_new_content_under_old_dates_is_seen(tmp_path: Path, cache: Path) -> None:
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"old weights")
    assert file_digest.cached_sha256(str(weights)) == hashlib.sha256(b"old weights").hexdigest()
    assert list(json.loads(cache.read_text()).values()) == [hashlib.sha256(b"old weights").hexdigest()]

    file_digest._known.clear()  # a new process: the cache file answers, the file is not read
    real_open = open

    def no_reading(path, *args, **kwargs):
        assert Path(path) != weights, "the model file was read again"
        return real_open(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("builtins.open", no_reading)
        assert file_digest.cached_sha256(str(weights)) == hashlib.sha256(b"old weights").hexdigest()

    old = weights.stat()
    weights.write_bytes(b"new weights")  # same size, dates set back: only the content tells
    os.utime(weights, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert file_digest.cached_sha256(str(weights)) == hashlib.sha256(b"new weights").hexdigest()


def test_an_unwritable_cache_only_costs_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    monkeypatch.setenv("VIRNUCPRO_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(file_digest, "_known", {})
    weights = tmp_path / "m.pt"
    weights.write_bytes(b"w")
    assert file_digest.cached_sha256(str(weights)) == hashlib.sha256(b"w").hexdigest()
