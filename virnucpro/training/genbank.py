"""GenBank input for training: records with the proteins of their CDS features, and the
reference's training frames (reference doc section 8).

A chunk containing any ambiguous base (``N R Y M K S W H B V D``) is skipped; of its stop-free
frames only those are kept whose protein occurs inside the ``/translation`` of a CDS feature of
the same record.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from virnucpro.errors import InputError, describe
from virnucpro.frames import Frame, kept_frames
from virnucpro.seqio import nucleotide_problem, open_decompressed

AMBIGUOUS_BASES = frozenset("NRYMKSWHBVD")
_PROTEIN_SEPARATOR = "\n"  # never in a protein: a frame found in the joined string lies inside one protein
_HEAD_BYTES = 1 << 12


@dataclass(frozen=True)
class GenbankRecord:
    """One GenBank record: its id (``ACCESSION.VERSION``), uppercase sequence and CDS proteins."""

    id: str
    seq: str
    proteins: tuple[str, ...]

    def joined_proteins(self) -> str:
        """The proteins in one string, for substring searches (:func:`cds_frames`)."""
        return _PROTEIN_SEPARATOR.join(self.proteins)


def is_genbank(path: str) -> bool:
    """Whether a file (plain or compressed) starts like GenBank: its first line is a ``LOCUS`` line."""
    with open_decompressed(path) as handle:
        head = handle.peek(_HEAD_BYTES)[:_HEAD_BYTES]
    return head.lstrip().startswith(b"LOCUS")


def read_genbank(path: str, digests: dict[str, str] | None = None) -> Iterator[GenbankRecord]:
    """Stream the records of a GenBank file (Biopython's parser); errors name the file and record."""
    from Bio import BiopythonParserWarning, SeqIO

    number, record_id = 0, ""
    with open_decompressed(path, digests) as binary, warnings.catch_warnings():
        warnings.simplefilter("ignore", BiopythonParserWarning)  # what it warns about fails below, in one line
        text = io.TextIOWrapper(binary, encoding="utf-8", errors="replace")
        records = SeqIO.parse(text, "genbank")
        while True:
            try:
                record = next(records, None)
            except Exception as error:  # noqa: BLE001  (Biopython raises many kinds for malformed files)
                after = f" after record {number} ({record_id})" if number else ""
                raise InputError(f"{path}: not a readable GenBank file{after}: {describe(error)}") from None
            if record is None:
                break
            number, record_id = number + 1, record.id
            yield _checked(path, number, record)
        if number == 0:
            raise InputError(f"{path}: no GenBank records found")


def _checked(path: str, number: int, record) -> GenbankRecord:
    where = f"{path}: record {number} ({record.id})"
    try:
        seq = str(record.seq).upper()
    except Exception as error:  # noqa: BLE001  (Bio.Seq.UndefinedSequenceError: a CONTIG-only record)
        raise InputError(f"{where}: no sequence ({describe(error)})") from None
    problem = nucleotide_problem(seq)
    if problem:
        raise InputError(f"{where}: {problem}")
    proteins = tuple(
        str(feature.qualifiers["translation"][0]).upper()
        for feature in record.features
        if feature.type == "CDS" and feature.qualifiers.get("translation")
    )
    return GenbankRecord(record.id, seq, proteins)


def cds_frames(chunk_id: str, chunk: str, joined_proteins: str) -> list[Frame]:
    """The reference's training frames of one chunk: none when the chunk has an ambiguous base,
    else the stop-free frames whose protein occurs inside one of the record's CDS proteins."""
    chunk = chunk.upper()
    if not joined_proteins or not AMBIGUOUS_BASES.isdisjoint(chunk):
        return []
    return [frame for frame in kept_frames(chunk_id, chunk) if frame.protein in joined_proteins]
