"""Embed one FASTA file with a loaded model: the unit of work of every worker.

Identical sequences are embedded once. Batches come from ``embedder.make_batches``; a batch
that runs out of memory is re-batched with half the token budget, down to one sequence per
batch; a sequence that still does not fit is recorded as a failure and the rest of the file
is kept, and so is a sequence whose embedding is not finite (an overflow in half precision).
``parallel_batches`` > 1 runs that many batches at once in threads (CPU workers, see
:mod:`virnucpro.engine.cpu_batches`); results and accounting are the same, in the same order. A
device failure (the GPU is unusable) raises DeviceFailure: the worker must stop. A file that
cannot be read, is empty or holds invalid letters is one failure. Every other problem becomes
a :class:`~virnucpro.contracts.Failure`: nothing here raises for bad data.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from virnucpro.contracts import NOT_FINITE, STAGE_DNA, STAGE_ESM, Failure
from virnucpro.embeddings.base import Embedder
from virnucpro.embeddings.store import (
    META_EMBEDDED,
    META_EMBEDDER,
    META_FAILED,
    META_INPUT_SHA256,
    META_PRECISION,
    META_RECORDS,
    META_STAGE,
    META_UNIQUE,
    load_embeddings,
    save_embeddings,
)
from virnucpro.errors import (
    DeviceFailure,
    VirnucproError,
    describe,
    error_line,
    is_device_failure,
    is_out_of_memory,
    raise_interruption_behind,
    release_cached_memory,
)
from virnucpro.log import get_logger
from virnucpro.seqio import NUCLEOTIDE_LETTERS, compression_of, file_sha256, is_stream, read_fasta

log = get_logger("engine.embed_file")

# Letters each model accepts (ESM-2: fair-esm's protein alphabet; DNABERT-S: IUPAC nucleotides).
PROTEIN_LETTERS = "LAGVSERTIDPKQNFYMHWCXBUZO.-"
_INVALID = {
    STAGE_ESM: re.compile(f"[^{re.escape(PROTEIN_LETTERS)}]"),
    STAGE_DNA: re.compile(f"[^{re.escape(NUCLEOTIDE_LETTERS)}]"),
}

_LOOKS_NUCLEOTIDE = re.compile("[ACGTUN]+")

ProgressCallback = Callable[[int, int], None]  # (sequences, tokens) embedded by one batch

# State of each distinct sequence of a file.
_PENDING, _EMBEDDED, _NOT_FINITE = 0, 1, 2  # pending after all batches: out of memory alone


@dataclass
class FileResult:
    """What happened to one file (picklable: it travels from a worker to the manager)."""

    path: str
    output: Path | None = None  # written or kept (resume); None when the file failed
    skipped: bool = False  # --resume found a complete, matching output
    records: int = 0
    embedded: int = 0  # records with an embedding in the output
    unique: int = 0  # distinct sequences (each embedded once)
    tokens: int = 0  # tokens of the sequences embedded by this call
    oom_retries: int = 0  # batches re-run with half the budget
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)


def embedder_fingerprint(embedder: Embedder) -> str:
    """The embedder's identity as one canonical JSON string (stored in outputs, compared on resume)."""
    return json.dumps(embedder.identity(), sort_keys=True)


def effective_token_budget(embedder: Embedder, token_budget: int | None) -> int:
    """``token_budget``, or when None the embedder's default for its device."""
    return embedder.default_token_budget if token_budget is None else token_budget


def run_settings(embedder: Embedder, token_budget: int | None) -> dict[str, Any]:
    """How a loaded worker embeds, for summary.json: token budget, ESM-2's batch layout
    (``packed``/``padded``; None for other models) and the ``--precision auto`` measurements."""
    uses_packed = getattr(embedder, "uses_packed", None)
    return {
        "token_budget": effective_token_budget(embedder, token_budget),
        "layout": None if uses_packed is None else ("packed" if uses_packed else "padded"),
        "parity_checks": getattr(embedder, "parity_checks", None),
    }


def current_output_records(out_path: Path, input_sha256: str, fingerprint: str) -> int | None:
    """Records in ``out_path`` when it is a complete embedding of the same input bytes by the same
    model; None otherwise (missing, unreadable, incomplete, other input or model)."""
    if not out_path.is_file():
        return None
    try:
        stored = load_embeddings(out_path)
    except VirnucproError:
        return None
    meta = stored.meta
    current = (
        meta.get(META_INPUT_SHA256) == input_sha256
        and meta.get(META_EMBEDDER) == fingerprint
        and meta.get(META_FAILED) == "0"
        and meta.get(META_RECORDS) == str(len(stored.ids))
    )
    return len(stored.ids) if current else None


def embed_file(
    path: str,
    embedder: Embedder,
    out_path: Path,
    token_budget: int | None,
    *,
    skip_if_current: bool = False,
    on_batch: ProgressCallback | None = None,
    parallel_batches: int = 1,
) -> FileResult:
    """Embed every record of FASTA ``path`` into ``out_path``; failures are returned, never raised.

    ``skip_if_current`` (``--resume``) keeps an existing output that is complete and was made
    from the same input bytes by the same model. ``on_batch`` is told each embedded batch.
    ``parallel_batches``: batches embedded at once (threads; the caller sets torch's threads).
    ``token_budget`` None: the embedder's default for its device.
    """
    start = time.perf_counter()
    token_budget = effective_token_budget(embedder, token_budget)
    result = FileResult(path)
    fingerprint = embedder_fingerprint(embedder)
    try:
        if is_stream(path):  # read once: hashing it would leave nothing to embed
            raise ValueError("not a regular file (a pipe or standard input?): the embedding stages read files")
        input_sha256 = file_sha256(path)
        current = current_output_records(out_path, input_sha256, fingerprint) if skip_if_current else None
        if current is not None:
            result.output, result.skipped, result.records, result.embedded = out_path, True, current, current
            return result
        ids, sequences = _read_valid(path, embedder.stage)
    except Exception as error:  # noqa: BLE001  (any problem with the file is that file's failure)
        return _file_failed(result, out_path, embedder.stage, error, start)
    if embedder.stage == STAGE_ESM and all(_LOOKS_NUCLEOTIDE.fullmatch(seq) for seq in sequences):
        log.warning("%s: every sequence is only A, C, G, T/U and N: nucleotides given to ESM-2 (protein)?", path)

    unique_of: dict[str, int] = {}
    record_unique = [unique_of.setdefault(seq, len(unique_of)) for seq in sequences]
    unique = list(unique_of)
    result.records, result.unique = len(ids), len(unique)
    matrix = np.zeros((len(unique), embedder.dim), dtype=np.float32)
    state = np.full(len(unique), _PENDING, dtype=np.int8)
    try:
        tokens = [embedder.token_count(seq) for seq in unique]
        batches = embedder.make_batches(unique, token_budget)
        with closing(embedded_batches(embedder, unique, batches, parallel_batches)) as attempts:
            for batch, vectors in attempts:
                _record_batch(embedder, unique, tokens, batch, vectors, token_budget, matrix, state, result, on_batch)
    except Exception as error:  # noqa: BLE001  (a model error that is not out-of-memory fails the file)
        if is_device_failure(error):  # not this file's fault: the worker stops, the file goes elsewhere
            raise DeviceFailure(describe(error, typed=True)) from None
        return _file_failed(result, out_path, embedder.stage, error, start)

    kept = [i for i, u in enumerate(record_unique) if state[u] == _EMBEDDED]
    for i, u in enumerate(record_unique):
        if state[u] == _PENDING:
            why = f"out of memory with one sequence per batch ({tokens[u]} tokens)"
        elif state[u] == _NOT_FINITE:
            precision = embedder.identity().get(META_PRECISION, "fp32")
            hint = "" if precision == "fp32" else " (an overflow: try --precision fp32)"
            why = f"{NOT_FINITE} {precision}{hint}"
        else:
            continue
        result.failures.append(Failure.of_sequence(path, embedder.stage, ids[i], why))
    stored_meta = {
        **embedder.identity(),  # model, layer, precision: read by classify's compatibility check
        META_INPUT_SHA256: input_sha256,
        META_EMBEDDER: fingerprint,
        META_STAGE: embedder.stage,
        META_RECORDS: str(len(ids)),
        META_EMBEDDED: str(len(kept)),
        META_FAILED: str(len(ids) - len(kept)),
        META_UNIQUE: str(len(unique)),
    }
    try:
        save_embeddings(out_path, [ids[i] for i in kept], matrix[[record_unique[i] for i in kept]], stored_meta)
    except Exception as error:  # noqa: BLE001  (disk full, permissions: the file failed)
        return _file_failed(result, out_path, embedder.stage, error, start)
    result.output, result.embedded = out_path, len(kept)
    result.seconds = time.perf_counter() - start
    return result


def _read_valid(path: str, stage: str) -> tuple[list[str], list[str]]:
    """Ids and uppercase sequences of ``path``; ValueError naming the record for bad content."""
    compression = compression_of(path)
    if compression is not None:
        raise ValueError(f"{compression}-compressed: the embedding stages read plain-text FASTA (as prepare writes it)")
    invalid = _INVALID.get(stage)
    ids: list[str] = []
    sequences: list[str] = []
    for number, (record_id, seq) in enumerate(read_fasta(path), start=1):
        seq = seq.upper()
        if not seq:
            raise ValueError(f"record {number} ({record_id}): empty sequence")
        if invalid is not None:
            bad = sorted(set(invalid.findall(seq)))
            if bad:
                raise ValueError(f"record {number} ({record_id}): invalid letters {' '.join(map(repr, bad[:10]))}")
        ids.append(record_id)
        sequences.append(seq)
    if not ids:
        raise ValueError("no FASTA records (empty file or not FASTA)")
    return ids, sequences


def embedded_batches(
    embedder: Embedder, unique: list[str], batches: list[list[int]], parallel: int
) -> Iterator[tuple[list[int], np.ndarray | None]]:
    """Each batch (indices into ``unique``) with its embeddings, None when out of memory; in order,
    ``parallel`` batches computed at a time in threads. Other errors are raised."""
    if parallel <= 1 or len(batches) <= 1:
        for batch in batches:
            yield batch, _embed_or_none(embedder, [unique[i] for i in batch])
        return
    pool = ThreadPoolExecutor(min(parallel, len(batches)), thread_name_prefix="batch")
    try:
        yield from zip(batches, pool.map(lambda batch: _embed_or_none(embedder, [unique[i] for i in batch]), batches))
    finally:  # done, or the file failed or the run was stopped: drop the batches not started yet
        pool.shutdown(wait=False, cancel_futures=True)


def _record_batch(
    embedder: Embedder,
    unique: list[str],
    tokens: list[int],
    batch: list[int],
    vectors: np.ndarray | None,
    budget: int,
    matrix: np.ndarray,
    state: np.ndarray,
    result: FileResult,
    on_batch: ProgressCallback | None,
) -> None:
    """Store the ``vectors`` of ``batch`` (indices into ``unique``) and set their ``state``; when
    they are None (out of memory) re-embed the batch in parts of at most half its padded tokens,
    recursively."""
    sequences = [unique[i] for i in batch]
    if vectors is None:  # out of memory; the failed attempt's tensors are unreachable by now
        release_cached_memory(collect=True)
        if len(batch) == 1:
            log.warning("out of memory on one sequence alone (%d tokens): recorded as failed", tokens[batch[0]])
            return
        padded = max(tokens[i] for i in batch) * len(batch)
        half = max(1, min(budget, padded) // 2)
        result.oom_retries += 1
        log.info("out of memory on %d sequences (%d padded tokens): retrying in batches of at most %d tokens",
                 len(batch), padded, half)
        subs = embedder.make_batches(sequences, half)
        if len(subs) == 1:  # still one batch: split it in two, so every retry is smaller
            subs = [subs[0][: len(batch) // 2], subs[0][len(batch) // 2 :]]
        for sub in subs:
            part = [batch[j] for j in sub]
            vectors = _embed_or_none(embedder, [unique[i] for i in part])
            _record_batch(embedder, unique, tokens, part, vectors, half, matrix, state, result, on_batch)
        return
    vectors = np.asarray(vectors, dtype=np.float32)
    matrix[batch] = vectors
    state[batch] = np.where(np.isfinite(vectors).all(axis=1), _EMBEDDED, _NOT_FINITE)
    batch_tokens = sum(tokens[i] for i in batch)
    result.tokens += batch_tokens
    if on_batch is not None:
        on_batch(len(batch), batch_tokens)


def _embed_or_none(embedder: Embedder, sequences: list[str]) -> np.ndarray | None:
    """The embeddings, or None when the model ran out of memory.

    None is returned outside the ``except`` block: the error's traceback, which holds the failed
    forward pass's tensors, is gone before anything is retried.
    """
    try:
        return embedder.embed_batch(sequences)
    except Exception as error:  # noqa: BLE001  (only out-of-memory is handled here)
        if not is_out_of_memory(error):
            raise
    return None


def _file_failed(result: FileResult, out_path: Path, stage: str, error: BaseException, start: float) -> FileResult:
    """Record the whole file as failed and remove a stale output of an earlier run.

    An interruption behind ``error`` (a SIGTERM that broke the output's cleanup) is raised
    instead: the run stops, and the file is not blamed.
    """
    raise_interruption_behind(error)
    log.debug("%s failed", result.path, exc_info=error)
    out_path.unlink(missing_ok=True)
    result.output, result.embedded = None, 0
    result.failures = [Failure(result.path, stage, error_line(error))]
    result.seconds = time.perf_counter() - start
    return result

