"""The reference chunking, six-frame translation and frame filter (reference doc sections 1-2).

Both functions reproduce the upstream behaviour exactly, quirks included: the uneven
overlap of the chunking, dropped codons for non-ACGT letters, and the paired nucleotide
sequence one base longer than the codons.
"""

from __future__ import annotations

import re
from itertools import product
from typing import NamedTuple

_BASES = "TCAG"
_AMINO_ACIDS = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"  # NCBI table 1, TCAG order
CODON_TABLE: dict[str, str] = {
    "".join(codon): aa for codon, aa in zip(product(_BASES, repeat=3), _AMINO_ACIDS, strict=True)
}
# Matches, from a frame's first codon, whole codons up to the first stop codon of that frame.
_STOP_IN_FRAME = re.compile("(?:...)*?(?:TAA|TAG|TGA)", re.DOTALL)
_COMPLEMENT = str.maketrans("ACGT", "TGCA")


class _PairTable(dict):
    """Codon pairs (6-mers) and single codons to protein; pairs with a non-ACGT codon fall back per codon."""

    def __missing__(self, key: str) -> str:
        get = CODON_TABLE.get
        return get(key[:3], "") + get(key[3:], "")


# Two codons per lookup: fewer lookups on the hot path of `prepare` (measured: docs/performance.md).
_PAIRS = _PairTable({a + b: CODON_TABLE[a] + CODON_TABLE[b] for a in CODON_TABLE for b in CODON_TABLE})
_PAIRS.update(CODON_TABLE)
_CODON_PAIRS = re.compile(".{6}|.{3}", re.DOTALL)


class Frame(NamedTuple):
    """A kept frame: id ``<chunk_id><tag>``, its paired nucleotide sequence and its protein."""

    id: str
    nucleotide: str
    protein: str


def chunk_bounds(length: int, chunk_length: int) -> list[tuple[int, int]]:
    """The reference chunks of a sequence of ``length`` bases as 0-based ``[begin, end)`` bounds.

    A sequence up to ``chunk_length`` is one chunk (the whole sequence, even an empty one).
    Longer ones get ``n = ceil(L/cs)`` chunks whose starts are pulled back by the reference's
    overlap steps, so the last chunk ends at ``L`` (and is often shorter than ``chunk_length``).
    """
    cs = chunk_length
    if length <= cs:
        return [(0, length)]
    n = -(-length // cs)
    overlap = n * cs - length
    low = overlap // n
    need = overlap - low * (n - 1)
    steps = [low + 1] * need + [low] * max(0, n - 1 - need) + [0]
    bounds = []
    move = 0
    for start, step in zip(range(0, length, cs), steps):
        begin = start - move if start > 1 else start
        bounds.append((begin, min(begin + cs, length)))
        move += step
    return bounds


def chunk_sequence(record_id: str, seq: str, chunk_length: int) -> list[tuple[str, str]]:
    """Split ``seq`` into the reference chunks ``(<id>_chunk_<k>, sequence)`` (:func:`chunk_bounds`)."""
    return [
        (f"{record_id}_chunk_{number}", seq[begin:end])
        for number, (begin, end) in enumerate(chunk_bounds(len(seq), chunk_length), start=1)
    ]


def reverse_complement(seq: str) -> str:
    """Reverse complement as upstream: only ACGT are complemented, other letters pass through."""
    return seq.translate(_COMPLEMENT)[::-1]


def translate(seq: str, offset: int = 0) -> str:
    """Translate codons from ``offset``; a codon that is not one of the 64 is dropped."""
    return "".join(map(_PAIRS.__getitem__, _CODON_PAIRS.findall(seq, offset)))


def kept_frames(chunk_id: str, chunk: str) -> list[Frame]:
    """The frames of ``chunk`` (F1, F2, F3, R1, R2, R3 in order) whose protein is non-empty and stop-free."""
    chunk = chunk.upper()
    kept: list[Frame] = []
    has_stop = _STOP_IN_FRAME.match
    for strand, seq in (("F", chunk), ("R", reverse_complement(chunk))):
        for offset in range(3):
            if has_stop(seq, offset):  # found before translating: most frames of most reads stop
                continue
            protein = translate(seq, offset)
            if protein:
                nucleotide = seq[offset : offset + 1 + 3 * len(protein)]  # one base past the codons
                kept.append(Frame(f"{chunk_id}{strand}{offset + 1}", nucleotide, protein))
    return kept
