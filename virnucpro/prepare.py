"""The ``prepare`` stage: input records -> chunks, kept frames, manifest and frame shards.

Streams records (memory does not grow with the input, apart from the set of ids used for
de-duplication) and writes, under ``outdir`` (names from :mod:`virnucpro.contracts`):
the chunks, the kept frames as paired nucleotide/protein FASTA files, a manifest with one
row per input record, and the same frames cut into shards of about ``shard_size`` protein
residues (a chunk's frames never straddle two shards). Every file appears under its final
name only when the whole stage succeeded; ``prepare.json`` (settings, input checksums and
counts) is written last and marks a complete directory.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from virnucpro import __version__
from virnucpro.atomic import TEXT_ERRORS, atomic_path, atomic_write_text
from virnucpro.contracts import (
    CHUNKS_FASTA,
    DEFAULT_SHARD_RESIDUES,
    FRAMES_NUCLEOTIDE,
    FRAMES_PROTEIN,
    MANIFEST,
    MANIFEST_COLUMNS,
    PREPARE_INFO,
    SHARD_NUCLEOTIDE_DIR,
    SHARD_PATTERN,
    SHARD_PROTEIN_DIR,
)
from virnucpro.errors import InputError
from virnucpro.frames import Frame, chunk_sequence, kept_frames
from virnucpro.log import get_logger
from virnucpro.pairs import find_mates, read_sample_records
from virnucpro.seqio import Record, check_inputs, file_sha256, is_stream, write_fasta_record

_INFO_FORMAT = 2  # 2: input sizes, mate pairs, the manifest's mate column
_BUFFER = 1 << 20

log = get_logger("prepare")

FrameSelector = Callable[[Record, str, str], list[Frame]]  # (record, chunk id, chunk) -> the frames kept


@dataclass
class PrepareResult:
    """Counts of one ``prepare`` run and the shard stems it wrote, in order."""

    records: int = 0
    chunks: int = 0
    frames: int = 0
    residues: int = 0
    shards: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)  # mate files (R1, R2)


@dataclass(frozen=True)
class ManifestRow:
    """One manifest row: an input record, its unique and original id, and its counts."""

    id: str
    original_id: str
    source: str
    length: int
    chunks: int
    kept_frames: int
    mate: int = 0  # 1 or 2 for the mates of a read pair (rows of mate 1 and 2 are adjacent)


def prepare(
    inputs: Sequence[str | Path],
    outdir: Path,
    chunk_length: int,
    shard_size: int = DEFAULT_SHARD_RESIDUES,
    pairing: str = "auto",
) -> PrepareResult:
    """Chunk, translate and filter every input record; write the prepared directory ``outdir``.

    Mate files (``pairing``, :func:`virnucpro.pairs.find_mates`) are read in step: their rows
    are interleaved, mate 1 then mate 2.
    """
    check_prepare_settings(chunk_length, shard_size)
    check_inputs(inputs)
    check_file_names(inputs)
    mates = find_mates(inputs, pairing)
    pairs = [(str(inputs[one]), str(inputs[two])) for one, two in mates]
    digests: dict[str, str] = {}
    records = read_sample_records(inputs, mates, digests)
    result = write_prepared(records, Path(outdir), chunk_length, shard_size, pairs=pairs)
    write_prepare_info(outdir, inputs, digests, chunk_length, shard_size, result, pairing=pairing)
    return result


def check_prepare_settings(chunk_length: int, shard_size: int) -> None:
    """Refuse a chunk length or shard size below 1 (one-line InputError)."""
    if shard_size < 1:
        raise InputError(f"shard size must be at least 1 residue, got {shard_size}")
    if chunk_length < 1:
        raise InputError(f"chunk length must be at least 1, got {chunk_length}")


def check_file_names(inputs: Sequence[str | Path]) -> None:
    """Refuse file names the manifest (tab-separated, one line per record) cannot hold."""
    for path in map(str, inputs):
        if any(char in path for char in "\t\n\r"):
            raise InputError(f"{path!r}: tabs and line breaks in file names are not supported")


def stop_free_frames(_record: Record, chunk_id: str, chunk: str) -> list[Frame]:
    """What ``predict`` keeps of a chunk: every non-empty, stop-free frame (reference section 2)."""
    return kept_frames(chunk_id, chunk)


def write_prepared(
    records: Iterable[Record],
    outdir: Path,
    chunk_length: int,
    shard_size: int,
    select_frames: FrameSelector = stop_free_frames,
    pairs: Sequence[tuple[str, str]] = (),
) -> PrepareResult:
    """Write the chunks, kept frames, manifest and shards of ``records`` (all files but prepare.json).

    ``select_frames(record, chunk_id, chunk)`` gives the frames kept of one chunk; ``pairs`` are
    the mate files (R1, R2) the records were read from in step.
    """
    outdir = Path(outdir)
    result = PrepareResult(pairs=list(pairs))
    rna_records, rna_first = 0, ""  # records with U: as in the reference, a codon with U is not translated
    with contextlib.ExitStack() as stack:
        # Renamed in reverse order of opening: shards, frames, chunks, then the manifest;
        # prepare.json, written after all of them, marks a complete directory.
        manifest = _open_atomic(stack, outdir / MANIFEST)
        chunks_out = _open_atomic(stack, outdir / CHUNKS_FASTA)
        nucleotide_out = _open_atomic(stack, outdir / FRAMES_NUCLEOTIDE)
        protein_out = _open_atomic(stack, outdir / FRAMES_PROTEIN)
        shards = _ShardWriter(stack, outdir, shard_size)
        _remove_stale_outputs(outdir)
        manifest.write("\t".join(MANIFEST_COLUMNS) + "\n")
        for record in records:
            if "U" in record.seq:
                rna_first = rna_first or record.id
                rna_records += 1
            chunks = chunk_sequence(record.id, record.seq, chunk_length)
            record_frames = 0
            for chunk_id, chunk in chunks:
                write_fasta_record(chunks_out, chunk_id, chunk)
                frames = select_frames(record, chunk_id, chunk)
                if not frames:
                    continue
                shards.write(frames)
                for frame in frames:
                    write_fasta_record(nucleotide_out, frame.id, frame.nucleotide)
                    write_fasta_record(protein_out, frame.id, frame.protein)
                    result.residues += len(frame.protein)
                record_frames += len(frames)
            row = (record.id, record.original_id, record.source, len(record.seq), len(chunks), record_frames, record.mate)
            manifest.write("\t".join(map(str, row)) + "\n")
            result.records += 1
            result.chunks += len(chunks)
            result.frames += record_frames
        shards.close()
        result.shards = shards.stems
    if rna_records:
        log.warning(
            "%d record(s) contain U (RNA letters; first: %s): codons with U are not translated, as in the "
            "reference; write U as T to classify them",
            rna_records,
            rna_first,
        )
    for first, second in result.pairs:
        log.info("mate files: %s and %s", first, second)
    log.info(
        "prepared %d records: %d chunks, %d kept frames (%d residues) in %d shards -> %s",
        result.records,
        result.chunks,
        result.frames,
        result.residues,
        len(result.shards),
        outdir,
    )
    return result


def read_prepare_info(prepared_dir: Path) -> dict:
    """The settings, inputs and counts of a complete prepared directory (its ``prepare.json``)."""
    path = Path(prepared_dir) / PREPARE_INFO
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: missing (not a complete `virnucpro prepare` output directory)") from None
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable: {error}") from None
    if not isinstance(info, dict) or info.get("format") != _INFO_FORMAT:
        raise InputError(f"{path}: unknown format (written by another virnucpro version?)")
    return info


def prepare_is_current(
    prepared_dir: Path,
    inputs: Sequence[str | Path],
    chunk_length: int,
    shard_size: int = DEFAULT_SHARD_RESIDUES,
    pairing: str = "auto",
) -> bool:
    """Whether ``prepared_dir`` holds a complete ``prepare`` of these inputs (same bytes) and settings."""
    prepared_dir = Path(prepared_dir)
    streams = [str(path) for path in inputs if is_stream(path)]
    if streams:  # hashing would use up what prepare has to read
        log.info("resume: %s is a stream (read once), so prepare runs again", streams[0])
        return False
    try:
        info = read_prepare_info(prepared_dir)
        expected = [_input_entry(path, file_sha256(path)) for path in inputs]
    except (InputError, OSError):
        return False
    outputs = [prepared_dir / name for name in (CHUNKS_FASTA, FRAMES_NUCLEOTIDE, FRAMES_PROTEIN, MANIFEST)]
    outputs += [path for stem in info.get("shards", []) for path in shard_paths(prepared_dir, stem)]
    return (
        info.get("virnucpro_version") == __version__
        and info.get("chunk_length") == chunk_length
        and info.get("shard_size") == shard_size
        and info.get("pairing") == pairing
        and info.get("inputs") == expected
        and all(path.is_file() for path in outputs)
    )


def read_manifest(prepared_dir: Path) -> Iterator[ManifestRow]:
    """Stream the manifest rows of a prepared directory, in input order."""
    path = Path(prepared_dir) / MANIFEST
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no manifest (not a complete `virnucpro prepare` output directory)") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error}") from None
    with handle:
        header = tuple(handle.readline().rstrip("\n").split("\t"))
        if header != MANIFEST_COLUMNS:
            raise InputError(f"{path}: unexpected manifest header {header!r}")
        for number, line in enumerate(handle, start=2):
            values = line.rstrip("\n").split("\t")
            try:
                if len(values) != len(MANIFEST_COLUMNS):
                    raise ValueError(f"{len(values)} columns")
                yield ManifestRow(*values[:3], *(int(value) for value in values[3:]))  # type: ignore[arg-type]
            except ValueError as error:
                raise InputError(f"{path}: malformed line {number}: {error}") from None


def list_shards(prepared_dir: Path) -> list[str]:
    """The shard stems of a prepared directory, in order (nucleotide and protein must match)."""
    prepared_dir = Path(prepared_dir)
    stems = [_shard_stems(prepared_dir / sub) for sub in (SHARD_NUCLEOTIDE_DIR, SHARD_PROTEIN_DIR)]
    if stems[0] != stems[1]:
        raise InputError(f"{prepared_dir}: nucleotide and protein shards differ; run `virnucpro prepare` again")
    return stems[0]


def shard_paths(prepared_dir: Path, stem: str) -> tuple[Path, Path]:
    """The (nucleotide, protein) FASTA files of shard ``stem``."""
    name = f"{stem}.fa"
    return Path(prepared_dir) / SHARD_NUCLEOTIDE_DIR / name, Path(prepared_dir) / SHARD_PROTEIN_DIR / name


def _shard_stems(directory: Path) -> list[str]:
    pattern = SHARD_PATTERN.replace("{index:05d}", "*")
    return sorted(path.stem for path in directory.glob(pattern)) if directory.is_dir() else []


def write_prepare_info(
    outdir: Path,
    inputs: Sequence[str | Path],
    digests: dict[str, str],
    chunk_length: int,
    shard_size: int,
    result: PrepareResult,
    extra: dict | None = None,
    pairing: str = "none",
) -> None:
    """Write prepare.json (settings, input digests, counts, shards, and ``extra``): last, it marks completion."""
    info = {
        "format": _INFO_FORMAT,
        "virnucpro_version": __version__,
        "chunk_length": chunk_length,
        "shard_size": shard_size,
        "pairing": pairing,
        "inputs": [_input_entry(path, digests[str(path)]) for path in inputs],
        "pairs": [list(pair) for pair in result.pairs],
        "records": result.records,
        "chunks": result.chunks,
        "frames": result.frames,
        "residues": result.residues,
        "shards": result.shards,
        **(extra or {}),
    }
    atomic_write_text(Path(outdir) / PREPARE_INFO, json.dumps(info, indent=2) + "\n")


def _input_entry(path: str | Path, sha256: str) -> dict[str, object]:
    """An input as prepare.json records it: path as given, sha256 and size of its bytes (None for a stream)."""
    return {"path": str(path), "sha256": sha256, "size": None if is_stream(path) else Path(path).stat().st_size}


def _remove_stale_outputs(outdir: Path) -> None:
    """Remove the completion marker, manifest and shards of an earlier run, so none mixes with this one."""
    (outdir / PREPARE_INFO).unlink(missing_ok=True)
    (outdir / MANIFEST).unlink(missing_ok=True)
    for sub in (SHARD_NUCLEOTIDE_DIR, SHARD_PROTEIN_DIR):
        for stem in _shard_stems(outdir / sub):
            (outdir / sub / f"{stem}.fa").unlink(missing_ok=True)


def _open_atomic(stack: contextlib.ExitStack, path: Path) -> IO[str]:
    """A text handle on a temporary file that replaces ``path`` when ``stack`` closes without error."""
    tmp = stack.enter_context(atomic_path(path))
    return stack.enter_context(open(tmp, "w", encoding="utf-8", errors=TEXT_ERRORS, buffering=_BUFFER))


class _ShardWriter:
    """Writes frames to paired shard files, starting a new pair once ``shard_size`` residues are reached."""

    def __init__(self, stack: contextlib.ExitStack, outdir: Path, shard_size: int) -> None:
        self._stack = stack
        self._outdir = outdir
        self._shard_size = shard_size
        self._handles: tuple[IO[str], IO[str]] | None = None
        self._residues = 0
        self.stems: list[str] = []

    def write(self, frames: list[Frame]) -> None:
        """Write one chunk's frames (never split across shards)."""
        if self._handles is None or self._residues >= self._shard_size:
            self._start()
        assert self._handles is not None
        nucleotide, protein = self._handles
        for frame in frames:
            write_fasta_record(nucleotide, frame.id, frame.nucleotide)
            write_fasta_record(protein, frame.id, frame.protein)
            self._residues += len(frame.protein)

    def close(self) -> None:
        """Close the current shard's files (they are renamed when the stack closes)."""
        if self._handles is not None:
            for handle in self._handles:
                handle.close()
            self._handles = None

    def _start(self) -> None:
        self.close()
        name = SHARD_PATTERN.format(index=len(self.stems))
        self._handles = (
            _open_atomic(self._stack, self._outdir / SHARD_NUCLEOTIDE_DIR / name),
            _open_atomic(self._stack, self._outdir / SHARD_PROTEIN_DIR / name),
        )
        self.stems.append(Path(name).stem)
        self._residues = 0

