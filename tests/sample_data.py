"""A synthetic sample for the output tests: long contigs (wrapped FASTA) and two pairs of mate
files (gzip FASTQ, Illumina ids with comments in one, ``/1`` ``/2`` ids in the other), with
varied qualities, so extracted records can be compared byte for byte with their input."""

from __future__ import annotations

import gzip
import random
from dataclasses import dataclass
from pathlib import Path

from virnucpro.synthetic import synthetic_reads


@dataclass(frozen=True)
class SyntheticSample:
    contigs: Path
    casava: tuple[Path, Path]  # ids "<name> 1:N:0:ACGT" / "<name> 2:N:0:ACGT"
    slashed: tuple[Path, Path]  # ids "<name>/1" / "<name>/2"

    @property
    def inputs(self) -> list[str]:
        return [str(self.contigs), *map(str, self.casava), *map(str, self.slashed)]


def _wrapped(seq: str, width: int = 60) -> str:
    return "".join(seq[i : i + width] + "\n" for i in range(0, len(seq), width))


def write_contigs(path: Path, n: int = 5, seed: int = 11) -> Path:
    """Long contigs (2-9 kb) of coding-like and random sequence, wrapped at 60, with descriptions."""
    with open(path, "w") as handle:
        for number, (name, seq) in enumerate(synthetic_reads(n, (2000, 9000), 0.6, seed, "contig"), 1):
            handle.write(f">{name} len={len(seq)} assembler=test\n{_wrapped(seq)}")
            if number == 2:
                handle.write("\n")  # a blank line between records: read over, not part of a record
    return path


def write_pairs(first: Path, second: Path, n: int, seed: int, style: str) -> tuple[Path, Path]:
    """``n`` read pairs as two gzip FASTQ mate files; qualities drawn at random."""
    rng = random.Random(seed)
    mates = [list(synthetic_reads(n, (120, 420), 0.5, seed + mate, "pair")) for mate in (1, 2)]
    for mate, path in ((1, first), (2, second)):
        with gzip.open(path, "wt") as handle:
            for number in range(n):
                _, seq = mates[mate - 1][number]
                name = f"M00123:8:000000000-ABCDE:1:1101:{1000 + number}:{2000 + seed}"
                header = f"{name} {mate}:N:0:ACGTACGT" if style == "casava" else f"{name}/{mate}"
                quality = "".join(chr(rng.randint(35, 74)) for _ in seq)
                handle.write(f"@{header}\n{seq}\n+\n{quality}\n")
    return first, second


def write_synthetic_sample(directory: Path) -> SyntheticSample:
    directory.mkdir(parents=True, exist_ok=True)
    return SyntheticSample(
        contigs=write_contigs(directory / "contigs.fa"),
        casava=write_pairs(directory / "lib1_R1.fastq.gz", directory / "lib1_R2.fastq.gz", 25, 3, "casava"),
        slashed=write_pairs(directory / "lib2_R1.fq.gz", directory / "lib2_R2.fq.gz", 15, 5, "slashed"),
    )


def records_of(path: Path, fmt: str) -> list[bytes]:
    """The records of a file of ours, split independently: 4 lines (FASTQ) or at '>' (FASTA)."""
    text = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    lines = text.splitlines(keepends=True)
    if fmt == "fastq":
        return [b"".join(lines[i : i + 4]) for i in range(0, len(lines), 4)]
    records: list[list[bytes]] = []
    for line in lines:
        if line.startswith(b">"):
            records.append([])
        if line.strip():
            records[-1].append(line)
    return [b"".join(record) for record in records]
