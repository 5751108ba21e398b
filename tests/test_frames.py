"""Reference chunking, six-frame translation and frame filter (reference doc sections 1-2)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from Bio.Data.CodonTable import standard_dna_table

from virnucpro.frames import CODON_TABLE, Frame, chunk_sequence, kept_frames, reverse_complement, translate
from virnucpro.seqio import read_records
from virnucpro.synthetic import synthetic_reads

# The vectors travel with the tests; the shared copy is the fallback in the development tree.
_CANDIDATES = [
    Path(__file__).resolve().parent / "fixtures" / "upstream_fidelity",
    Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "upstream_fidelity",
]
FIXTURES = next((path for path in _CANDIDATES if (path / "expected.json").is_file()), _CANDIDATES[0])


@pytest.fixture(scope="module")
def expected() -> dict:
    path = FIXTURES / "expected.json"
    assert path.is_file(), f"fidelity vectors missing: {path}"
    return json.loads(path.read_text())


@pytest.mark.parametrize("chunk_length", [300, 500])
def test_fidelity_vectors(expected: dict, chunk_length: int) -> None:
    chunks: list[list[str]] = []
    frames: list[list[str]] = []
    for record in read_records([FIXTURES / "input.fa"]):
        for chunk_id, chunk in chunk_sequence(record.id, record.seq, chunk_length):
            chunks.append([chunk_id, chunk])
            frames.extend(list(frame) for frame in kept_frames(chunk_id, chunk))
    want = expected[str(chunk_length)]
    assert len(chunks) == len(want["chunks"])
    assert chunks == want["chunks"]
    assert len(frames) == len(want["frames"])
    assert frames == want["frames"]


def _positions(length: int) -> str:
    """A string whose every character encodes its own position."""
    return "".join(chr(0x100 + i) for i in range(length))


@pytest.mark.parametrize("length", [0, 1, 299, 300])
def test_short_sequence_is_one_chunk(length: int) -> None:
    seq = "A" * length
    assert chunk_sequence("r", seq, 300) == [("r_chunk_1", seq)]


def test_501_at_500_overlaps_by_half() -> None:
    seq = _positions(501)
    assert chunk_sequence("x", seq, 500) == [("x_chunk_1", seq[0:500]), ("x_chunk_2", seq[250:501])]


@pytest.mark.parametrize("chunk_length", [300, 500])
@pytest.mark.parametrize("length", [301, 599, 600, 601, 899, 901, 1001, 1500, 2999, 5001, 10_000])
def test_chunks_cover_the_sequence(chunk_length: int, length: int) -> None:
    seq = _positions(length)
    chunks = chunk_sequence("s", seq, chunk_length)
    n = math.ceil(length / chunk_length)
    assert [chunk_id for chunk_id, _ in chunks] == [f"s_chunk_{k}" for k in range(1, n + 1)]
    starts = [ord(chunk[0]) - 0x100 for _, chunk in chunks]
    assert starts[0] == 0
    assert starts == sorted(starts)
    for _, chunk in chunks:
        start = ord(chunk[0]) - 0x100
        assert chunk == seq[start : start + len(chunk)]
        assert 0 < len(chunk) <= chunk_length
    assert chunks[-1][1][-1] == seq[-1]  # the last chunk ends at L
    covered = {ord(c) for _, chunk in chunks for c in chunk}
    assert len(covered) == length


def test_codon_table_is_ncbi_table_1() -> None:
    reference = dict(standard_dna_table.forward_table) | {codon: "*" for codon in standard_dna_table.stop_codons}
    assert CODON_TABLE == reference


def test_translate_drops_codons_with_other_letters() -> None:
    assert translate("ATGNNNAAAKCGTGG") == "MKW"
    assert translate("ATGAAATA") == "MK"
    assert translate("ATGAAATAA", 1) == "*N"
    assert translate("ATGAAATAA", 2) == "EI"
    assert translate("") == ""


def test_reverse_complement_passes_other_letters_through() -> None:
    assert reverse_complement("AACGTN-R") == "R-NACGTT"


def test_kept_frames_order_and_off_by_one_nucleotide() -> None:
    chunk = "ATGGCCAAATTTGGGCCCAAA"  # F1 is stop-free: M A K F G P K
    frames = kept_frames("c_chunk_1", chunk)
    tags = [frame.id.removeprefix("c_chunk_1") for frame in frames]
    assert tags == sorted(tags, key=["F1", "F2", "F3", "R1", "R2", "R3"].index)
    by_tag = {frame.id[-2:]: frame for frame in frames}
    f1 = by_tag["F1"]
    assert f1 == Frame("c_chunk_1F1", chunk[0 : 1 + 3 * 7], "MAKFGPK")
    for frame in frames:
        k = int(frame.id[-1])
        strand = chunk if frame.id[-2] == "F" else reverse_complement(chunk)
        p = len(frame.protein)
        assert frame.nucleotide == strand[k - 1 : k + 3 * p]
        assert "*" not in frame.protein and frame.protein


def test_frames_with_stop_or_no_codon_are_dropped() -> None:
    assert kept_frames("c", "") == []
    assert kept_frames("c", "AC") == []
    assert kept_frames("c", "NNNNNNNNN") == []
    # TAA in F1, and every other frame either stops or is empty.
    assert [f.id for f in kept_frames("c", "TAA")] == ["cR1"]  # TTA -> L


def test_ambiguous_codon_shortens_protein_and_nucleotide() -> None:
    frames = {f.id: f for f in kept_frames("c", "ATGNAAGGG")}
    assert frames["cF1"].protein == "MG"
    assert frames["cF1"].nucleotide == "ATGNAAG"  # chunk[0 : 1 + 3*2]


def test_lowercase_chunk_gives_uppercase_frames() -> None:
    chunk = "ATGGCCAAATTTGGGCCCAAACGT"
    assert kept_frames("c", chunk.lower()) == kept_frames("c", chunk)


def test_coding_reads_keep_a_frame_in_every_chunk() -> None:
    for read_id, seq in synthetic_reads(40, (150, 1200), coding_fraction=1.0, seed=7):
        assert read_id.endswith("_coding")
        for chunk_id, chunk in chunk_sequence(read_id, seq, 300):
            assert kept_frames(chunk_id, chunk), chunk_id


def test_synthetic_reads_are_deterministic() -> None:
    first = list(synthetic_reads(30, (150, 700), seed=3))
    assert first == list(synthetic_reads(30, (150, 700), seed=3))
    assert first != list(synthetic_reads(30, (150, 700), seed=4))
    assert all(150 <= len(seq) <= 700 and set(seq) <= set("ACGT") for _, seq in first)
    kinds = {read_id.split("_")[1] for read_id, _ in first}
    assert kinds == {"coding", "random"}
    assert [read_id[:10] for read_id, _ in first[:2]] == ["read000001", "read000002"]
    assert all(len(seq) == 250 for _, seq in synthetic_reads(5, 250, seed=1))
