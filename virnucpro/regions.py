"""Viral regions of long sequences: maximal runs of virus chunks (``viral_regions.tsv``).

A region starts and ends with a chunk called virus; up to ``max_gap`` consecutive chunks that
are not virus (called others, or without a kept frame) may lie inside it; a region needs at
least ``min_chunks`` virus chunks. Coordinates are 1-based and inclusive, from the reference
chunk bounds (:func:`virnucpro.frames.chunk_bounds`, the last chunk's overlap included), so a
read of one chunk is one region (the whole read) or none.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from virnucpro.frames import chunk_bounds

DEFAULT_MAX_GAP = 1
DEFAULT_MIN_CHUNKS = 1


@dataclass(frozen=True)
class RegionRule:
    """``--region-max-gap`` and ``--region-min-chunks``."""

    max_gap: int = DEFAULT_MAX_GAP
    min_chunks: int = DEFAULT_MIN_CHUNKS

    def __post_init__(self) -> None:
        if self.max_gap < 0:
            raise ValueError(f"region max gap must be 0 or more chunks, got {self.max_gap}")
        if self.min_chunks < 1:
            raise ValueError(f"region min chunks must be 1 or more, got {self.min_chunks}")

    def to_dict(self) -> dict[str, int]:
        return {"max_gap": self.max_gap, "min_chunks": self.min_chunks}


@dataclass(frozen=True)
class ChunkState:
    """One chunk of a sequence for region finding: its number (1-based), call and highest P(virus)."""

    number: int
    virus: bool
    p_virus: float | None  # None: no kept frame, no score


@dataclass(frozen=True)
class Region:
    """One row of viral_regions.tsv."""

    id: str
    start: int  # 1-based, inclusive
    end: int  # inclusive
    chunks: int  # chunks from the first virus chunk to the last, gaps included
    virus_chunks: int
    mean_p_virus: float  # over the region's chunks that have a score
    max_p_virus: float
    fraction_of_sequence: float

    def fields(self) -> list[str]:
        """Columns of contracts.VIRAL_REGIONS_HEADER."""
        return [
            self.id,
            str(self.start),
            str(self.end),
            str(self.chunks),
            str(self.virus_chunks),
            repr(self.mean_p_virus),
            repr(self.max_p_virus),
            f"{self.fraction_of_sequence:.6g}",
        ]


def find_regions(
    record_id: str, length: int, chunk_length: int, scored: Sequence[ChunkState], rule: RegionRule
) -> list[Region]:
    """The regions of one sequence from the chunks that have a call (``scored``, by number);
    chunks missing from ``scored`` (no kept frame) count as not virus."""
    if length == 0:
        return []
    bounds = chunk_bounds(length, chunk_length)
    by_number = {chunk.number: chunk for chunk in scored}
    states = [by_number.get(number, ChunkState(number, False, None)) for number in range(1, len(bounds) + 1)]
    return [
        _region(record_id, length, bounds, states[first:last + 1])
        for first, last in _runs(states, rule.max_gap)
        if sum(chunk.virus for chunk in states[first:last + 1]) >= rule.min_chunks
    ]


def _runs(states: Sequence[ChunkState], max_gap: int) -> Iterator[tuple[int, int]]:
    """``(first, last)`` indices of runs of virus chunks with at most ``max_gap`` others between two of them."""
    first = last = None
    for index, chunk in enumerate(states):
        if not chunk.virus:
            continue
        if last is not None and index - last - 1 > max_gap:
            yield first, last  # type: ignore[misc]
            first = None
        if first is None:
            first = index
        last = index
    if first is not None:
        yield first, last  # type: ignore[misc]


def _region(record_id: str, length: int, bounds: list[tuple[int, int]], chunks: Sequence[ChunkState]) -> Region:
    start = bounds[chunks[0].number - 1][0] + 1
    end = bounds[chunks[-1].number - 1][1]
    scores = [chunk.p_virus for chunk in chunks if chunk.p_virus is not None]
    return Region(
        id=record_id,
        start=start,
        end=end,
        chunks=len(chunks),
        virus_chunks=sum(chunk.virus for chunk in chunks),
        mean_p_virus=sum(scores) / len(scores),
        max_p_virus=max(scores),
        fraction_of_sequence=(end - start + 1) / length,
    )
