"""The labelled sheet: one row per sequence file, ``path,label[,group][,date]`` (CSV or TSV).

- ``path``: a FASTA/FASTQ (plain or compressed) or GenBank file, relative to the sheet's folder
  unless absolute;
- ``label``: ``virus`` or ``other`` (``others`` is read as ``other``);
- ``group`` (optional): a genome or taxon id; a group split keeps each group on one side;
- ``date`` (optional): ISO ``YYYY-MM-DD`` (``YYYY-MM`` and ``YYYY`` mean their first day), for
  ``--split date``.

Every problem is a one-line InputError naming the sheet and the line.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from virnucpro.errors import InputError

LABEL_VIRUS = "virus"
LABEL_OTHER = "other"
LABELS = (LABEL_OTHER, LABEL_VIRUS)  # class 0, class 1 (the classifier's order)
_LABEL_NAMES = {"virus": LABEL_VIRUS, "other": LABEL_OTHER, "others": LABEL_OTHER}
REQUIRED_COLUMNS = ("path", "label")
OPTIONAL_COLUMNS = ("group", "date")


@dataclass(frozen=True)
class SheetRow:
    """One file of the sheet, its label and (possibly empty) group and date."""

    line: int
    path: str
    label: str
    group: str = ""
    date: str = ""

    @property
    def target(self) -> int:
        """The class index: 1 for virus, 0 for other."""
        return LABELS.index(self.label)


@dataclass(frozen=True)
class Sheet:
    """A read and checked sheet."""

    path: Path
    columns: tuple[str, ...]
    rows: tuple[SheetRow, ...]

    @property
    def has_groups(self) -> bool:
        return "group" in self.columns

    @property
    def has_dates(self) -> bool:
        return "date" in self.columns

    def where(self, row: SheetRow) -> str:
        """``SHEET line N`` for messages."""
        return f"{self.path} line {row.line}"

    def labels(self) -> set[str]:
        return {row.label for row in self.rows}

    def require_both_labels(self) -> None:
        """Refuse a sheet with one class only (nothing to learn from)."""
        missing = [label for label in LABELS if label not in self.labels()]
        if missing:
            raise InputError(f"{self.path}: no file labelled {missing[0]} (training needs both virus and other)")

    def data_sha256(self, digests: dict[str, str]) -> str:
        """A digest of the data: each file's bytes (sha256) with its label, group and date, in
        sheet order. Paths are left out: the same data moved elsewhere gives the same digest."""
        digest = hashlib.sha256()
        for row in self.rows:
            digest.update(f"{digests[row.path]}\t{row.label}\t{row.group}\t{row.date}\n".encode())
        return digest.hexdigest()


def read_sheet(path: str | Path) -> Sheet:
    """Read and check a labelled sheet: columns, labels, dates, files present and each given once."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (the labelled sheet)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read the sheet: {error}") from None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise InputError(f"{path}: empty sheet (expected a header: path,label[,group][,date])")
    delimiter = "\t" if "\t" in lines[0][1] else ","
    parsed = list(csv.reader([line for _, line in lines], delimiter=delimiter))
    columns = tuple(name.strip().lower() for name in parsed[0])
    _check_columns(path, columns)
    rows = []
    seen: dict[tuple[int, int], int] = {}
    for (number, _), values in zip(lines[1:], parsed[1:]):
        if len(values) != len(columns):
            raise InputError(f"{path} line {number}: {len(values)} fields, the header has {len(columns)}")
        fields = dict(zip(columns, (value.strip() for value in values)))
        row = _row(path, number, fields)
        identity = _file_identity(row)
        if identity in seen:
            raise InputError(f"{path} line {number}: {row.path} is also on line {seen[identity]} (each file once)")
        seen[identity] = number
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: no files listed (only a header)")
    return Sheet(path, columns, tuple(rows))


def _check_columns(path: Path, columns: tuple[str, ...]) -> None:
    for name in REQUIRED_COLUMNS:
        if name not in columns:
            raise InputError(
                f"{path}: missing column '{name}' (header: {','.join(columns)}; expected path,label[,group][,date])"
            )
    known = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
    for name in columns:
        if name not in known:
            raise InputError(f"{path}: unknown column '{name}' (known: {', '.join(known)})")
    if len(set(columns)) != len(columns):
        raise InputError(f"{path}: a column appears twice in the header ({','.join(columns)})")


def _row(path: Path, number: int, fields: dict[str, str]) -> SheetRow:
    where = f"{path} line {number}"
    if not fields["path"]:
        raise InputError(f"{where}: empty path")
    label = _LABEL_NAMES.get(fields["label"].lower())
    if label is None:
        raise InputError(f"{where}: unknown label '{fields['label']}' (virus or other)")
    file_path = fields["path"]
    if not os.path.isabs(file_path):
        file_path = str(path.parent / file_path)
    if Path(file_path).is_dir():
        raise InputError(f"{where}: {file_path} is a directory, not a sequence file")
    if not Path(file_path).exists():
        raise InputError(f"{where}: {file_path}: no such file")
    date = _iso_date(where, fields.get("date", ""))
    return SheetRow(number, file_path, label, fields.get("group", ""), date)


def _iso_date(where: str, text: str) -> str:
    """``YYYY-MM-DD`` (``YYYY-MM`` and ``YYYY`` are their first day); "" stays ""."""
    if not text:
        return ""
    padded = {4: "-01-01", 7: "-01"}.get(len(text), "")
    try:
        return datetime.date.fromisoformat(text + padded).isoformat()
    except ValueError:
        raise InputError(f"{where}: date '{text}' is not ISO YYYY-MM-DD (or YYYY-MM, YYYY)") from None


def _file_identity(row: SheetRow) -> tuple[int, int]:
    stat = os.stat(row.path)
    return stat.st_dev, stat.st_ino


def parse_date_option(text: str) -> str:
    """A ``--before`` value as ``YYYY-MM-DD`` (one-line InputError otherwise)."""
    return _iso_date("--before", text)
