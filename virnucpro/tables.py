"""Reading back the tab-separated tables the pipeline writes (sequence_predictions.tsv, viral_regions.tsv)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from virnucpro.errors import InputError


def read_columns(path: Path, names: Sequence[str]) -> Iterator[tuple[str, ...]]:
    """Stream the values of the columns ``names`` (by header name), one tuple per row, in file order."""
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror or error}") from None
    with handle:
        header = handle.readline().rstrip("\n").split("\t")
        missing = [name for name in names if name not in header]
        if missing:
            raise InputError(f"{path}: no column {missing[0]!r} (written by another virnucpro version?)")
        positions = [header.index(name) for name in names]
        width = len(header)
        for number, line in enumerate(handle, start=2):
            values = line.rstrip("\n").split("\t")
            if len(values) != width:
                raise InputError(f"{path}: line {number} has {len(values)} columns, the header {width}")
            yield tuple(values[position] for position in positions)
