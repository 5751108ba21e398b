"""Paired-end reads: mate files recognised, read in step and interleaved, pair calls."""

from __future__ import annotations

import gzip
from itertools import product
from pathlib import Path

import pytest

from virnucpro import contracts as c
from virnucpro.errors import InputError
from virnucpro.pairs import find_mates, pair_call, pair_id, read_sample_records, with_pair_calls
from virnucpro.prepare import prepare, read_manifest, read_prepare_info

from sample_data import write_pairs


def fastq(path: Path, ids: list[str], compress: bool = False) -> Path:
    text = "".join(f"@{name}\nACGTACGTAC\n+\nIIIIIIIIII\n" for name in ids)
    if compress:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [("r1", "r1", "r1"), ("r1/1", "r1/2", "r1"), ("r1/2", "r1/1", None), ("r1", "r2", None), ("r1/1", "r1/1", "r1/1")],
)
def test_pair_id(first: str, second: str, expected: str | None) -> None:
    assert pair_id(first, second) == expected


def test_auto_takes_adjacent_fastq_files_whose_ids_pair_up(tmp_path: Path) -> None:
    r1 = fastq(tmp_path / "a_R1.fq.gz", ["x 1:N:0", "y 1:N:0"], compress=True)
    r2 = fastq(tmp_path / "a_R2.fq.gz", ["x 2:N:0", "y 2:N:0"], compress=True)
    s1 = fastq(tmp_path / "b_1.fq", ["u/1", "v/1"])
    s2 = fastq(tmp_path / "b_2.fq", ["u/2", "v/2"])
    single = fastq(tmp_path / "single.fq", ["x", "y"])  # same ids as a_R1 but not adjacent to it
    assert find_mates([r1, r2, single, s1, s2], "auto") == [(0, 1), (3, 4)]
    assert find_mates([r1, single], "auto") == [(0, 1)]  # ids pair up: taken as mates
    assert find_mates([r1, r2], "none") == []


def test_auto_leaves_fasta_and_files_that_do_not_pair_alone(tmp_path: Path) -> None:
    fa1, fa2 = tmp_path / "a.fa", tmp_path / "b.fa"
    fa1.write_text(">x\nACGT\n>y\nACGT\n")
    fa2.write_text(">x\nACGT\n>y\nACGT\n")
    assert find_mates([fa1, fa2], "auto") == []  # FASTA is paired only with --pairing paired
    assert find_mates([fa1, fa2], "paired") == [(0, 1)]
    one = fastq(tmp_path / "one.fq", ["x", "y"])
    other = fastq(tmp_path / "other.fq", ["x", "z"])
    shorter = fastq(tmp_path / "shorter.fq", ["x"])
    assert find_mates([one, other], "auto") == []
    assert find_mates([one, shorter], "auto") == []


def test_paired_needs_files_two_by_two(tmp_path: Path) -> None:
    one = fastq(tmp_path / "one.fq", ["x"])
    with pytest.raises(InputError, match="two by two"):
        find_mates([one], "paired")
    with pytest.raises(InputError, match="choose one of"):
        find_mates([one], "sometimes")


def test_mates_are_interleaved_with_their_own_ids(tmp_path: Path) -> None:
    r1, r2 = write_pairs(tmp_path / "R1.fq.gz", tmp_path / "R2.fq.gz", 3, 1, "casava")
    s1, s2 = write_pairs(tmp_path / "S1.fq.gz", tmp_path / "S2.fq.gz", 2, 2, "slashed")
    single = fastq(tmp_path / "single.fq", ["M00123:8:000000000-ABCDE:1:1101:1000:2001"])  # an id of R1/R2
    records = list(read_sample_records([r1, r2, single, s1, s2], [(0, 1), (3, 4)]))
    assert [(r.source, r.mate) for r in records[:2]] == [(str(r1), 1), (str(r2), 2)]
    pair = "M00123:8:000000000-ABCDE:1:1101:1000:2001"
    assert [r.id for r in records[:2]] == [f"{pair}/1", f"{pair}/2"]
    assert [r.original_id for r in records[:2]] == [pair, pair]  # the header's first word, as written
    assert records[6].id == pair and records[6].mate == 0  # unique: the mates carry /1 and /2
    assert [r.original_id for r in records[7:9]] == [f"{'M00123:8:000000000-ABCDE:1:1101:1000:2002'}/{m}" for m in (1, 2)]
    assert [r.id for r in records[7:9]] == [r.original_id for r in records[7:9]]
    assert [r.index for r in records] == list(range(len(records)))
    assert len({r.id for r in records}) == len(records)


def test_mate_files_out_of_step_are_one_line_errors(tmp_path: Path) -> None:
    r1 = fastq(tmp_path / "R1.fq", ["a/1", "b/1", "c/1"])
    r2 = fastq(tmp_path / "R2.fq", ["a/2", "c/2", "b/2"])
    with pytest.raises(InputError, match=r"R1.fq and .*R2.fq: record 2 \(b/1\) and its mate \(c/2\) do not pair up"):
        list(read_sample_records([r1, r2], [(0, 1)]))
    short = fastq(tmp_path / "short.fq", ["a/2", "b/2"])
    with pytest.raises(InputError, match=r"R1.fq: record 3 \(c/1\) has no mate: .*short.fq ends after 2 records"):
        list(read_sample_records([r1, short], [(0, 1)]))


def test_prepare_records_mates_in_manifest_and_info(tmp_path: Path) -> None:
    r1, r2 = write_pairs(tmp_path / "R1.fq.gz", tmp_path / "R2.fq.gz", 4, 7, "slashed")
    prepare([r1, r2], tmp_path / "prep", 300)
    rows = list(read_manifest(tmp_path / "prep"))
    assert [row.mate for row in rows] == [1, 2] * 4
    assert [row.source for row in rows] == [str(r1), str(r2)] * 4
    info = read_prepare_info(tmp_path / "prep")
    assert info["pairs"] == [[str(r1), str(r2)]] and info["pairing"] == "auto"
    assert [entry["size"] for entry in info["inputs"]] == [r1.stat().st_size, r2.stat().st_size]
    prepare([r1, r2], tmp_path / "apart", 300, pairing="none")  # each file in turn: ids made unique
    apart = list(read_manifest(tmp_path / "apart"))
    assert [row.mate for row in apart] == [0] * 8 and [row.source for row in apart] == [str(r1)] * 4 + [str(r2)] * 4


CALLS = (c.CALL_VIRUS, c.CALL_OTHERS, c.CALL_NO_FRAME, c.CALL_FAILED)


@pytest.mark.parametrize(("first", "second"), list(product(CALLS, CALLS)))
def test_pair_call_rules(first: str, second: str) -> None:
    calls = {first, second}
    any_call = pair_call(first, second, "any")
    both_call = pair_call(first, second, "both")
    assert any_call == pair_call(second, first, "any") and both_call == pair_call(second, first, "both")
    assert (any_call == c.CALL_VIRUS) == (c.CALL_VIRUS in calls)
    assert (both_call == c.CALL_VIRUS) == (calls == {c.CALL_VIRUS})
    if c.CALL_VIRUS not in calls:  # a failed mate might have been virus
        assert (any_call == c.CALL_FAILED) == (c.CALL_FAILED in calls)
    if calls == {c.CALL_NO_FRAME}:
        assert any_call == both_call == c.CALL_NO_FRAME
    if calls == {c.CALL_VIRUS, c.CALL_FAILED}:
        assert both_call == c.CALL_FAILED
    if calls == {c.CALL_VIRUS, c.CALL_OTHERS}:
        assert both_call == c.CALL_OTHERS


def test_with_pair_calls_gives_both_mates_the_pair_call() -> None:
    items = [("s", 0, "others"), ("a", 1, "virus"), ("a", 2, "others"), ("b", 1, "others"), ("b", 2, "failed")]
    out = list(with_pair_calls(items, lambda item: item[1], lambda item: item[2], "any"))
    assert [call for _, call in out] == ["others", "virus", "virus", "failed", "failed"]
    with pytest.raises(InputError, match="without its mate 2"):
        list(with_pair_calls([("a", 1, "virus"), ("s", 0, "virus")], lambda i: i[1], lambda i: i[2], "any"))
    with pytest.raises(InputError, match="without its mate 1"):
        list(with_pair_calls([("a", 2, "virus")], lambda i: i[1], lambda i: i[2], "any"))
