"""One benchmark stage each; every function runs in its own child process (see benchmarks/child.py).

Each returns a dict of plain numbers. Embedding stages run the engine's unit of work
(:func:`virnucpro.engine.embed_file`: FASTA reading, deduplication, batching, the model, the
``.npz`` writing) in this process with a model loaded once, the batches side by side as the
CPU workers run them, and time the model calls apart from the rest, so CPU overhead and model
work are reported separately.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.flops import EncoderShape
from virnucpro.embeddings.base import EmbedderWrapper


class TimedEmbedder(EmbedderWrapper):
    """Wraps an embedder: the same interface, plus the wall seconds during which at least one
    ``embed_batch`` call ran (batches run side by side in threads)."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.model_s = 0.0
        self.batches = 0
        self._running = 0
        self._busy_since = 0.0
        self._lock = threading.Lock()

    def embed_batch(self, sequences: list[str]) -> np.ndarray:
        with self._lock:
            if not self._running:
                self._busy_since = time.perf_counter()
            self._running += 1
        try:
            return self.inner.embed_batch(sequences)
        finally:
            with self._lock:
                self._running -= 1
                self.batches += 1
                if not self._running:
                    self.model_s += time.perf_counter() - self._busy_since


def _token_lengths(embedder, kind: str, sequences: list[str]) -> list[int]:
    """Real tokens per sequence (special tokens included, no padding)."""
    if kind == "dna":
        return [len(ids) for ids in embedder.encode(sequences)]
    return [embedder.token_count(seq) for seq in sequences]


def _shape(embedder, kind: str) -> EncoderShape:
    from benchmarks.flops import bert_shape, esm_shape

    return bert_shape(embedder.model) if kind == "dna" else esm_shape(embedder.model, embedder.layer)


def stage_prepare(reads: str, prepared: str, chunk_length: int, shard_size: int) -> dict:
    """``virnucpro prepare``: chunks, frames, manifest and shards."""
    from virnucpro.prepare import prepare

    start = time.perf_counter()
    result = prepare([reads], Path(prepared), chunk_length, shard_size)
    return {
        "wall_s": time.perf_counter() - start,
        "sequences": result.records,
        "chunks": result.chunks,
        "frames": result.frames,
        "residues": result.residues,
        "shards": len(result.shards),
    }


def stage_embed(kind: str, model: str, prepared: str, outdir: str, token_budget: int, precision: str = "auto") -> dict:
    """One embedding stage over every shard, in this process: load once, then the engine's embed_file."""
    from virnucpro.embeddings.dna import DnaSpec
    from virnucpro.embeddings.esm import EsmSpec
    from virnucpro.engine import embed_file
    from virnucpro.engine.cpu_batches import batches_side_by_side
    from virnucpro.prepare import list_shards, shard_paths
    from virnucpro.seqio import read_fasta

    which = 0 if kind == "dna" else 1
    files = [shard_paths(Path(prepared), stem)[which] for stem in list_shards(Path(prepared))]
    start = time.perf_counter()
    embedder = (DnaSpec if kind == "dna" else EsmSpec)(model, precision=precision).load("cpu")
    load_s = time.perf_counter() - start
    timed = TimedEmbedder(embedder)
    Path(outdir).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    failures = 0
    with batches_side_by_side("cpu") as parallel:
        for path in files:
            out = Path(outdir) / f"{path.stem}.npz"
            result = embed_file(str(path), timed, out, token_budget, parallel_batches=parallel)
            failures += len(result.failures)
    embed_s = time.perf_counter() - start
    sequences = [seq.upper() for path in files for _, seq in read_fasta(path)]
    unique = list(dict.fromkeys(sequences))
    lengths = _token_lengths(embedder, kind, unique)
    shape = _shape(embedder, kind)
    return {
        "wall_s": load_s + embed_s,
        "load_s": load_s,
        "embed_s": embed_s,
        "model_s": timed.model_s,
        "overhead_s": embed_s - timed.model_s,
        "batches": timed.batches,
        "token_budget": token_budget,
        "sequences": len(sequences),
        "unique_sequences": len(unique),
        "tokens": sum(lengths),
        "flops": shape.flops(lengths),
        "model_shape": {
            "layers": shape.layers, "width": shape.width, "matrix_params_per_layer": shape.matrix_params_per_layer
        },
        "failures": failures,
        "precision": embedder.identity()["precision"],
    }


def stage_classify(prepared: str, dna_dir: str, esm_dir: str, outdir: str, classifier: str, chunk_length: int) -> dict:
    """``virnucpro classify`` on the embeddings of the two stages above."""
    from virnucpro.classifier.reference import resolve_classifier
    from virnucpro.classify import classify_prepared

    start = time.perf_counter()
    loaded = resolve_classifier(classifier, chunk_length)
    result = classify_prepared(Path(prepared), Path(dna_dir), Path(esm_dir), Path(outdir), loaded, chunk_length)
    return {
        "wall_s": time.perf_counter() - start,
        "sequences": result.records,
        "frames": result.frames_scored,
        "exit_status": result.exit_status,
    }


def stage_predict(
    reads: str,
    outdir: str,
    models: dict,
    chunk_length: int,
    esm_tokens: int,
    dna_tokens: int,
    shard_size: int,
    precision: str = "auto",
) -> dict:
    """The whole ``virnucpro predict``, as the command runs it."""
    import json

    from virnucpro.embeddings.dna import DnaSpec
    from virnucpro.embeddings.esm import EsmSpec
    from virnucpro.predict import PredictOptions, run_predict

    options = PredictOptions(
        chunk_length=chunk_length,
        classifier=models["classifier"],
        esm=EsmSpec(models["esm"], precision=precision),
        dna=DnaSpec(models["dna"], precision=precision),
        esm_batch_tokens=esm_tokens,
        dna_batch_tokens=dna_tokens,
        shard_size=shard_size,
        progress="quiet",
    )
    start = time.perf_counter()
    code = run_predict([reads], Path(outdir), options)
    wall_s = time.perf_counter() - start
    summary = json.loads((Path(outdir) / "summary.json").read_text(encoding="utf-8"))
    engine = {
        stage: {"wall_s": stats.get("wall_s"), "tokens": stats.get("tokens"), "embedded": stats.get("embedded"),
                "busy_s": sum(d.get("busy_s", 0.0) for d in stats.get("devices", {}).values()),
                "precision": sorted({str(d.get("precision")) for d in stats.get("devices", {}).values()})}
        for stage, stats in summary.get("engine", {}).items()
    }
    return {"wall_s": wall_s, "exit_status": code, "timings_s": summary.get("timings_s", {}), "engine": engine}


def stage_reference(reads: str, workdir: str, models: dict, chunk_length: int) -> dict:
    """The reference tool's execution strategy on the same models and reads."""
    from benchmarks.reference_strategy import run_reference

    return run_reference([reads], Path(workdir), models["esm"], models["dna"], models["classifier"], chunk_length)


def stage_gemm(quick: bool) -> dict:
    """The machine description and its fp32 GEMM rate."""
    from benchmarks.hardware import GEMM_SIZES, QUICK_GEMM_SIZES, machine_info, measure_gemm

    start = time.perf_counter()
    gemm = measure_gemm(QUICK_GEMM_SIZES if quick else GEMM_SIZES, repeats=2 if quick else 5)
    return {"wall_s": time.perf_counter() - start, "machine": machine_info(), "gemm": gemm}


def stage_models(outdir: str, size: str, chunk_length: int) -> dict:
    """Random test models in the real on-disk formats (virnucpro.testmodels)."""
    from virnucpro.testmodels import make_test_models

    start = time.perf_counter()
    models = make_test_models(Path(outdir), size=size, chunk_length=chunk_length)
    return {
        "wall_s": time.perf_counter() - start,
        "paths": {"esm": str(models.esm), "dna": str(models.dna), "classifier": str(models.classifier)},
    }


STAGES = {
    "models": stage_models,
    "prepare": stage_prepare,
    "embed": stage_embed,
    "classify": stage_classify,
    "predict": stage_predict,
    "reference": stage_reference,
    "gemm": stage_gemm,
}
