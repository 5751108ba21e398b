"""The embedding file format: one ``.npz`` per input FASTA, readable without unpickling.

A standard NumPy ``.npz`` (zip of ``.npy`` members, uncompressed) holding:

- ``ids``: unicode array ``[n]``, the sequence ids in file order;
- ``embeddings``: float32 ``[n, dim]``, row ``i`` belongs to ``ids[i]``;
- ``meta``: unicode array ``[1]`` holding a JSON object of strings: the model's identity (the
  ``META_MODEL``, ``META_LAYER``, ``META_PRECISION`` keys and more, from ``Embedder.identity``)
  and what the engine adds (the other ``META_*`` keys below; see docs/engine.md, "Resume").

It loads with ``np.load(path, allow_pickle=False)``. Files are written atomically (temporary
file, then rename) and byte-for-byte reproducibly (fixed zip timestamps), so the same ids,
numbers and metadata always give the same bytes.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from virnucpro.atomic import atomic_path
from virnucpro.errors import InputError, describe, raise_interruption_behind

# Metadata keys read back (classify's compatibility check, the engine's --resume).
META_MODEL = "model"
META_LAYER = "layer"
META_PRECISION = "precision"
META_INPUT_SHA256 = "input_sha256"  # the input file's digest
META_EMBEDDER = "embedder"  # the model's identity as canonical JSON
META_STAGE = "stage"  # contracts.STAGE_ESM or STAGE_DNA
META_RECORDS = "records"
META_EMBEDDED = "embedded"
META_FAILED = "failed_sequences"
META_UNIQUE = "unique_sequences"

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_MEMBERS = ("ids", "embeddings", "meta")


@dataclass
class EmbeddingFile:
    """The content of one embedding file."""

    ids: list[str]
    matrix: np.ndarray  # float32 [n, dim]
    meta: dict[str, str] = field(default_factory=dict)


def save_embeddings(path: Path, ids: Sequence[str], matrix: np.ndarray, meta: Mapping[str, object]) -> None:
    """Write ``ids``, ``matrix`` (cast to float32) and ``meta`` (values as strings) atomically to ``path``."""
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(ids):
        raise ValueError(f"embedding matrix of shape {matrix.shape} does not match {len(ids)} ids")
    arrays = {
        "ids": np.array(list(ids), dtype=np.str_),
        "embeddings": np.ascontiguousarray(matrix),
        "meta": np.array([json.dumps({str(k): str(v) for k, v in meta.items()}, sort_keys=True)], dtype=np.str_),
    }
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as handle:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, array in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
                with archive.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)


def load_embeddings(path: Path) -> EmbeddingFile:
    """Read an embedding file; anything missing, truncated or malformed is a one-line InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: embedding file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in _MEMBERS if name not in data.files]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            ids, matrix, meta_text = data["ids"], data["embeddings"], data["meta"]
    except Exception as error:  # noqa: BLE001  (zip, npy and pickle errors all mean "not our file")
        raise_interruption_behind(error)
        raise InputError(f"{path}: not a valid embedding file ({describe(error)})") from None
    return EmbeddingFile(_check_ids(path, ids, matrix), _check_matrix(path, matrix), _parse_meta(path, meta_text))


def _check_ids(path: Path, ids: np.ndarray, matrix: np.ndarray) -> list[str]:
    if ids.ndim != 1 or ids.dtype.kind != "U":
        raise InputError(f"{path}: not a valid embedding file (ids are not a list of strings)")
    if matrix.ndim != 2 or matrix.shape[0] != ids.shape[0]:
        raise InputError(
            f"{path}: not a valid embedding file ({ids.shape[0]} ids but embeddings of shape {matrix.shape})"
        )
    return ids.tolist()


def _check_matrix(path: Path, matrix: np.ndarray) -> np.ndarray:
    if matrix.dtype != np.float32:
        raise InputError(f"{path}: not a valid embedding file (embeddings are {matrix.dtype}, not float32)")
    return matrix


def _parse_meta(path: Path, meta_text: np.ndarray) -> dict[str, str]:
    try:
        if meta_text.dtype.kind != "U" or meta_text.size != 1:
            raise ValueError("not one string")
        meta = json.loads(str(meta_text.reshape(-1)[0]))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except ValueError as error:
        raise InputError(f"{path}: not a valid embedding file (metadata: {describe(error)})") from None
    return {str(k): str(v) for k, v in meta.items()}


