"""Score frames with the classifier, then call chunks (reference consensus) and sequences.

Streams shard by shard in manifest order, so memory is bounded by one shard's
embeddings whatever the number of reads.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from virnucpro import contracts as c
from virnucpro.atomic import atomic_open
from virnucpro.classifier.compatibility import check_compatible
from virnucpro.classifier.model import ClassifierMeta, MLPClassifier
from virnucpro.contracts import Failure
from virnucpro.embeddings.store import (
    META_EMBEDDER,
    META_INPUT_SHA256,
    META_LAYER,
    META_MODEL,
    META_STAGE,
    EmbeddingFile,
    load_embeddings,
)
from virnucpro.errors import InputError
from virnucpro.log import get_logger
from virnucpro.pairs import with_pair_calls
from virnucpro.prepare import ManifestRow, list_shards, read_manifest, read_prepare_info, shard_paths
from virnucpro.regions import ChunkState, RegionRule, find_regions
from virnucpro.seqio import file_sha256, read_fasta
from virnucpro.summary_json import log_outcome

log = get_logger("classify")

FRAME_TAG_LENGTH = 2  # "F1".."R3"


@dataclass(frozen=True)
class CallRule:
    """How frame scores become chunk, sequence and pair calls.

    A chunk is ``virus`` when its highest P(virus) is at least its highest P(others) (the
    reference's rule), or, with ``min_p_virus``, when its highest P(virus) >= ``min_p_virus``.
    A sequence is ``virus`` when ``virus_chunks / chunks_with_frame >= virus_fraction``
    (so a one-chunk read gets its chunk's call for any fraction in (0, 1]). A read pair is
    ``virus`` when any (``pair_rule`` ``any``) or both (``both``) mates are.
    """

    virus_fraction: float = 0.5
    min_p_virus: float | None = None
    pair_rule: str = "any"

    def __post_init__(self) -> None:
        if not 0.0 < self.virus_fraction <= 1.0:
            raise ValueError("virus_fraction must be in (0, 1]")
        if self.min_p_virus is not None and not 0.0 < self.min_p_virus <= 1.0:
            raise ValueError("min_p_virus must be in (0, 1]")
        if self.pair_rule not in c.PAIR_RULES:
            raise ValueError(f"pair_rule must be one of {', '.join(c.PAIR_RULES)}")

    def chunk_is_virus(self, chunk: "ChunkCall") -> bool:
        """The chunk's call (``Is_Virus``) under this rule."""
        return chunk.is_virus if self.min_p_virus is None else chunk.max_score_1 >= self.min_p_virus

    def to_dict(self) -> dict[str, object]:
        """The rule as summary.json records it (``min_p_virus`` null: the reference's argmax rule)."""
        return {"virus_fraction": self.virus_fraction, "min_p_virus": self.min_p_virus, "pair_rule": self.pair_rule}


@dataclass(frozen=True)
class FrameScore:
    """One kept frame: P(others), P(virus), or the reason it has no score."""

    frame_id: str
    scores: tuple[float, float] | None
    reason: str = ""
    shard: str = ""

    @property
    def chunk_id(self) -> str:
        return self.frame_id[:-FRAME_TAG_LENGTH]


@dataclass
class ChunkCall:
    """Reference consensus for one chunk (``prediction_results_highestscore.csv``)."""

    chunk_id: str
    max_score_0: float
    max_score_1: float

    @property
    def is_virus(self) -> bool:
        """The reference's call: highest P(virus) >= highest P(others) (ties -> virus)."""
        return self.max_score_1 >= self.max_score_0

    @property
    def number(self) -> int:
        """The chunk's number k in ``<id>_chunk_<k>`` (1-based)."""
        return int(self.chunk_id.rsplit("_chunk_", 1)[1])


@dataclass
class ClassifyResult:
    """Counts, failures and exit status of one classify run."""

    calls: dict[str, int] = field(default_factory=lambda: {call: 0 for call in c.CALLS})
    records: int = 0
    chunks: int = 0
    frames_scored: int = 0
    frames_failed: int = 0
    regions: int = 0
    pairs: int = 0
    failures: list[Failure] = field(default_factory=list)
    embedding_meta: dict[str, dict[str, object]] = field(default_factory=dict)

    @property
    def exit_status(self) -> int:
        """0 nothing failed; 2 some sequences classified despite failures; 1 none could be."""
        if not self.failures and self.calls[c.CALL_FAILED] == 0:
            return c.EXIT_OK
        classified = self.calls[c.CALL_VIRUS] + self.calls[c.CALL_OTHERS]
        return c.EXIT_PARTIAL if classified > 0 else c.EXIT_FAILED


def predict_proba(model: MLPClassifier, features: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Softmax probabilities ``[n, 2]`` (others, virus) in eval mode, float32."""
    model.eval()
    out = np.empty((len(features), 2), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(features[start : start + batch_size]))
            out[start : start + batch_size] = torch.softmax(model(batch), dim=1).numpy()
    return out


def _load_shard_embeddings(directory: Path, stem: str, stage: str) -> tuple[EmbeddingFile | None, str]:
    path = directory / f"{stem}{c.EMBEDDING_SUFFIX}"
    if not path.exists():
        return None, f"no {stage} embeddings for shard {stem}"
    try:
        return load_embeddings(path), ""
    except InputError as error:
        return None, f"unreadable {stage} embeddings for shard {stem}: {error}"


def embedder_identity(meta: dict[str, str]) -> dict[str, object]:
    """The embedding model's identity stored in an embedding file (model, layer, precision, ...),
    without the file's own counts; whole numbers as numbers (for summary.json)."""
    try:
        identity = json.loads(meta[META_EMBEDDER])
    except (KeyError, ValueError):
        identity = dict(meta)
    return {key: int(value) if isinstance(value, str) and value.isdigit() else value for key, value in identity.items()}


def failure_key(sequence_id: str) -> str:
    """A sequence id as it reads back from failed_files.txt, where '|' (the field separator) became '/'."""
    return sequence_id.replace("|", "/")


def _shard_stem(file_path: str) -> str:
    return Path(file_path).name.split(".")[0]


def upstream_reasons(failures: Sequence[Failure]) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """Why frames have no embedding, from the embedding stages' failure lines.

    By frame id for ``Failure.of_sequence`` lines (``ESM-2: out of memory with one sequence per
    batch (1024 tokens)``), and by ``(stage, shard stem)`` for a whole shard that failed.
    """
    by_frame: dict[str, str] = {}
    by_shard: dict[tuple[str, str], str] = {}
    for failure in failures:
        failed = failure.failed_sequence()
        if failed is not None:
            by_frame.setdefault(failure_key(failed[0]), f"{failure.stage}: {failed[1]}")
        else:
            by_shard.setdefault((failure.stage, _shard_stem(failure.file_path)), f"{failure.stage}: {failure.message}")
    return by_frame, by_shard


class FrameScorer:
    """Turns shards of frames plus their two embedding files into FrameScores."""

    def __init__(
        self,
        model: MLPClassifier,
        meta: ClassifierMeta,
        dna_dir: Path,
        esm_dir: Path,
        chunk_length: int | None,
        batch_size: int,
        result: ClassifyResult,
    ) -> None:
        self.model, self.meta = model, meta
        self.dna_dir, self.esm_dir = dna_dir, esm_dir
        self.chunk_length, self.batch_size = chunk_length, batch_size
        self.result = result
        self.frame_reasons: dict[str, str] = {}  # frame id -> why the embedding stage skipped it
        self.shard_reasons: dict[tuple[str, str], str] = {}  # (stage, shard stem) -> why it has no embeddings
        self._checked = False

    def _check(self, dna: EmbeddingFile, esm: EmbeddingFile) -> None:
        if self._checked:
            return
        for expected, directory, stored in ((c.STAGE_DNA, self.dna_dir, dna), (c.STAGE_ESM, self.esm_dir, esm)):
            found = stored.meta.get(META_STAGE)
            if found and found != expected:
                raise InputError(
                    f"{directory}: holds {found} embeddings where {expected} embeddings belong "
                    f"(--dna-embeddings and --esm-embeddings swapped?)"
                )
        check_compatible(
            self.meta,
            dna_dim=dna.matrix.shape[1],
            esm_dim=esm.matrix.shape[1],
            chunk_length=self.chunk_length,
            dna_model=dna.meta.get(META_MODEL),
            esm_model=esm.meta.get(META_MODEL),
            esm_layer=int(esm.meta[META_LAYER]) if esm.meta.get(META_LAYER) else None,
        )
        self.result.embedding_meta = {c.STAGE_DNA: embedder_identity(dna.meta), c.STAGE_ESM: embedder_identity(esm.meta)}
        self._checked = True

    def score_shard(
        self, frame_ids: list[str], stem: str, shards: tuple[Path, Path] | None = None
    ) -> Iterator[FrameScore]:
        """Scores for one shard's frames, in shard order; missing embeddings give a reason.

        ``shards``: the (nucleotide, protein) FASTA files the embeddings must have been made from.
        """
        dna, dna_reason = _load_shard_embeddings(self.dna_dir, stem, c.STAGE_DNA)
        esm, esm_reason = _load_shard_embeddings(self.esm_dir, stem, c.STAGE_ESM)
        if dna is None or esm is None:
            stage = c.STAGE_DNA if dna is None else c.STAGE_ESM
            reason = self.shard_reasons.get((stage, stem)) or dna_reason or esm_reason
            yield from (FrameScore(frame_id, None, reason, stem) for frame_id in frame_ids)
            return
        self._check(dna, esm)
        if shards is not None:
            known = set(frame_ids)
            for stored, directory, shard in ((dna, self.dna_dir, shards[0]), (esm, self.esm_dir, shards[1])):
                check_made_from(stored, directory / f"{stem}{c.EMBEDDING_SUFFIX}", shard, known)
        dna_rows = {frame_id: row for row, frame_id in enumerate(dna.ids)}
        esm_rows = {frame_id: row for row, frame_id in enumerate(esm.ids)}
        usable = [f for f in frame_ids if f in dna_rows and f in esm_rows]
        features = np.concatenate(
            [dna.matrix[[dna_rows[f] for f in usable]], esm.matrix[[esm_rows[f] for f in usable]]], axis=1
        )
        probabilities = predict_proba(self.model, features, self.batch_size) if usable else features
        scores = {f: (float(p[0]), float(p[1])) for f, p in zip(usable, probabilities)}
        for frame_id in frame_ids:
            if frame_id in scores and not np.isfinite(scores[frame_id]).all():
                yield FrameScore(frame_id, None, f"classifier score is not finite for frame {frame_id}", stem)
            elif frame_id in scores:
                yield FrameScore(frame_id, scores[frame_id], shard=stem)
            else:
                missing = c.STAGE_DNA if frame_id not in dna_rows else c.STAGE_ESM
                reason = self.frame_reasons.get(failure_key(frame_id)) or f"no {missing} embedding for frame {frame_id}"
                yield FrameScore(frame_id, None, reason, stem)

    def score_all(self, prepared: Path) -> Iterator[FrameScore]:
        """Every kept frame of the prepared sample, in manifest order."""
        for stem in list_shards(prepared):
            _, protein_path = shard_paths(prepared, stem)
            frame_ids = [frame_id for frame_id, _ in read_fasta(protein_path)]
            yield from self.score_shard(frame_ids, stem, shard_paths(prepared, stem))


def check_made_from(stored: EmbeddingFile, path: Path, shard: Path, frame_ids: set[str]) -> None:
    """Refuse embeddings not made from ``shard`` (another sample's, with the same shard names):
    the input digest they record, and their ids, must be the shard's."""
    recorded = stored.meta.get(META_INPUT_SHA256)
    if recorded and recorded != file_sha256(shard):
        raise InputError(f"{path}: embeddings of another input, not of {shard} (its sha256 differs)")
    stranger = next((frame_id for frame_id in stored.ids if frame_id not in frame_ids), None)
    if stranger is not None:
        raise InputError(f"{path}: embeddings of another input, not of {shard} (frame {stranger} is not there)")


@dataclass
class SequenceRow:
    """One input record with its chunk calls: a row of sequence_predictions.tsv."""

    record: ManifestRow
    frames: list[FrameScore]
    chunk_calls: list[ChunkCall]
    chunks_with_frame: int
    failed_reason: str = ""

    def call(self, rule: CallRule) -> tuple[str, str]:
        """The sequence call and its reason."""
        if self.failed_reason:
            return c.CALL_FAILED, self.failed_reason
        if not self.chunk_calls:
            if self.record.length == 0:
                return c.CALL_NO_FRAME, "empty sequence"
            return c.CALL_NO_FRAME, "every frame of every chunk has a stop codon or no complete codon"
        virus = self.virus_chunks(rule)
        call = c.CALL_VIRUS if virus / len(self.chunk_calls) >= rule.virus_fraction else c.CALL_OTHERS
        return call, f"{virus}/{len(self.chunk_calls)} chunks virus"

    def virus_chunks(self, rule: CallRule) -> int:
        return sum(rule.chunk_is_virus(chunk) for chunk in self.chunk_calls)

    def regions(self, rule: CallRule, regions: RegionRule, chunk_length: int) -> list:
        """The sequence's viral regions (none for a failed sequence: its calls are incomplete)."""
        if self.failed_reason:
            return []
        states = [ChunkState(chunk.number, rule.chunk_is_virus(chunk), chunk.max_score_1) for chunk in self.chunk_calls]
        return find_regions(self.record.id, self.record.length, chunk_length, states, regions)

    def fields(self, rule: CallRule, pair_call: str | None = None) -> list[str]:
        """Columns of contracts.SEQUENCE_PREDICTIONS_HEADER (``pair_call`` default: the row's own call)."""
        call, reason = self.call(rule)
        p_virus = [chunk.max_score_1 for chunk in self.chunk_calls] if call != c.CALL_FAILED else []
        return [
            self.record.id,
            self.record.original_id,
            str(self.record.length),
            str(self.record.chunks),
            str(self.chunks_with_frame),
            str(self.virus_chunks(rule)) if p_virus else "0",
            _fmt(max(p_virus)) if p_virus else "NA",
            _fmt(sum(p_virus) / len(p_virus)) if p_virus else "NA",
            call,
            reason,
            self.record.source,
            str(self.record.mate) if self.record.mate else "NA",
            pair_call or call,
        ]


def _fmt(value: float) -> str:
    """Scores as Python prints a float taken from a float32 tensor (the reference's ``.item()``)."""
    return repr(float(value))


def frame_label(scores: tuple[float, float]) -> str:
    """Frame-level label: argmax, ties -> others (torch.max picks the first)."""
    return c.CALL_VIRUS if scores[1] > scores[0] else c.CALL_OTHERS


def group_by_record(records: Iterator[ManifestRow], frames: Iterator[FrameScore]) -> Iterator[SequenceRow]:
    """Pair each manifest record with its kept frames (both streams are in input order)."""
    for record in records:
        chunk_frames: dict[str, list[FrameScore]] = {}
        for _ in range(record.kept_frames):
            frame = next(frames, None)
            if frame is None or not frame.frame_id.startswith(f"{record.id}_chunk_"):
                found = "end of frames" if frame is None else frame.frame_id
                raise InputError(f"prepared data is inconsistent: expected a frame of {record.id}, found {found}")
            chunk_frames.setdefault(frame.chunk_id, []).append(frame)
        failed = [f.reason for fs in chunk_frames.values() for f in fs if f.scores is None]
        calls = [
            ChunkCall(chunk_id, max(f.scores[0] for f in fs), max(f.scores[1] for f in fs))  # type: ignore[index]
            for chunk_id, fs in chunk_frames.items()
            if all(f.scores is not None for f in fs)
        ]
        frames_of_record = [f for fs in chunk_frames.values() for f in fs]
        yield SequenceRow(record, frames_of_record, calls, len(chunk_frames), failed[0] if failed else "")


_PREDICTION_FILES = {
    c.PREDICTION_RESULTS: c.PREDICTION_RESULTS_HEADER,
    c.PREDICTION_HIGHEST: c.PREDICTION_HIGHEST_HEADER,
    c.SEQUENCE_PREDICTIONS: c.SEQUENCE_PREDICTIONS_HEADER,
    c.VIRAL_REGIONS: c.VIRAL_REGIONS_HEADER,
}


class PredictionWriter:
    """Writes the prediction files and viral_regions.tsv atomically, row by row."""

    def __init__(self, outdir: Path, rule: CallRule, regions: RegionRule = RegionRule(), chunk_length: int = 300) -> None:
        self.outdir, self.rule = outdir, rule
        self.region_rule, self.chunk_length = regions, chunk_length
        self._files = contextlib.ExitStack()

    def __enter__(self) -> "PredictionWriter":
        with contextlib.ExitStack() as files:  # the ones opened so far are removed if one fails
            opened = []
            for name, header in _PREDICTION_FILES.items():
                handle = files.enter_context(atomic_open(self.outdir / name))
                handle.write("\t".join(header) + "\n")
                opened.append(handle)
            self._files = files.pop_all()
        self.frames, self.chunks, self.sequences, self.regions = opened
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close every file, even when closing one fails (a full disk): all three are kept, or none."""
        try:
            self._files.__exit__(*exc_info)
        except BaseException:
            for name in _PREDICTION_FILES:
                (self.outdir / name).unlink(missing_ok=True)
            raise

    def write(self, row: SequenceRow, pair_call: str | None = None) -> int:
        """Append one record's frames, chunk calls, sequence call and regions; returns the number of regions."""
        for frame in row.frames:
            if frame.scores is not None:
                s1, s2 = frame.scores
                self.frames.write(f"{frame.frame_id}\t{frame_label(frame.scores)}\t{_fmt(s1)}\t{_fmt(s2)}\n")
        for chunk in row.chunk_calls:
            is_virus = self.rule.chunk_is_virus(chunk)
            self.chunks.write(f"{chunk.chunk_id}\t{is_virus}\t{_fmt(chunk.max_score_0)}\t{_fmt(chunk.max_score_1)}\n")
        self.sequences.write("\t".join(row.fields(self.rule, pair_call)) + "\n")
        regions = row.regions(self.rule, self.region_rule, self.chunk_length)
        for region in regions:
            self.regions.write("\t".join(region.fields()) + "\n")
        return len(regions)


def classify_prepared(
    prepared: Path,
    dna_dir: Path,
    esm_dir: Path,
    outdir: Path,
    classifier: tuple[MLPClassifier, ClassifierMeta],
    chunk_length: int | None = None,
    batch_size: int = 1024,
    rule: CallRule = CallRule(),
    upstream_failures: Sequence[Failure] = (),
    regions: RegionRule = RegionRule(),
) -> ClassifyResult:
    """Score every kept frame of a prepared sample and write the prediction files and
    viral_regions.tsv to ``outdir``.

    ``upstream_failures`` (from the embedding stages) are carried into failed_files.txt;
    frames without embeddings make their sequence ``failed`` with the reason.
    """
    model, meta = classifier
    region_chunk_length = chunk_length or read_prepare_info(prepared)["chunk_length"]
    result = ClassifyResult(failures=list(upstream_failures))
    scorer = FrameScorer(model, meta, dna_dir, esm_dir, chunk_length, batch_size, result)
    scorer.frame_reasons, scorer.shard_reasons = upstream_reasons(upstream_failures)
    outdir.mkdir(parents=True, exist_ok=True)
    reported = {_shard_stem(f.file_path) for f in upstream_failures}
    rows = group_by_record(read_manifest(prepared), scorer.score_all(prepared))
    with PredictionWriter(outdir, rule, regions, region_chunk_length) as writer:
        for row, pair_call in with_pair_calls(rows, lambda row: row.record.mate, lambda row: row.call(rule)[0], rule.pair_rule):
            result.regions += writer.write(row, pair_call)
            result.pairs += row.record.mate == 1
            call, reason = row.call(rule)
            result.calls[call] += 1
            result.records += 1
            result.chunks += row.record.chunks
            result.frames_scored += sum(f.scores is not None for f in row.frames)
            result.frames_failed += sum(f.scores is None for f in row.frames)
            for frame in row.frames:  # failures nobody upstream reported (e.g. a lost task)
                if frame.scores is None and frame.shard not in reported:
                    reported.add(frame.shard)
                    result.failures.append(Failure(str(prepared), c.STAGE_CLASSIFY, frame.reason))
    c.write_failures(outdir / c.FAILED_FILES, result.failures)
    log.info(
        "classified %d sequences: %s",
        result.records,
        ", ".join(f"{n} {call}" for call, n in result.calls.items() if n),
    )
    log_outcome("classify", result.exit_status, result.failures, outdir / c.FAILED_FILES)
    return result


def classify_summary(
    result: ClassifyResult, meta: ClassifierMeta, rule: CallRule, regions: RegionRule = RegionRule()
) -> dict:
    """The classify part of summary.json."""
    return {
        "exit_status": result.exit_status,
        "records": result.records,
        "chunks": result.chunks,
        "frames_scored": result.frames_scored,
        "frames_failed": result.frames_failed,
        "calls": result.calls,
        "failures": len(result.failures),
        "pairs": result.pairs,
        "regions": {"count": result.regions, **regions.to_dict()},
        "call_rule": rule.to_dict(),
        "models": {"classifier": meta.to_dict(), **result.embedding_meta},
    }
