"""What the report shows, gathered from sample directories in one streaming pass per table.

Memory is bounded whatever the number of reads: score distributions are fixed histograms,
the region and failure lists keep their first or largest few entries and count the rest.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from virnucpro import contracts as c
from virnucpro.atomic import as_written
from virnucpro.errors import InputError
from virnucpro.summarize import STATUS_WORDS, SampleStatus
from virnucpro.tables import read_columns

P_BINS = np.linspace(0.0, 1.0, 41)  # P(virus) in steps of 0.025
LENGTH_BINS = np.logspace(1, 7, 37)  # 10 bp .. 10 Mbp, six bins per decade
TOP_REGIONS = 25
TOP_REASONS = 50


@dataclass
class SampleReport:
    """One sample's part of the report."""

    name: str
    status: str
    problem: str
    summary: dict[str, Any]
    calls: dict[str, int]
    failures: list[c.Failure]
    chunk_p_virus: np.ndarray  # histogram of the chunks' highest P(virus) over P_BINS
    length_score: np.ndarray  # 2-D histogram of (length, sequence max P(virus)) over LENGTH_BINS x P_BINS
    region_lengths: np.ndarray  # histogram of region lengths over LENGTH_BINS
    regions: int = 0
    pairs: int = 0
    pair_calls: Counter = field(default_factory=Counter)
    failed_reasons: Counter = field(default_factory=Counter)
    top_regions: list[tuple] = field(default_factory=list)  # (length, sample, id, start, end, chunks, virus_chunks, mean)

    @property
    def records(self) -> int:
        return sum(self.calls.values())


def gather(samples: Sequence[SampleStatus]) -> list[SampleReport]:
    """The report's data for each sample, in the given order."""
    return [_gather_sample(sample) for sample in samples]


def _gather_sample(sample: SampleStatus) -> SampleReport:
    directory = Path(sample.directory)
    summary = sample.summary
    report = SampleReport(
        name=as_written(sample.sample),  # drawn by matplotlib, which refuses surrogates
        status=STATUS_WORDS[sample.exit_status],
        problem=sample.problem,
        summary=summary,
        calls={call: int(summary.get("calls", {}).get(call, 0)) for call in c.CALLS},
        failures=sample.failures,
        chunk_p_virus=np.zeros(len(P_BINS) - 1, dtype=np.int64),
        length_score=np.zeros((len(LENGTH_BINS) - 1, len(P_BINS) - 1), dtype=np.int64),
        region_lengths=np.zeros(len(LENGTH_BINS) - 1, dtype=np.int64),
    )
    _read_chunks(directory / c.PREDICTION_HIGHEST, report)
    _read_sequences(directory / c.SEQUENCE_PREDICTIONS, report)
    _read_regions(directory / c.VIRAL_REGIONS, report)
    return report


def _read_chunks(path: Path, report: SampleReport) -> None:
    for block in _blocks(_stream(path, ("max_score_1",))):
        values = np.array([float(row[0]) for row in block])
        report.chunk_p_virus += np.histogram(values, P_BINS)[0]


def _read_sequences(path: Path, report: SampleReport) -> None:
    for block in _blocks(_stream(path, ("length", "max_p_virus", "call", "reason", "mate", "pair_call"))):
        scored = [(int(row[0]), float(row[1])) for row in block if row[1] != "NA"]
        if scored:
            lengths, scores = np.array(scored).T
            report.length_score += np.histogram2d(np.clip(lengths, 10, 1e7 - 1), scores, (LENGTH_BINS, P_BINS))[0].astype(
                np.int64
            )
        for _length, _p, call, reason, mate, pair_call in block:
            if call == c.CALL_FAILED:
                _count_reason(report.failed_reasons, reason)
            if mate == "1":
                report.pairs += 1
                report.pair_calls[pair_call] += 1


def _read_regions(path: Path, report: SampleReport) -> None:
    names = ("id", "start", "end", "chunks", "virus_chunks", "mean_p_virus")
    for block in _blocks(_stream(path, names)):
        lengths = np.array([int(row[2]) - int(row[1]) + 1 for row in block])
        report.regions += len(block)
        report.region_lengths += np.histogram(np.clip(lengths, 10, 1e7 - 1), LENGTH_BINS)[0]
        for length, row in zip(lengths.tolist(), block):
            entry = (length, report.name, row[0], int(row[1]), int(row[2]), int(row[3]), int(row[4]), float(row[5]))
            if len(report.top_regions) < TOP_REGIONS:
                heapq.heappush(report.top_regions, entry)
            else:
                heapq.heappushpop(report.top_regions, entry)


def _stream(path: Path, names: Sequence[str]) -> Iterable[tuple[str, ...]]:
    """The rows of a table, streamed; none when the sample has no such table or it lacks a column
    (lost, or written by an older version)."""
    if not path.is_file():
        return
    try:
        yield from read_columns(path, names)
    except InputError:
        return


def _blocks(rows: Iterable[tuple[str, ...]], size: int = 65536) -> Iterable[list[tuple[str, ...]]]:
    block: list[tuple[str, ...]] = []
    for row in rows:
        block.append(row)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


def _count_reason(reasons: Counter, reason: str) -> None:
    """Count a failure reason; past TOP_REASONS distinct ones, the rest are counted together."""
    if reason in reasons or len(reasons) < TOP_REASONS:
        reasons[reason] += 1
    else:
        reasons["(other reasons)"] += 1


def read_engine_summaries(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The ``engine`` entries of embed-dna / embed-esm summary.json files (the pipeline's embedding tasks)."""
    engines = []
    for path in paths:
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise InputError(f"{path}: not a readable summary.json ({error})") from None
        engine = document.get("engine") if isinstance(document, dict) else None
        if not isinstance(engine, dict) or "devices" not in engine:
            raise InputError(f"{path}: not the summary.json of an embed-dna or embed-esm run (no engine statistics)")
        engines.append(engine)
    return engines
