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
from virnucpro.atomic import as_written, atomic_path
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
    mates: list[tuple[str, str]] = field(default_factory=list)  # mate files (prepared paths)


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
    info = read_prepare_info(prepared)
    recorded = info["inputs"]
    plan.mates = [(first, second) for first, second in info.get("pairs", [])]
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
    """Write the chosen records of every planned input into ``outdir/viral/`` (an earlier run's files go).

    One pass over the table: an input's rows are in one run (the two files of a read pair
    interleaved), so at most one input, or one pair of mate files, is open at a time.
    """
    directory = Path(outdir) / c.EXTRACT_DIR
    shutil.rmtree(directory, ignore_errors=True)
    result = ExtractionResult(plan.calls, skipped=dict(plan.skipped))
    sources = {as_written(source.prepared): source for source in plan.sources}  # the table's `source`
    group_of = {name: (name,) for name in sources}
    for first, second in ((as_written(one), as_written(two)) for one, two in plan.mates):
        if first in sources and second in sources:
            group_of[first] = group_of[second] = (first, second)
    used: set[str] = set()
    done: set[str] = set()
    active: dict[str, _Extractor] = {}
    with contextlib.ExitStack() as stack:
        for original_id, length, name, pair_call in read_columns(predictions, _COLUMNS):
            if name not in sources:
                continue  # skipped (or not an input of this plan)
            if name not in active:
                if name in done:
                    raise InputError(f"{predictions}: the rows of {name} are not together (not a table classify wrote)")
                result.files += _finish(active, done)
                active = {member: _Extractor(sources[member], plan.calls, directory, used) for member in group_of[name]}
                for extractor in active.values():
                    stack.enter_context(extractor)
            active[name].feed(original_id, length, pair_call)
        result.files += _finish(active, done)
        for name, source in sources.items():  # inputs without a row (no records): empty outputs, checked too
            if name not in done:
                with _Extractor(source, plan.calls, directory, used) as extractor:
                    extractor.check()
                    result.files += extractor.commit()
    for entry in result.files:
        log.info("extracted %d records -> %s", entry["records"], entry["path"])
    return result


_COLUMNS = ("original_id", "length", "source", "pair_call")


def _finish(active: dict[str, "_Extractor"], done: set[str]) -> list[dict[str, object]]:
    """Check every input of the group (both mate files) before any of its outputs gets its name."""
    for extractor in active.values():
        extractor.check()
    done.update(active)
    return [entry for extractor in active.values() for entry in extractor.commit()]


def _unique_stem(stem: str, suffix: str, used: set[str]) -> str:
    """``stem``, or ``stem_2``, ``stem_3``... when two inputs of one format have the same stem."""
    unique, number = stem, 1
    while f"{unique}.{suffix}" in used:
        number += 1
        unique = f"{stem}_{number}"
    used.add(f"{unique}.{suffix}")
    return unique


class _Extractor:
    """One input file read in step with its rows; its selected records go into one gzip file per call.

    A context manager: the output files get their final names only through :meth:`commit`,
    after :meth:`check`; leaving the block on an error removes them.
    """

    def __init__(self, source: SourceFile, calls: tuple[str, ...], directory: Path, used: set[str]) -> None:
        self.source, self.calls = source, calls
        self._stack = contextlib.ExitStack()
        binary, self._digest = self._stack.enter_context(open_content(source.path))
        fmt = content_format(binary.peek(1 << 16)[: 1 << 16]) or _format_by_name(source.prepared)  # an empty file
        stem = _unique_stem(output_stem(source.prepared), SUFFIXES[fmt], used)
        self.names = {call: directory / f"{stem}.{label_of(call)}.{SUFFIXES[fmt]}" for call in calls}
        self._outputs = {call: _open_gzip(self._stack, path) for call, path in self.names.items()}
        self.counts = dict.fromkeys(calls, 0)
        self._records = raw_records(binary, fmt)
        self._number = 0

    def __enter__(self) -> "_Extractor":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.__exit__(*exc_info)

    def feed(self, original_id: str, length: str, pair_call: str) -> None:
        """The next row of this input: check the next record against it; write it if its call is chosen."""
        self._number += 1
        record = next(self._records, None)
        if record is None or record.id != original_id or record.length != int(length):
            found = "the end of the file" if record is None else f"{record.id} ({record.length} bp)"
            raise InputError(
                f"{self.source.path}: record {self._number} is {found}, prepared as {original_id} ({length} bp): "
                f"not the file prepared as {self.source.prepared}"
            )
        if pair_call in self._outputs:
            self._outputs[pair_call].write(record.data)
            self.counts[pair_call] += 1

    def check(self) -> None:
        """Check that the input has no more records and is the prepared file (its sha256)."""
        source = self.source
        extra = next(self._records, None)
        if extra is not None:
            raise InputError(f"{source.path}: has more records than were prepared from it (first extra: {extra.id})")
        if self._digest() != source.sha256:
            raise InputError(f"{source.path}: not the file prepared as {source.prepared} (its sha256 differs)")

    def commit(self) -> list[dict[str, object]]:
        """Give the outputs their names; what was written per call."""
        source = self.source
        self._stack.close()
        return [
            {"input": source.prepared, "call": call, "path": str(self.names[call]), "records": self.counts[call]}
            for call in self.calls
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
    return words[0].decode("utf-8", errors="backslashreplace") if words else ""  # as seqio writes such ids


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
