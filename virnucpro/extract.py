"""Sequences out: the input records of chosen calls, byte for byte, in their input's own format.

For each input file of a sample and each chosen call (``--extract virus`` by default) one
gzip file ``viral/<input stem>.<label>.fa.gz`` (FASTA in) or ``.fq.gz`` (FASTQ in): the records
whose ``pair_call`` in ``sequence_predictions.tsv`` is that call, in input order, exactly as they
are in the input (header line, sequence lines, quality lines; blank lines between records and a
byte-order mark are not part of a record; a last line without a line break gets one). Selecting
by the pair call keeps the two mate files in step; an unpaired record's pair call is its own.

Streaming: one record of the input and one row of the table at a time, whatever the number of
reads. Every record is checked against its row (id and length) and every input against what
``prepare`` recorded (size first, sha256 at the end): a file that changed since is a one-line
error and leaves no output.
"""

from __future__ import annotations

import contextlib
import gzip
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from virnucpro import contracts as c
from virnucpro.atomic import atomic_path
from virnucpro.engine.plan import output_stem
from virnucpro.errors import InputError
from virnucpro.log import get_logger
from virnucpro.prepare import read_prepare_info
from virnucpro.seqio import COMPRESSION_SUFFIXES, content_format, is_stream, open_content
from virnucpro.tables import read_columns

log = get_logger("extract")

EXTRACTABLE = (c.CALL_VIRUS, c.CALL_OTHERS, c.CALL_NO_FRAME, c.CALL_FAILED)
DEFAULT_EXTRACT = (c.CALL_VIRUS,)
LABELS = {c.CALL_VIRUS: "viral"}  # the file label of a call: viral, others, no_coding_frame, failed
SUFFIXES = {"fasta": "fa.gz", "fastq": "fq.gz"}
_GZIP_LEVEL = 1  # fast: --extract virus,others writes every read of a sample
_BLOCK = 1 << 20


def parse_extract(value: str) -> tuple[str, ...]:
    """``--extract``: ``none`` or a comma-separated list of calls (``virus``, ``virus,others``...)."""
    words = [word.strip() for word in value.split(",")]
    if words == ["none"]:
        return ()
    choices = f"give calls from {', '.join(EXTRACTABLE)} (comma-separated), or none"
    if "none" in words:
        raise InputError(f"--extract {value!r}: none cannot be combined with calls")
    if "" in words:
        raise InputError(f"--extract {value!r}: an empty entry; {choices}")
    unknown = [word for word in words if word not in EXTRACTABLE]
    if unknown:
        raise InputError(f"--extract {value!r}: {unknown[0]!r} is not a call; {choices}")
    return tuple(dict.fromkeys(words))


def label_of(call: str) -> str:
    """The file label of a call: ``viral`` for virus, the call itself otherwise."""
    return LABELS.get(call, call)


@dataclass(frozen=True)
class SourceFile:
    """An input file of the prepared sample: its name in the tables and where to read it now."""

    prepared: str  # the path prepare was given (the ``source`` column)
    path: str  # the file read for extraction (the same, or classify's --input)
    sha256: str
    size: int | None


@dataclass
class ExtractionPlan:
    """What to extract (calls) from which inputs, and the inputs left out with the reason."""

    calls: tuple[str, ...]
    sources: list[SourceFile] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # prepared path -> why not extracted


@dataclass
class ExtractionResult:
    """Files written (output path -> records) per input, and the inputs skipped."""

    calls: tuple[str, ...]
    files: list[dict[str, object]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """The ``extract`` entry of summary.json."""
        return {"calls": list(self.calls), "files": self.files, "skipped": self.skipped}


def plan_extraction(prepared: Path, calls: Sequence[str], inputs: Sequence[str] | None = None) -> ExtractionPlan:
    """Check, before classifying, that the inputs can be extracted from.

    ``inputs`` (classify's ``--input``) are the prepared inputs, in the same order, wherever they
    are now; a file of another size than the prepared one is an error. Without ``inputs``, the
    paths prepare recorded are used; one that is gone or was a stream (read once) is skipped
    with a warning.
    """
    plan = ExtractionPlan(tuple(calls))
    if not calls:
        return plan
    recorded = read_prepare_info(prepared)["inputs"]
    if inputs is not None and len(inputs) != len(recorded):
        names = ", ".join(entry["path"] for entry in recorded)
        raise InputError(
            f"--input: {len(inputs)} file(s) given, the prepared sample has {len(recorded)} ({names}), in that order"
        )
    for number, entry in enumerate(recorded):
        path = str(inputs[number]) if inputs is not None else entry["path"]
        source = SourceFile(entry["path"], path, entry["sha256"], entry.get("size"))
        why = _not_readable(source, explicit=inputs is not None)
        if why:
            plan.skipped[source.prepared] = why
            log.warning("%s: no sequences extracted: %s", source.prepared, why)
        else:
            plan.sources.append(source)
    return plan


def _not_readable(source: SourceFile, explicit: bool) -> str:
    """Why ``source`` cannot be extracted from ('' when it can); an explicit file that is not the
    prepared one is an error."""
    path = Path(source.path)
    if source.size is None or is_stream(source.path):
        return "it was read from a stream, which cannot be read twice"
    if not path.is_file():
        if explicit:
            raise InputError(f"{source.path}: no such file (--input)")
        return f"{source.path} is not here (give the input files with --input)"
    size = path.stat().st_size
    if size != source.size:
        raise InputError(
            f"{source.path}: not the file prepared as {source.prepared}: {size} bytes, prepared {source.size} bytes"
        )
    return ""


def extract_sequences(plan: ExtractionPlan, predictions: Path, outdir: Path) -> ExtractionResult:
    """Write the chosen records of every planned input into ``outdir/viral/`` (an earlier run's files go)."""
    shutil.rmtree(Path(outdir) / c.EXTRACT_DIR, ignore_errors=True)
    result = ExtractionResult(plan.calls, skipped=dict(plan.skipped))
    used: set[str] = set()
    for source in plan.sources:
        result.files += _extract_file(source, used, plan.calls, predictions, Path(outdir) / c.EXTRACT_DIR)
    for entry in result.files:
        log.info("extracted %d records -> %s", entry["records"], entry["path"])
    return result


def _unique_stem(stem: str, suffix: str, used: set[str]) -> str:
    """``stem``, or ``stem_2``, ``stem_3``... when two inputs of one format have the same stem."""
    unique, number = stem, 1
    while f"{unique}.{suffix}" in used:
        number += 1
        unique = f"{stem}_{number}"
    used.add(f"{unique}.{suffix}")
    return unique


def _extract_file(
    source: SourceFile, used: set[str], calls: tuple[str, ...], predictions: Path, directory: Path
) -> list[dict[str, object]]:
    """One input file: its selected records into one gzip file per call (``used``: stems taken)."""
    rows = (
        row
        for row in read_columns(predictions, ("original_id", "length", "source", "pair_call"))
        if row[2] == source.prepared
    )
    with contextlib.ExitStack() as stack, open_content(source.path) as (binary, finish):
        fmt = content_format(binary.peek(1 << 16)[: 1 << 16]) or _format_by_name(source.prepared)  # an empty file
        stem = _unique_stem(output_stem(source.prepared), SUFFIXES[fmt], used)
        names = {call: directory / f"{stem}.{label_of(call)}.{SUFFIXES[fmt]}" for call in calls}
        outputs = {call: _open_gzip(stack, path) for call, path in names.items()}
        counts = dict.fromkeys(calls, 0)
        records = raw_records(binary, fmt)
        for number, (original_id, length, _, pair_call) in enumerate(rows, 1):
            record = next(records, None)
            if record is None or record.id != original_id or record.length != int(length):
                found = "the end of the file" if record is None else f"{record.id} ({record.length} bp)"
                raise InputError(
                    f"{source.path}: record {number} is {found}, prepared as {original_id} ({length} bp): "
                    f"not the file prepared as {source.prepared}"
                )
            if pair_call in outputs:
                outputs[pair_call].write(record.data)
                counts[pair_call] += 1
        extra = next(records, None)
        if extra is not None:
            raise InputError(f"{source.path}: has more records than were prepared from it (first extra: {extra.id})")
        if finish() != source.sha256:
            raise InputError(f"{source.path}: not the file prepared as {source.prepared} (its sha256 differs)")
    return [
        {"input": source.prepared, "call": call, "path": str(names[call]), "records": counts[call]} for call in calls
    ]


def _format_by_name(path: str) -> str:
    """``fastq`` for a name ending .fq or .fastq (before a compression suffix), else ``fasta``."""
    name = Path(path).name.lower()
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    return "fastq" if name.endswith((".fq", ".fastq")) else "fasta"


def _open_gzip(stack: contextlib.ExitStack, path: Path) -> IO[bytes]:
    """A gzip writer on a temporary file that replaces ``path`` when ``stack`` closes without error
    (no name or time in the gzip header: the same records give the same bytes)."""
    tmp = stack.enter_context(atomic_path(path))
    raw = stack.enter_context(open(tmp, "wb"))
    return stack.enter_context(gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=_GZIP_LEVEL, mtime=0))


@dataclass(frozen=True)
class RawRecord:
    """A record as stored in its file: its id (the header's first word), length (bases) and bytes."""

    id: str
    length: int
    data: bytes


def raw_records(binary: IO[bytes], fmt: str) -> Iterator[RawRecord]:
    """The records of a decompressed FASTA or FASTQ stream, as bytes, with the boundaries
    :mod:`virnucpro.seqio` reads (Biopython's FASTA parser; our FASTQ parser)."""
    lines = _lines(binary)
    return _fastq_records(lines) if fmt == "fastq" else _fasta_records(lines)


def _lines(binary: IO[bytes]) -> Iterator[bytes]:
    """Lines with their line breaks; a byte-order mark is dropped, a last line gets its break."""
    first = True
    for line in binary:
        if first:
            line, first = line.removeprefix(b"\xef\xbb\xbf"), False
        yield line if line.endswith(b"\n") else line + b"\n"


def _header_id(line: bytes) -> str:
    words = line[1:].split(None, 1)
    return words[0].decode("utf-8", errors="replace") if words else ""


def _bases(lines: Sequence[bytes]) -> int:
    return sum(len(b"".join(line.split())) for line in lines)


def _record(header: bytes, body: list[bytes], sequence: Sequence[bytes]) -> RawRecord:
    while body and not body[-1].strip():  # blank lines between records belong to none
        body.pop()
    return RawRecord(_header_id(header), _bases(sequence), header + b"".join(body))


def _fasta_records(lines: Iterator[bytes]) -> Iterator[RawRecord]:
    header: bytes | None = None
    body: list[bytes] = []
    for line in lines:
        if line.startswith(b">"):
            if header is not None:
                yield _record(header, body, body)
            header, body = line, []
        elif header is not None:  # text before the first header is skipped, as by the parser
            body.append(line)
    if header is not None:
        yield _record(header, body, body)


def _fastq_records(lines: Iterator[bytes]) -> Iterator[RawRecord]:
    """Header, sequence lines up to the '+' line, then quality lines until they cover the sequence."""
    for header in lines:
        if not header.strip():
            continue
        sequence: list[bytes] = []
        plus = b""
        for line in lines:
            if line.startswith(b"+"):
                plus = line
                break
            sequence.append(line)
        wanted = sum(len(line.rstrip()) for line in sequence)
        quality: list[bytes] = []
        covered = 0
        while covered < wanted:
            line = next(lines, b"")
            if not line:
                break
            quality.append(line)
            covered += len(line.rstrip())
        yield _record(header, [*sequence, plus, *quality], sequence)
