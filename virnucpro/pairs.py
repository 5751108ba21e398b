"""Paired-end reads: which input files are the two mate files of one sample, reading them in
step, and the call of a read pair from the calls of its two mates.

Two files are mates when their records pair up one by one, by id: the same first word
(``@A00123:8:H5:1:1101:1000:1000 1:N:0`` / ``... 2:N:0``, ``@SRR123.1`` in both files) or the same
id ending in ``/1`` and ``/2``. ``--pairing auto`` (the default) takes two adjacent FASTQ inputs
as mates when their first records pair up; ``paired`` takes the inputs as mate files in order
(R1 R2 [R1 R2 ...], FASTA or FASTQ); ``none`` pairs nothing (a repeated id becomes ``<id>_dup2``).
Mates are read in step and come out interleaved (mate 1, then mate 2 of the same pair), each with
its own id ``<pair id>/1`` and ``<pair id>/2``; files that go out of step stop the run with one line
naming both files and the record.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from virnucpro import contracts as c
from virnucpro.errors import InputError
from virnucpro.seqio import Record, UniqueIds, content_format, is_stream, open_content, read_file

_INCONSISTENT = "prepared data is inconsistent (mates not interleaved)"
AUTO_PAIR_RECORDS = 1000  # first records compared by --pairing auto (all of them when a file has fewer)

T = TypeVar("T")


def pair_id(first: str, second: str) -> str | None:
    """The id two mates share (``x`` for ``x``/``x`` and for ``x/1``/``x/2``), None when they are no mates."""
    if first == second:
        return first
    if first.endswith("/1") and second.endswith("/2") and first[:-2] == second[:-2]:
        return first[:-2]
    return None


def find_mates(paths: Sequence[str | Path], pairing: str) -> list[tuple[int, int]]:
    """The mate files among ``paths`` as ``(index of mate 1, index of mate 2)``, by ``pairing``."""
    if pairing not in c.PAIRINGS:
        raise InputError(f"--pairing {pairing!r}: choose one of {', '.join(c.PAIRINGS)}")
    paths = [str(path) for path in paths]
    if pairing == "none":
        return []
    if pairing == "paired":
        if len(paths) % 2:
            raise InputError(f"--pairing paired needs mate files two by two (R1 R2 ...), got {len(paths)} files")
        streams = [path for path in paths if is_stream(path)]
        if streams:
            raise InputError(f"{streams[0]}: a stream cannot be one of two mate files (they are read in step)")
        return [(index, index + 1) for index in range(0, len(paths), 2)]
    mates, index = [], 0
    while index + 1 < len(paths):
        if _look_like_mates(paths[index], paths[index + 1]):
            mates.append((index, index + 1))
            index += 2
        else:
            index += 1
    return mates


def _look_like_mates(first: str, second: str) -> bool:
    """Two FASTQ files (not streams) whose first records (up to AUTO_PAIR_RECORDS) pair up by id."""
    if is_stream(first) or is_stream(second) or _format_of(first) != "fastq" or _format_of(second) != "fastq":
        return False
    heads = [list(itertools.islice(read_file(path), AUTO_PAIR_RECORDS)) for path in (first, second)]
    if not heads[0] or len(heads[0]) != len(heads[1]):
        return False
    return all(pair_id(a, b) is not None for (a, _), (b, _) in zip(*heads))


def _format_of(path: str) -> str | None:
    with open_content(path) as (binary, _):
        return content_format(binary.peek(1 << 16)[: 1 << 16])


def read_sample_records(
    paths: Sequence[str | Path], mates: Sequence[tuple[int, int]] = (), digests: dict[str, str] | None = None
) -> Iterator[Record]:
    """The records of a sample's files in input order, the two files of each mate pair read in step
    and interleaved (mate 1, mate 2); ids unique over the sample (as :func:`seqio.read_records`).

    A mate file is read where its first mate appears in ``paths``. ``digests`` as in
    :func:`seqio.read_records`.
    """
    paths = [str(path) for path in paths]
    second_of = dict(mates)
    seconds = set(second_of.values())
    ids = UniqueIds()
    counter = itertools.count()
    for position, path in enumerate(paths):
        if position in seconds:
            continue
        if position not in second_of:
            for original_id, seq in read_file(path, digests):
                yield Record(ids.assign(original_id), original_id, seq, path, next(counter))
            continue
        mate_path = paths[second_of[position]]
        records = _in_step(read_file(path, digests), read_file(mate_path, digests), path, mate_path)
        for number, (one, two) in enumerate(records, 1):
            shared = pair_id(one[0], two[0])
            if shared is None:
                raise InputError(
                    f"{path} and {mate_path}: record {number} ({one[0]}) and its mate ({two[0]}) do not pair up: "
                    f"the mate files are out of step (repair them, or give --pairing none)"
                )
            for mate, (original_id, seq), source in ((1, one, path), (2, two, mate_path)):
                yield Record(ids.assign(f"{shared}/{mate}"), original_id, seq, source, next(counter), mate)


def _in_step(
    first: Iterator[tuple[str, str]], second: Iterator[tuple[str, str]], first_path: str, second_path: str
) -> Iterator[tuple]:
    """Pairs of records of two mate files; one file with more records than the other is an error."""
    missing = object()
    for number, (one, two) in enumerate(itertools.zip_longest(first, second, fillvalue=missing), 1):
        if one is missing or two is missing:
            longer, other = (second_path, first_path) if one is missing else (first_path, second_path)
            record_id = (two if one is missing else one)[0]
            raise InputError(
                f"{longer}: record {number} ({record_id}) has no mate: {other} ends after {number - 1} records "
                f"(repair the mate files, or give --pairing none)"
            )
        yield one, two


def pair_call(first: str, second: str, rule: str) -> str:
    """The call of a read pair from its mates' calls.

    ``any``: virus when a mate is virus; ``both``: when both are. Otherwise ``failed`` when a
    failed mate could still have made the pair virus, ``no_coding_frame`` when neither mate has a
    coding frame, else ``others``.
    """
    calls = (first, second)
    if rule == "any":
        satisfied, possible = c.CALL_VIRUS in calls, True
    elif rule == "both":
        satisfied = calls == (c.CALL_VIRUS, c.CALL_VIRUS)
        possible = all(call in (c.CALL_VIRUS, c.CALL_FAILED) for call in calls)
    else:
        raise ValueError(f"unknown pair rule {rule!r}")
    if satisfied:
        return c.CALL_VIRUS
    if c.CALL_FAILED in calls and possible:
        return c.CALL_FAILED
    if calls == (c.CALL_NO_FRAME, c.CALL_NO_FRAME):
        return c.CALL_NO_FRAME
    return c.CALL_OTHERS


def with_pair_calls(
    items: Iterable[T], mate_of: Callable[[T], int], call_of: Callable[[T], str], rule: str
) -> Iterator[tuple[T, str]]:
    """``(item, pair call)`` in order; mates come as mate 1 then mate 2 (as :func:`read_sample_records`
    gives them); an unpaired item's pair call is its own call. Holds at most one item back."""
    held: T | None = None
    for item in items:
        mate = mate_of(item)
        if held is not None:
            if mate != 2:
                raise InputError(f"{_INCONSISTENT}: a mate 1 without its mate 2")
            call = pair_call(call_of(held), call_of(item), rule)
            yield held, call
            yield item, call
            held = None
        elif mate == 1:
            held = item
        elif mate == 2:
            raise InputError(f"{_INCONSISTENT}: a mate 2 without its mate 1")
        else:
            yield item, call_of(item)
    if held is not None:
        raise InputError(f"{_INCONSISTENT}: a mate 1 without its mate 2 at the end")
