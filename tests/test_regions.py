"""Viral regions: maximal runs of virus chunks, reference chunk coordinates."""

from __future__ import annotations

import random

import pytest

from virnucpro.frames import chunk_bounds, chunk_sequence
from virnucpro.regions import ChunkState, RegionRule, find_regions


def states(pattern: str, p_virus: float = 0.9, p_others: float = 0.2) -> list[ChunkState]:
    """'V' virus, 'O' others, '.' no kept frame (not in the list), one letter per chunk."""
    return [
        ChunkState(number, letter == "V", p_virus if letter == "V" else p_others)
        for number, letter in enumerate(pattern, 1)
        if letter != "."
    ]


def spans(pattern: str, rule: RegionRule, length: int | None = None, chunk_length: int = 300) -> list[tuple[int, int]]:
    length = length or len(pattern) * chunk_length
    return [(r.start, r.end) for r in find_regions("s", length, chunk_length, states(pattern), rule)]


@pytest.mark.parametrize("length", [1, 299, 300, 301, 450, 599, 600, 601, 700, 901, 1000, 4099, 12345])
@pytest.mark.parametrize("chunk_length", [300, 500])
def test_chunk_bounds_are_the_reference_chunks(length: int, chunk_length: int) -> None:
    seq = "".join(random.Random(length).choice("ACGT") for _ in range(length))
    chunks = chunk_sequence("s", seq, chunk_length)
    bounds = chunk_bounds(length, chunk_length)
    assert [seq[begin:end] for begin, end in bounds] == [chunk for _, chunk in chunks]
    assert bounds[-1][1] == length  # the last chunk ends at the end (overlapping the one before)


def test_gaps_inside_a_region() -> None:
    assert spans("VOV", RegionRule(max_gap=1)) == [(1, 900)]
    assert spans("VOV", RegionRule(max_gap=0)) == [(1, 300), (601, 900)]
    assert spans("VOOV", RegionRule(max_gap=1)) == [(1, 300), (901, 1200)]
    assert spans("V.V", RegionRule(max_gap=1)) == [(1, 900)]  # a chunk without a kept frame is a gap too
    assert spans("OOVVOO", RegionRule(max_gap=3)) == [(601, 1200)]  # regions start and end with virus chunks


def test_min_chunks_counts_virus_chunks() -> None:
    assert spans("VOVOOV", RegionRule(max_gap=1, min_chunks=2)) == [(1, 900)]
    assert spans("VOVOOV", RegionRule(max_gap=1, min_chunks=3)) == []


def test_a_one_chunk_read_is_one_region_or_none() -> None:
    [region] = find_regions("r", 217, 300, states("V", p_virus=0.7), RegionRule())
    assert (region.start, region.end, region.chunks, region.virus_chunks) == (1, 217, 1, 1)
    assert region.fraction_of_sequence == 1.0 and region.mean_p_virus == region.max_p_virus == 0.7
    assert find_regions("r", 217, 300, states("O"), RegionRule()) == []
    assert find_regions("r", 0, 300, [], RegionRule()) == []


def test_last_chunk_overlap_in_coordinates() -> None:
    # 700 bp at 300: chunks [0,300) [233,533) [466,700): the reference pulls the later starts back
    assert chunk_bounds(700, 300) == [(0, 300), (233, 533), (466, 700)]
    assert spans("OOV", RegionRule(), length=700) == [(467, 700)]
    [region] = find_regions("s", 700, 300, states("OVV", p_virus=0.8), RegionRule())
    assert (region.start, region.end) == (234, 700)
    assert region.fraction_of_sequence == pytest.approx(467 / 700)


def test_scores_are_over_the_regions_scored_chunks() -> None:
    scored = [ChunkState(1, True, 0.9), ChunkState(2, False, 0.3), ChunkState(4, True, 0.6)]
    [region] = find_regions("s", 1200, 300, scored, RegionRule(max_gap=2))
    assert (region.chunks, region.virus_chunks) == (4, 2)
    assert region.mean_p_virus == pytest.approx((0.9 + 0.3 + 0.6) / 3) and region.max_p_virus == 0.9


def test_random_calls_against_a_direct_definition() -> None:
    rng = random.Random(3)
    for _ in range(300):
        pattern = "".join(rng.choice("VVO.") for _ in range(rng.randint(1, 25)))
        rule = RegionRule(max_gap=rng.randint(0, 3), min_chunks=rng.randint(1, 3))
        found = find_regions("s", len(pattern) * 300, 300, states(pattern), rule)
        virus = [index for index, letter in enumerate(pattern, 1) if letter == "V"]
        # direct: split the virus chunk numbers where the gap between two exceeds max_gap
        runs: list[list[int]] = []
        for number in virus:
            if runs and number - runs[-1][-1] - 1 <= rule.max_gap:
                runs[-1].append(number)
            else:
                runs.append([number])
        expected = [(run[0], run[-1], len(run)) for run in runs if len(run) >= rule.min_chunks]
        assert [((r.start - 1) // 300 + 1, r.end // 300, r.virus_chunks) for r in found] == expected, (pattern, rule)


def test_rule_refuses_bad_values() -> None:
    with pytest.raises(ValueError):
        RegionRule(max_gap=-1)
    with pytest.raises(ValueError):
        RegionRule(min_chunks=0)
