"""The embedding file format: round trip, no pickle, reproducible bytes, clear errors."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from virnucpro.embeddings.store import EmbeddingFile, load_embeddings, save_embeddings
from virnucpro.errors import InputError

IDS = ["read1_chunk_1F1", "read1_chunk_1R2", "δ-unicode_chunk_2F3"]
META = {"model": "esm2_t36_3B_UR50D", "layer": 36, "precision": "fp32"}


def _matrix(rows: int = 3, dim: int = 5) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(rows, dim))


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "shard_00000.npz"
    save_embeddings(path, IDS, _matrix(), META)
    loaded = load_embeddings(path)
    assert isinstance(loaded, EmbeddingFile)
    assert loaded.ids == IDS
    assert loaded.matrix.dtype == np.float32
    np.testing.assert_array_equal(loaded.matrix, _matrix().astype(np.float32))
    assert loaded.meta == {"model": "esm2_t36_3B_UR50D", "layer": "36", "precision": "fp32"}
    assert [p.name for p in tmp_path.iterdir()] == ["shard_00000.npz"]  # no temporary file left, no extra suffix


def test_loads_with_numpy_without_pickle(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    save_embeddings(path, IDS, _matrix(), META)
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == ["embeddings", "ids", "meta"]
        assert data["ids"].dtype.kind == "U"
        assert data["embeddings"].shape == (3, 5)
        assert json.loads(str(data["meta"][0]))["layer"] == "36"


def test_empty_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "empty.npz"
    save_embeddings(path, [], np.zeros((0, 7)), {})
    loaded = load_embeddings(path)
    assert loaded.ids == [] and loaded.matrix.shape == (0, 7) and loaded.meta == {}


def test_same_content_same_bytes(tmp_path: Path) -> None:
    save_embeddings(tmp_path / "a.npz", IDS, _matrix(), META)
    save_embeddings(tmp_path / "b.npz", IDS, _matrix(), dict(reversed(list(META.items()))))
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.npz") as archive:  # no clock in the file: same bytes on another day
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_mismatched_rows_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        save_embeddings(tmp_path / "x.npz", IDS, _matrix(rows=2), META)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing", "pickled", "float64", "wrong_rows"])
def test_bad_files_are_one_line_input_errors(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "bad.npz"
    save_embeddings(path, IDS, _matrix(), META)
    good = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00\x01not a zip at all" * 10)
    elif damage == "missing":
        path.unlink()
    elif damage == "pickled":  # an object array can only be read by unpickling: refused
        np.savez(path.with_suffix(""), ids=np.array(IDS, dtype=object), embeddings=_matrix(), meta=np.array(["{}"]))
    elif damage == "float64":
        np.savez(path.with_suffix(""), ids=np.array(IDS), embeddings=_matrix(), meta=np.array(["{}"]))
    elif damage == "wrong_rows":
        matrix = _matrix().astype(np.float32)
        np.savez(path.with_suffix(""), ids=np.array(IDS[:2]), embeddings=matrix, meta=np.array(["{}"]))
    with pytest.raises(InputError) as caught:
        load_embeddings(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message


def test_zip_without_our_members_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("something.npy", b"")
    with pytest.raises(InputError, match="not a valid embedding file"):
        load_embeddings(path)
