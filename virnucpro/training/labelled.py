"""``prepare-labelled``: a labelled sheet -> the prepared layout of ``prepare``, labels and the split.

The chunks, frames, manifest and shards are those of ``virnucpro prepare`` (written by the same
code), so ``embed-dna``/``embed-esm`` and ``classify`` run on them unchanged. FASTA/FASTQ
records keep every stop-free frame, as ``predict`` does; GenBank records keep the reference's
training frames (:func:`virnucpro.training.genbank.cds_frames`) unless ``genbank_frames`` is
``all``. Beside them: ``labels.tsv`` (one row per sequence: label, group, date, length),
``split.tsv`` (:mod:`virnucpro.training.splits`) and, in ``prepare.json``, a ``labelled``
section (settings, the data's sha256, counts, the split's description).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from virnucpro.atomic import atomic_write_text
from virnucpro.contracts import FRAMES_PROTEIN
from virnucpro.errors import InputError
from virnucpro.frames import Frame, kept_frames
from virnucpro.log import get_logger
from virnucpro.prepare import (
    DEFAULT_SHARD_RESIDUES,
    check_file_names,
    check_prepare_settings,
    prepare_is_current,
    read_manifest,
    read_prepare_info,
    write_prepare_info,
    write_prepared,
)
from virnucpro.seqio import Record, UniqueIds, check_inputs, read_fasta, read_records
from virnucpro.training.genbank import cds_frames, is_genbank, read_genbank
from virnucpro.training.sheet import LABELS, Sheet, SheetRow
from virnucpro.training.splits import (
    SPLIT_TSV,
    Split,
    SplitOptions,
    SplitRecord,
    make_split,
    resolve_method,
    write_split,
)

log = get_logger("prepare")

LABELS_TSV = "labels.tsv"
LABELS_COLUMNS = ("id", "original_id", "source", "label", "group", "date", "length", "frames_rule")
RULE_STOP_FREE = "stop_free"  # every stop-free frame, as predict
RULE_CDS = "cds"  # the reference's training frames of a GenBank record
GENBANK_FRAMES = ("cds", "all")


@dataclass(frozen=True)
class LabelledOptions:
    """Settings of ``prepare-labelled``; ``split`` None for evaluation data (no split)."""

    chunk_length: int = 300
    shard_size: int = DEFAULT_SHARD_RESIDUES
    genbank_frames: str = "cds"
    split: SplitOptions | None = field(default_factory=SplitOptions)

    def settings(self, sheet: Sheet) -> dict:
        """What the prepared data depends on besides the files' bytes (compared by --resume)."""
        return {
            "rows": [[row.label, row.group, row.date] for row in sheet.rows],
            "genbank_frames": self.genbank_frames,
            "split": self.split.to_dict() if self.split else None,
        }


@dataclass(frozen=True)
class LabelRow:
    """One row of labels.tsv: an input sequence and what the sheet says about it."""

    id: str
    original_id: str
    source: str
    label: str
    group: str
    date: str
    length: int
    frames_rule: str

    @property
    def target(self) -> int:
        """The class index: 1 for virus, 0 for other."""
        return LABELS.index(self.label)

    def fields(self) -> list[str]:
        return [self.id, self.original_id, self.source, self.label, self.group, self.date, str(self.length),
                self.frames_rule]  # fmt: skip


class _LabelledRecords:
    """The sheet's records in order, with unique ids; remembers each one's label row and which
    frames it keeps (:meth:`select`, called by ``write_prepared`` for the current record)."""

    def __init__(self, sheet: Sheet, genbank_frames: str, digests: dict[str, str]) -> None:
        self.sheet, self.genbank_frames, self.digests = sheet, genbank_frames, digests
        self.rows: list[LabelRow] = []
        self.sequence_digests: list[str] = []
        self.without_cds: list[str] = []
        self._proteins: str | None = None  # the current GenBank record's joined CDS proteins; None: all frames

    def __iter__(self) -> Iterator[Record]:
        ids = UniqueIds()
        for row in self.sheet.rows:
            if is_genbank(row.path):
                for entry in read_genbank(row.path, self.digests):
                    cds = self.genbank_frames == "cds"
                    self._proteins = entry.joined_proteins() if cds else None
                    if cds and not entry.proteins:
                        self.without_cds.append(entry.id)
                    rule = RULE_CDS if cds else RULE_STOP_FREE
                    yield self._record(row, ids.assign(entry.id), entry.id, entry.seq, rule)
            else:
                self._proteins = None
                for record in read_records([row.path], self.digests):
                    unique_id = ids.assign(record.original_id)
                    yield self._record(row, unique_id, record.original_id, record.seq, RULE_STOP_FREE)

    def _record(self, row: SheetRow, unique_id: str, original_id: str, seq: str, rule: str) -> Record:
        self.rows.append(LabelRow(unique_id, original_id, row.path, row.label, row.group, row.date, len(seq), rule))
        self.sequence_digests.append(hashlib.sha1(seq.encode()).hexdigest())
        return Record(unique_id, original_id, seq, row.path, len(self.rows) - 1)

    def select(self, _record: Record, chunk_id: str, chunk: str) -> list[Frame]:
        if self._proteins is None:
            return kept_frames(chunk_id, chunk)
        return cds_frames(chunk_id, chunk, self._proteins)


def prepare_labelled(sheet: Sheet, outdir: Path, options: LabelledOptions) -> Split | None:
    """Write the prepared directory of a labelled sheet; returns the split (None without one).

    The split is made and checked here, before any embedding, so a sheet that cannot be split
    (a part without one of the labels) stops in seconds.
    """
    check_prepare_settings(options.chunk_length, options.shard_size)
    if options.genbank_frames not in GENBANK_FRAMES:
        raise InputError(f"--genbank-frames {options.genbank_frames}: choose {' or '.join(GENBANK_FRAMES)}")
    paths = [row.path for row in sheet.rows]
    check_inputs(paths)
    check_file_names(paths)
    method = resolve_method(options.split, sheet.has_groups, str(sheet.path)) if options.split else None
    if method == "date" and not sheet.has_dates:
        raise InputError(f"{sheet.path}: --split date needs a 'date' column")
    outdir = Path(outdir)
    digests: dict[str, str] = {}
    records = _LabelledRecords(sheet, options.genbank_frames, digests)
    (outdir / SPLIT_TSV).unlink(missing_ok=True)
    result = write_prepared(records, outdir, options.chunk_length, options.shard_size, records.select)
    if records.without_cds:
        log.warning(
            "%d GenBank record(s) have no CDS with a /translation, so no frame is kept of them (first: %s)",
            len(records.without_cds),
            records.without_cds[0],
        )
    lines = [LABELS_COLUMNS, *(row.fields() for row in records.rows)]
    atomic_write_text(outdir / LABELS_TSV, "".join("\t".join(line) + "\n" for line in lines))
    frames_of = {row.id: row.kept_frames for row in read_manifest(outdir)}
    split = None
    if options.split and method:
        where = {row.path: sheet.where(row) for row in sheet.rows}
        split_records = [
            SplitRecord(row.id, row.label, row.group, row.date, frames_of[row.id], digest, where[row.source])
            for row, digest in zip(records.rows, records.sequence_digests)
        ]
        frame_ids = list(frames_with_records(outdir)) if method == "random" else []
        split = make_split(split_records, options.split, method, frame_ids)
        write_split(outdir / SPLIT_TSV, split)
    labelled = {
        "sheet": str(sheet.path),
        "settings": options.settings(sheet),
        "data_sha256": sheet.data_sha256(digests),
        "labels": _label_counts(sheet, records.rows, frames_of),
        "split": split.describe() if split else None,
    }
    write_prepare_info(outdir, paths, digests, options.chunk_length, options.shard_size, result, {"labelled": labelled})
    return split


def _label_counts(sheet: Sheet, rows: list[LabelRow], frames_of: dict[str, int]) -> dict:
    counts = {label: {"files": 0, "sequences": 0, "frames": 0} for label in LABELS}
    for sheet_row in sheet.rows:
        counts[sheet_row.label]["files"] += 1
    for row in rows:
        counts[row.label]["sequences"] += 1
        counts[row.label]["frames"] += frames_of[row.id]
    return counts


def frames_with_records(prepared: Path) -> Iterator[tuple[str, str]]:
    """``(frame id, sequence id)`` of every kept frame, in order (frames file and manifest together)."""
    frames = read_fasta(Path(prepared) / FRAMES_PROTEIN)
    for row in read_manifest(prepared):
        for _ in range(row.kept_frames):
            frame_id, _seq = next(frames)
            yield frame_id, row.id


def labelled_is_current(prepared: Path, sheet: Sheet, options: LabelledOptions) -> bool:
    """Whether ``prepared`` holds a complete ``prepare-labelled`` of this sheet with these settings."""
    paths = [row.path for row in sheet.rows]
    if not prepare_is_current(prepared, paths, options.chunk_length, options.shard_size, pairing="none"):
        return False
    labelled = read_prepare_info(prepared).get("labelled") or {}
    wanted = [Path(prepared) / LABELS_TSV] + ([Path(prepared) / SPLIT_TSV] if options.split else [])
    return labelled.get("settings") == options.settings(sheet) and all(path.is_file() for path in wanted)


def read_labelled_info(prepared: Path) -> dict:
    """The ``labelled`` section of prepare.json; a directory of plain ``prepare`` is refused."""
    info = read_prepare_info(prepared)
    labelled = info.get("labelled")
    if not isinstance(labelled, dict):
        raise InputError(f"{prepared}: not a `virnucpro prepare-labelled` directory (no labels)")
    return {**labelled, "chunk_length": info["chunk_length"]}


def read_labels(prepared: Path) -> dict[str, LabelRow]:
    """labels.tsv of a prepared directory: sequence id -> its row, in input order."""
    path = Path(prepared) / LABELS_TSV
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: missing (not a `virnucpro prepare-labelled` directory)") from None
    if not lines or tuple(lines[0].split("\t")) != LABELS_COLUMNS:
        raise InputError(f"{path}: unexpected header (expected {', '.join(LABELS_COLUMNS)})")
    rows: dict[str, LabelRow] = {}
    for number, line in enumerate(lines[1:], start=2):
        values = line.split("\t")
        if len(values) != len(LABELS_COLUMNS) or values[3] not in LABELS or not values[6].isdigit():
            raise InputError(f"{path}: malformed line {number}")
        row = LabelRow(*values[:6], int(values[6]), values[7])  # type: ignore[arg-type]
        rows[row.id] = row
    return rows
