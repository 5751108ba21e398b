"""Reading input sequences: FASTA and FASTQ, plain or compressed (gzip, bzip2, xz), recognised by content.

FASTA records are parsed by Biopython's ``SimpleFastaParser``, FASTQ by a lenient parser of
our own (see :func:`_parse_fastq`); this module adds what a pipeline needs around them:
content sniffing, decompression, hashing while reading, validation and one-line errors.

``read_records`` streams records from several files in order, validates that they are
nucleotide sequences, uppercases them and gives every record a unique id (duplicates get
``<id>_dup2``, ``<id>_dup3``, ...; the original id is kept beside it). Every problem is an
:class:`~virnucpro.errors.InputError` with a one-line message naming the file (and the
record). ``read_fasta`` and ``write_fasta_record`` are the fast plain reader/writer for the
pipeline's own intermediate FASTA files.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import gzip
import hashlib
import io
import itertools
import lzma
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from Bio.SeqIO.FastaIO import SimpleFastaParser

from virnucpro.errors import InputError, describe
from virnucpro.log import get_logger

log = get_logger("input")

# IUPAC nucleotide codes plus gap characters; anything else (E, F, L, P, Q, *, ...) is not DNA.
NUCLEOTIDE_LETTERS = "ACGTUNRYKMSWBDHV-."
_NOT_NUCLEOTIDE = re.compile(f"[^{re.escape(NUCLEOTIDE_LETTERS)}]")
_WHITESPACE = re.compile(r"\s+")

# Compressions recognised by their magic bytes, whatever the file is called.
_COMPRESSION_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd", b"PK\x03\x04": "zip"}
# Readers of the standard library; multi-stream files (bgzip, pbzip2, concatenated parts) are read to the end.
_DECOMPRESSORS: dict[str, Callable[[IO[bytes]], IO[bytes]]] = {
    "gzip": lambda handle: gzip.GzipFile(fileobj=handle, mode="rb"),
    "bzip2": lambda handle: bz2.BZ2File(handle, mode="rb"),
    "xz": lambda handle: lzma.LZMAFile(handle, mode="rb"),
}
SUPPORTED_COMPRESSION = "plain, gzip, bzip2 or xz"
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz")  # stripped from file names to name outputs
_READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)  # what a damaged or truncated file raises
_SNIFF_BYTES = 1 << 16
_READ_BUFFER = 1 << 20


@dataclass(frozen=True)
class Record:
    """One input sequence.

    ``id`` is unique within one ``read_records`` call; ``original_id`` is the header's first
    word; ``seq`` is uppercase without whitespace; ``index`` counts records over the call;
    ``mate`` is 1 or 2 for the mates of a read pair (:mod:`virnucpro.pairs`), 0 otherwise.
    """

    id: str
    original_id: str
    seq: str
    source: str
    index: int
    mate: int = 0


def read_records(paths: Sequence[str | Path], digests: dict[str, str] | None = None) -> Iterator[Record]:
    """Stream the records of several FASTA/FASTQ files (plain or compressed) in order.

    When ``digests`` is given, the sha256 of each file's bytes (as stored, computed while
    reading) is put there under ``str(path)`` once the file has been read to its end.
    """
    ids = UniqueIds()
    index = 0
    for path in paths:
        for original_id, seq in read_file(str(path), digests):
            yield Record(ids.assign(original_id), original_id, seq, str(path), index)
            index += 1


def check_inputs(paths: Sequence[str | Path]) -> None:
    """Fail early, before any output is touched, when an input is missing, not a file, or given twice."""
    if not paths:
        raise InputError("no input files given")
    seen: dict[tuple[int, int], str] = {}
    for path in paths:
        _check_file(str(path))
        stat = os.stat(path)
        identity = (stat.st_dev, stat.st_ino)  # the same file by any name: symlinks, hard links, ./
        if identity in seen:
            raise InputError(f"{path}: given twice (also as {seen[identity]}): its records would be counted twice")
        seen[identity] = str(path)


def is_stream(path: str | Path) -> bool:
    """Whether ``path`` is a pipe, socket or character device (piped standard input, ``<(...)``): it reads once."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def file_sha256(path: str | Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_READ_BUFFER):
            digest.update(block)
    return digest.hexdigest()


def read_fasta(path: str | Path) -> Iterator[tuple[str, str]]:
    """Stream ``(id, sequence)`` from a FASTA file the pipeline wrote (no validation)."""
    with open(path, encoding="utf-8") as handle:
        for title, seq in _parse_fasta(handle):
            yield title.split(None, 1)[0] if title else "", seq


def write_fasta_record(handle: IO[str], id: str, seq: str) -> None:
    """Write one FASTA record, the sequence on a single line."""
    handle.write(f">{id}\n{seq}\n")


class UniqueIds:
    """Deterministic unique ids: the first occurrence keeps its id, later ones get ``_dupN``."""

    def __init__(self) -> None:
        self._used: set[str] = set()
        self._next: dict[str, int] = {}

    def assign(self, original: str) -> str:
        if original not in self._used:
            self._used.add(original)
            return original
        k = self._next.get(original, 2)
        while f"{original}_dup{k}" in self._used:
            k += 1
        self._next[original] = k + 1
        unique = f"{original}_dup{k}"
        self._used.add(unique)
        return unique


@contextlib.contextmanager
def open_decompressed(source: str, digests: dict[str, str] | None = None) -> Iterator[io.BufferedReader]:
    """A buffered binary reader of a file's content, decompressed where its magic bytes say so.

    When ``digests`` is given and the block ends without error, the sha256 of the file's bytes
    (as stored; what was left unread is read for it) is put there under ``source``.
    """
    with open_content(source) as (binary, finish):
        yield binary
        if digests is not None:
            digests[source] = finish()


def read_file(source: str, digests: dict[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """Yield ``(original_id, seq)`` of one file, validated; errors name ``source``."""
    with open_decompressed(source, digests) as binary:
        sniff = _sniff(source, binary)
        if _is_blank(sniff):  # a sample without reads (a blank control, say): no rows, not an error
            log.warning("%s: no sequences (an empty file)", source)
            while binary.read(_READ_BUFFER):  # to the end, for the digest
                pass
        else:
            # Bytes that are not UTF-8 become lone surrogates: distinct bytes stay distinct (see _validated).
            text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline=None)
            fmt = content_format(sniff)
            if fmt == "fasta":
                parsed: Iterator[tuple[str, str]] = _parse_fasta(text)
            elif fmt == "fastq":
                parsed = _parse_fastq(text, source)
            else:
                raise InputError(f"{source}: not FASTA or FASTQ: the first line does not start with '>' or '@'")
            yield from _validated(source, parsed)


@contextlib.contextmanager
def open_content(source: str) -> Iterator[tuple[io.BufferedReader, Callable[[], str]]]:
    """The content of a sequence file (decompressed by its magic bytes) and a function that reads
    the rest of the file and returns the sha256 of its bytes as stored; errors name ``source``."""

    def finish() -> str:
        try:
            return raw.finish()
        except OSError as error:
            raise InputError(f"{source}: cannot read: {describe(error)}") from None

    with contextlib.ExitStack() as stack:
        raw = _open_raw(source, stack)
        yield _decompressed(source, raw, stack), finish


def content_format(head: bytes) -> str | None:
    """``"fasta"`` or ``"fastq"`` from the first bytes of a file's content; None for anything else."""
    first = head.removeprefix(codecs.BOM_UTF8).lstrip()[:1]
    return {b">": "fasta", b"@": "fastq"}.get(first)


def _validated(source: str, raw: Iterator[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """Check ids and letters; hold back leading empty records until a non-empty one shows up."""
    pending: list[tuple[str, str]] = []
    seen_sequence = False
    number = 0
    escaped: list[tuple[int, str]] = []  # (record number, id) of ids whose bytes were escaped
    try:
        for title, seq in raw:
            number += 1
            parts = title.split(None, 1)
            if not parts:
                raise InputError(f"{source}: record {number} has an empty header (no id)")
            record_id = _checked_id(source, number, parts[0])
            if record_id != parts[0]:
                escaped.append((number, record_id))
            if " " in seq or "\t" in seq:
                seq = _WHITESPACE.sub("", seq)
            seq = seq.upper()
            if _NOT_NUCLEOTIDE.search(seq):
                raise InputError(f"{source}: record {number} ({record_id}): {_describe_bad_letters(seq)}")
            if seen_sequence:
                yield record_id, seq
            elif seq:
                seen_sequence = True
                yield from pending
                pending.clear()
                yield record_id, seq
            else:
                pending.append((record_id, seq))
    except _READ_ERRORS as error:
        raise InputError(f"{source}: cannot read after record {number}: {describe(error)}") from error
    if escaped:
        log.warning(
            "%s: %d id(s) with bytes that are not UTF-8 are written with the bytes escaped (first: record %d, %s)",
            source, len(escaped), *escaped[0],
        )  # fmt: skip
    if number == 0:
        raise InputError(f"{source}: no sequence records found")
    if not seen_sequence:  # a sample whose reads were all trimmed away: each record gets its row
        log.warning("%s: all %d records are empty (no sequence letters)", source, number)
        yield from pending


def nucleotide_problem(seq: str) -> str:
    """Why an (uppercase) sequence is not a nucleotide sequence, as one line; "" when it is one."""
    return _describe_bad_letters(seq) if _NOT_NUCLEOTIDE.search(seq) else ""


_HEADER_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f]")
_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # what the reader makes of bytes that are not UTF-8


def _checked_id(source: str, number: int, record_id: str) -> str:
    """The same rule for every header of a file, wherever it is: control characters (a NUL byte,
    binary content) are refused; bytes that are not UTF-8 are escaped (``caf\\xe9``), so that
    distinct ids stay distinct."""
    control = _HEADER_CONTROL.search(record_id)
    if control:
        raise InputError(f"{source}: record {number}: control character {control.group()!r} in the header (binary content?)")
    if _NOT_UTF8.search(record_id):
        return record_id.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return record_id


def _describe_bad_letters(seq: str) -> str:
    if _NOT_UTF8.search(seq):
        return "not a nucleotide sequence: bytes that are not text (not UTF-8)"
    bad = sorted(set(_NOT_NUCLEOTIDE.findall(seq)))
    shown = ", ".join(repr(c) if not c.isprintable() or c.isspace() else c for c in bad[:12])
    more = f" and {len(bad) - 12} more" if len(bad) > 12 else ""
    hint = " (a protein sequence?)" if any(c.isalpha() for c in bad) else ""
    return f"not a nucleotide sequence: unexpected letters {shown}{more}{hint}"


class _HashingReader(io.RawIOBase):
    """A raw binary reader that hashes every byte it hands out."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = self._handle.readinto(buffer)  # type: ignore[attr-defined]
        if count:
            self._digest.update(memoryview(buffer)[:count])
        return count

    def finish(self) -> str:
        """Read what is left unread and return the sha256 of the whole file."""
        while block := self._handle.read(_READ_BUFFER):
            self._digest.update(block)
        return self._digest.hexdigest()


def _open_raw(source: str, stack: contextlib.ExitStack) -> _HashingReader:
    """Open ``source`` unbuffered behind a hashing reader (closed by ``stack``)."""
    _check_file(source)
    try:
        return _HashingReader(stack.enter_context(open(source, "rb", buffering=0)))
    except FileNotFoundError:
        raise InputError(f"{source}: no such file") from None
    except OSError as error:
        raise InputError(f"{source}: cannot read: {describe(error)}") from None


def _check_file(source: str) -> None:
    path = Path(source)
    if path.is_dir():
        raise InputError(f"{source}: is a directory, not a sequence file")
    if not path.exists():
        raise InputError(f"{source}: no such file")


def compression_of(path: str | Path) -> str | None:
    """The compression named by a file's magic bytes (``"gzip"``, ``"zstd"``...), None for plain files."""
    with open(path, "rb") as handle:
        return _compression_named_by(handle.read(8))


def _compression_named_by(magic: bytes) -> str | None:
    return next((name for prefix, name in _COMPRESSION_MAGIC.items() if magic.startswith(prefix)), None)


def _decompressed(source: str, raw: _HashingReader, stack: contextlib.ExitStack) -> io.BufferedReader:
    """A buffered reader of the content, decompressed where its magic bytes name a supported compression."""
    handle = io.BufferedReader(raw, buffer_size=_READ_BUFFER)
    try:
        magic = handle.peek(8)[:8]
    except OSError as error:
        raise InputError(f"{source}: cannot read: {describe(error)}") from None
    compression = _compression_named_by(magic)
    if compression is None:
        return handle
    if compression not in _DECOMPRESSORS:
        raise InputError(f"{source}: {compression}-compressed files are not supported (use {SUPPORTED_COMPRESSION})")
    content = stack.enter_context(_DECOMPRESSORS[compression](handle))
    return io.BufferedReader(content, buffer_size=_READ_BUFFER)  # type: ignore[arg-type]


def _sniff(source: str, binary: io.BufferedReader) -> bytes:
    """The first bytes of the (decompressed) content; refuses binary files."""
    try:
        head = binary.peek(_SNIFF_BYTES)[:_SNIFF_BYTES]
    except _READ_ERRORS as error:
        raise InputError(f"{source}: cannot read: {describe(error)}") from None
    if _looks_binary(head):  # a blank head is not: a file without sequences is read as such
        raise InputError(f"{source}: binary content, not a FASTA/FASTQ text file")
    return head


def _is_blank(head: bytes) -> bool:
    return not head.removeprefix(codecs.BOM_UTF8).strip()


_CONTROL_BYTES = bytes(b for b in range(32) if chr(b) not in "\t\n\r\f\v") + b"\x7f"


def _looks_binary(data: bytes) -> bool:
    """NUL bytes or more than 1% other control bytes. Bytes that are not UTF-8 (a Latin-1 header,
    say) are text: they are read as U+FFFD, which a sequence refuses with the record named."""
    return b"\x00" in data or len(data) - len(data.translate(None, _CONTROL_BYTES)) > len(data) // 100


def _parse_fasta(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """``(title, sequence)`` pairs (Biopython's parser); lines before the first header are skipped."""
    return SimpleFastaParser(lines)


def _header_like(line: str) -> bool:
    return line.startswith("@") or not line.strip()


def _read_quality(it: Iterator[str], bases: int, sequence_lines: int) -> tuple[int, str, Iterator[str]]:
    """Read a record's quality lines: (quality values read, the line after them, the iterator).

    Quality lines are read until they cover the sequence. A line that looks like the next header
    ('@' or blank) is quality while there are fewer quality lines than sequence lines; after
    that only when it completes the quality exactly and a header (or the end) follows. So a
    quality line that is too short never swallows the next record, and quality wrapped onto
    more lines than its sequence, with a line starting with '@', is still read.
    """
    quality_length, quality_lines = 0, 0
    line = next(it, "")
    while line:
        if _header_like(line):
            if quality_length >= bases:
                break
            if quality_lines >= max(1, sequence_lines):
                following = next(it, "")
                if quality_length + len(line.rstrip()) == bases and (not following or _header_like(following)):
                    return bases, following, it
                return quality_length, line, itertools.chain([following], it)
        quality_length += len(line.rstrip())
        quality_lines += 1
        line = next(it, "")
    return quality_length, line, it


def _parse_fastq(lines: Iterable[str], source: str) -> Iterator[tuple[str, str]]:
    """``(title, sequence)`` pairs of a FASTQ file (wrapped records allowed); strict about structure.

    Our own rather than Biopython's ``FastqGeneralIterator``, which refuses a ``+`` line that
    repeats only part of the header and blank lines before the first record (both in real files).
    """
    it = iter(lines)
    number = 0
    line = next(it, "")
    while True:
        while line and not line.strip():  # blank lines between records
            line = next(it, "")
        if not line:
            return
        number += 1
        if not line.startswith("@"):
            raise InputError(f"{source}: malformed FASTQ: record {number} does not start with '@'")
        title = line[1:].rstrip()
        seq_parts: list[str] = []
        for line in it:
            if line.startswith("+"):
                break
            seq_parts.append(line.rstrip())
        else:
            raise InputError(f"{source}: truncated FASTQ: record {number} ({title.split(' ')[0]}) has no '+' line")
        seq = "".join(seq_parts)
        quality_length, line, it = _read_quality(it, len(seq), len(seq_parts))
        if quality_length != len(seq):
            raise InputError(
                f"{source}: truncated or malformed FASTQ: record {number} ({title.split(' ')[0]}) has "
                f"{len(seq)} bases but {quality_length} quality values"
            )
        yield title, seq
