"""The frames of a labelled prepared directory with their features (DNA then protein embedding,
as ``classify`` concatenates them) and labels, by part of the split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from virnucpro import contracts as c
from virnucpro.classify import embedder_identity
from virnucpro.embeddings.store import EmbeddingFile, load_embeddings
from virnucpro.errors import InputError
from virnucpro.log import get_logger
from virnucpro.prepare import list_shards, shard_paths
from virnucpro.seqio import read_fasta
from virnucpro.training.labelled import LabelRow
from virnucpro.training.sheet import LABELS
from virnucpro.training.splits import PARTS, UNIT_FRAME

log = get_logger("fit")


@dataclass
class FrameSet:
    """Frames of one part: ids, their sequence ids, features ``[n, dna + esm]`` float32, labels (1 virus)."""

    ids: list[str]
    records: list[str]
    features: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def label_counts(self) -> dict[str, int]:
        return {label: int(np.sum(self.labels == index)) for index, label in enumerate(LABELS)}


@dataclass
class TrainingData:
    """The parts, the embedding models' identity and dimensions, and the frames left out."""

    parts: dict[str, FrameSet]
    dna_dim: int
    esm_dim: int
    embedders: dict[str, dict[str, object]] = field(default_factory=dict)
    missing: int = 0  # frames without one of their embeddings (failed upstream)
    first_missing: str = ""


def record_of_frame(frame_id: str) -> str:
    """``<id>_chunk_<k><tag>`` -> ``<id>``."""
    return frame_id[:-2].rsplit("_chunk_", 1)[0]


def load_training_data(
    prepared: Path, dna_dir: Path, esm_dir: Path, labels: dict[str, LabelRow], unit: str, parts: dict[str, str]
) -> TrainingData:
    """Every frame that has both embeddings, with its features and label, by part."""
    names = (*PARTS, *sorted(set(parts.values()) - set(PARTS)))
    blocks: dict[str, list[tuple[list[str], list[str], np.ndarray, np.ndarray]]] = {part: [] for part in names}
    data = TrainingData({}, 0, 0)
    for stem in list_shards(prepared):
        frame_ids = [frame_id for frame_id, _ in read_fasta(shard_paths(prepared, stem)[1])]
        dna = _load(Path(dna_dir), stem, c.STAGE_DNA)
        esm = _load(Path(esm_dir), stem, c.STAGE_ESM)
        if dna is None or esm is None:
            data.missing += len(frame_ids)
            data.first_missing = data.first_missing or f"no {'DNA' if dna is None else 'ESM'} embeddings for {stem}"
            continue
        _check_dims(data, dna, esm, stem)
        dna_rows = {frame_id: i for i, frame_id in enumerate(dna.ids)}
        esm_rows = {frame_id: i for i, frame_id in enumerate(esm.ids)}
        usable = [frame_id for frame_id in frame_ids if frame_id in dna_rows and frame_id in esm_rows]
        if len(usable) < len(frame_ids):
            data.missing += len(frame_ids) - len(usable)
            lost = next(frame_id for frame_id in frame_ids if frame_id not in dna_rows or frame_id not in esm_rows)
            data.first_missing = data.first_missing or f"frame {lost} has no embedding"
        records = [record_of_frame(frame_id) for frame_id in usable]
        part_of = [parts.get(frame_id if unit == UNIT_FRAME else record) for frame_id, record in zip(usable, records)]
        if None in part_of:
            frame_id = usable[part_of.index(None)]
            raise InputError(f"{prepared}: frame {frame_id} is in no part of the split (split.tsv of other data?)")
        features = np.concatenate(
            [dna.matrix[[dna_rows[f] for f in usable]], esm.matrix[[esm_rows[f] for f in usable]]], axis=1
        )
        targets = np.array([labels[record].target for record in records], dtype=np.int64)
        for part in dict.fromkeys(part_of):
            keep = [i for i, found in enumerate(part_of) if found == part]
            blocks[part].append(([usable[i] for i in keep], [records[i] for i in keep], features[keep], targets[keep]))  # type: ignore[index]
    width = data.dna_dim + data.esm_dim
    for part, found in blocks.items():
        data.parts[part] = FrameSet(
            [frame_id for block in found for frame_id in block[0]],
            [record for block in found for record in block[1]],
            np.concatenate([block[2] for block in found]) if found else np.zeros((0, width), np.float32),
            np.concatenate([block[3] for block in found]) if found else np.zeros(0, np.int64),
        )
    if data.missing:
        log.warning("%d frame(s) have no embedding and are left out (first: %s)", data.missing, data.first_missing)
    return data


def _load(directory: Path, stem: str, stage: str) -> EmbeddingFile | None:
    path = directory / f"{stem}{c.EMBEDDING_SUFFIX}"
    if not path.exists():
        return None
    stored = load_embeddings(path)
    found = stored.meta.get("stage")
    if found and found != stage:
        raise InputError(f"{directory}: holds {found} embeddings where {stage} embeddings belong (swapped?)")
    return stored


def _check_dims(data: TrainingData, dna: EmbeddingFile, esm: EmbeddingFile, stem: str) -> None:
    dims = (dna.matrix.shape[1], esm.matrix.shape[1])
    if not data.embedders:
        data.dna_dim, data.esm_dim = dims
        data.embedders = {c.STAGE_DNA: embedder_identity(dna.meta), c.STAGE_ESM: embedder_identity(esm.meta)}
    elif dims != (data.dna_dim, data.esm_dim):
        raise InputError(f"shard {stem}: embeddings of {dims[0]} + {dims[1]} dimensions, other shards have "
                         f"{data.dna_dim} + {data.esm_dim} (embedded by different models?)")  # fmt: skip
