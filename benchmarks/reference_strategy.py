"""The reference tool's execution strategy, on our models and data, for side-by-side ratios.

What upstream VirNucPro does (reference doc §3 and §7), reproduced with our loaders and frame
code so that only the *strategy* differs from ``virnucpro predict``:

- one process; chunks and kept frames written to files of ``records_per_file`` (10,000) frames;
- for every such file, both models are loaded again (DNA model, then ESM-2);
- the DNA model embeds one sequence per forward (mean over all tokens; our DNABERT-2 code, equal
  to the published one to float rounding, with oneDNN linears on AVX-512 CPUs);
- ESM-2 embeds fair-esm's length-sorted 2048-token batches through fair-esm's own
  ``ESM2.forward`` (language-model head included, stock ``nn.Linear`` layers, fp32), then takes
  each sequence's mean in a Python loop, as upstream;
- per-file features are saved with ``torch.save``, then all of them are loaded and held in
  memory, concatenated per frame, scored by the classifier, and the per-chunk consensus written.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from virnucpro.classifier.reference import resolve_classifier
from virnucpro.classify import predict_proba
from virnucpro.embeddings.dna import DnaEmbedder, load_dna_embedder
from virnucpro.embeddings.esm import EsmEmbedder, load_esm_embedder
from virnucpro.frames import chunk_sequence, kept_frames
from virnucpro.seqio import read_fasta, read_records, write_fasta_record

RECORDS_PER_FILE = 10_000
ESM_TOKENS_PER_BATCH = 2048


class Phases:
    """Wall-clock seconds per named phase (added up over files)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, start: float) -> float:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - start
        return now


def write_frame_files(inputs: list[str], workdir: Path, chunk_length: int, per_file: int) -> list[tuple[Path, Path]]:
    """Chunk, translate and filter; write (nucleotide, protein) FASTA files of ``per_file`` frames each."""
    pairs: list[tuple[Path, Path]] = []
    handles = None
    count = 0
    for record in read_records(inputs):
        for chunk_id, chunk in chunk_sequence(record.id, record.seq, chunk_length):
            for frame in kept_frames(chunk_id, chunk):
                if handles is None or count == per_file:
                    if handles:
                        for handle in handles:
                            handle.close()
                    number = len(pairs)
                    pairs.append((workdir / f"split_{number}.fa", workdir / f"split_{number}.faa"))
                    handles = tuple(open(path, "w", encoding="utf-8") for path in pairs[-1])
                    count = 0
                write_fasta_record(handles[0], frame.id, frame.nucleotide)
                write_fasta_record(handles[1], frame.id, frame.protein)
                count += 1
    for handle in handles or ():
        handle.close()
    return pairs


def dna_one_by_one(embedder: DnaEmbedder, records: Iterator[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Upstream's DNABERT-S loop: one tokenizer call and one forward per sequence."""
    features: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for record_id, seq in records:
            input_ids = torch.tensor(embedder.encode([seq]))
            hidden = embedder.model(input_ids)
            features[record_id] = torch.mean(hidden[0], dim=0)
    return features


def esm_fair_batches(embedder: EsmEmbedder, records: list[tuple[str, str]], tokens: int) -> dict[str, torch.Tensor]:
    """Upstream's ESM-2 loop: fair-esm batches, ``ESM2.forward``, a Python mean per sequence."""
    features: dict[str, torch.Tensor] = {}
    sequences = [seq for _, seq in records]
    layer = embedder.layer
    with torch.inference_mode():
        for batch in embedder.make_batches(sequences, tokens):
            labels, strs, toks = embedder._converter([records[i] for i in batch])
            out = embedder.model(toks, repr_layers=[layer], return_contacts=False)
            representations = out["representations"][layer]
            for row, (label, seq) in enumerate(zip(labels, strs)):
                features[label] = representations[row, 1 : len(seq) + 1].mean(0).clone()
    return features


def run_reference(
    inputs: list[str],
    workdir: Path,
    esm_model: str,
    dna_model: str,
    classifier: str,
    chunk_length: int = 300,
    records_per_file: int = RECORDS_PER_FILE,
    esm_tokens: int = ESM_TOKENS_PER_BATCH,
) -> dict:
    """Run the reference strategy end to end; returns phase timings and counts."""
    workdir.mkdir(parents=True, exist_ok=True)
    phases = Phases()
    start = time.perf_counter()
    model, _meta = resolve_classifier(classifier, chunk_length)
    t = phases.add("load_classifier", start)
    pairs = write_frame_files(inputs, workdir, chunk_length, records_per_file)
    t = phases.add("prepare", t)
    feature_files: list[tuple[Path, Path]] = []
    frames = tokens_esm = 0
    for number, (nucleotide_path, protein_path) in enumerate(pairs):
        dna = load_dna_embedder(dna_model)
        t = phases.add("load_dna", t)
        dna_features = dna_one_by_one(dna, read_fasta(nucleotide_path))
        t = phases.add("embed_dna", t)
        torch.save(dna_features, workdir / f"split_{number}_dna.pt")
        del dna, dna_features
        esm = load_esm_embedder(esm_model)
        t = phases.add("load_esm", t)
        records = list(read_fasta(protein_path))
        esm_features = esm_fair_batches(esm, records, esm_tokens)
        t = phases.add("embed_esm", t)
        torch.save(esm_features, workdir / f"split_{number}_esm.pt")
        feature_files.append((workdir / f"split_{number}_dna.pt", workdir / f"split_{number}_esm.pt"))
        frames += len(records)
        tokens_esm += sum(len(seq) + 2 for _, seq in records)
        del esm, esm_features
        t = phases.add("save_features", t)
    ids, matrix = _merged_features(feature_files)
    t = phases.add("merge_features", t)
    probabilities = predict_proba(model, matrix) if len(ids) else np.zeros((0, 2), np.float32)
    _write_consensus(workdir / "prediction_results_highestscore.csv", ids, probabilities)
    phases.add("classify", t)
    return {
        "wall_s": time.perf_counter() - start,
        "phases_s": {name: round(value, 3) for name, value in phases.seconds.items()},
        "files": len(pairs),
        "frames": frames,
        "esm_tokens": tokens_esm,
        "records_per_file": records_per_file,
        "esm_tokens_per_batch": esm_tokens,
        "model_loads": {"dna": len(pairs), "esm": len(pairs)},
    }


def _merged_features(feature_files: list[tuple[Path, Path]]) -> tuple[list[str], np.ndarray]:
    """Every frame's concatenated (DNA, ESM) feature, all held in memory as upstream does."""
    ids: list[str] = []
    rows: list[torch.Tensor] = []
    for dna_path, esm_path in feature_files:
        dna = torch.load(dna_path, weights_only=True)
        esm = torch.load(esm_path, weights_only=True)
        for frame_id, vector in dna.items():
            ids.append(frame_id)
            rows.append(torch.cat((vector, esm[frame_id])))
    matrix = torch.stack(rows).numpy() if rows else np.zeros((0, 0), np.float32)
    return ids, matrix


def _write_consensus(path: Path, ids: list[str], probabilities: np.ndarray) -> None:
    """Per chunk: the highest score of each class over its frames (upstream's consensus file)."""
    best: dict[str, list[float]] = {}
    for frame_id, (others, virus) in zip(ids, probabilities.tolist()):
        scores = best.setdefault(frame_id[:-2], [others, virus])
        scores[0], scores[1] = max(scores[0], others), max(scores[1], virus)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("Modified_ID\tIs_Virus\tmax_score_0\tmax_score_1\n")  # tab-separated, as upstream
        for chunk_id, (others, virus) in best.items():
            handle.write(f"{chunk_id}\t{virus >= others}\t{others}\t{virus}\n")
