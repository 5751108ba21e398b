"""Deterministic synthetic reads for tests, the bundled assets and benchmarks.

Coding-like reads are random sense codons (no stop codon) in one frame, on either
strand, so at least one frame of every chunk of them is kept. Random reads are uniform
ACGT. ``python -m virnucpro.synthetic DIR`` regenerates the files of ``assets/``.
"""

from __future__ import annotations

import gzip as gzip_module
import io
import random
import sys
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Literal

from virnucpro.frames import CODON_TABLE, reverse_complement
from virnucpro.seqio import write_fasta_record

SENSE_CODONS = tuple(codon for codon, aa in CODON_TABLE.items() if aa != "*")
# One random byte -> one base / one sense codon (bytes are drawn in bulk: millions of reads stay fast).
_BASE_OF_BYTE = bytes(b"ACGT"[value & 3] for value in range(256))
_CODON_OF_BYTE = [SENSE_CODONS[value % len(SENSE_CODONS)] for value in range(256)]

# The bundled test data (assets/): name -> (reads, length range, seed, id prefix, format, gzip).
ASSETS = {
    "test_reads.fa": (30, (150, 700), 1, "read", "fasta", False),
    "test_reads.fq.gz": (30, (150, 700), 2, "fqread", "fastq", True),
}


def synthetic_reads(
    n: int,
    length: int | tuple[int, int],
    coding_fraction: float = 0.5,
    seed: int = 0,
    prefix: str = "read",
) -> Iterator[tuple[str, str]]:
    """Yield ``n`` reads ``(id, seq)``; ``length`` is fixed or an inclusive ``(min, max)`` range.

    Ids are ``<prefix>000001_coding`` / ``<prefix>000002_random``. Same arguments, same reads.
    """
    low, high = (length, length) if isinstance(length, int) else length
    if not 0 < low <= high:
        raise ValueError(f"invalid read length {length!r}")
    rng = random.Random(seed)
    for number in range(1, n + 1):
        size = low if low == high else rng.randint(low, high)
        if rng.random() < coding_fraction:
            phase = rng.randrange(3)
            seq = "".join(map(_CODON_OF_BYTE.__getitem__, rng.randbytes(size // 3 + 2)))[phase : phase + size]
            if rng.random() < 0.5:
                seq = reverse_complement(seq)
            kind = "coding"
        else:
            seq = rng.randbytes(size).translate(_BASE_OF_BYTE).decode("ascii")
            kind = "random"
        yield f"{prefix}{number:06d}_{kind}", seq


def codon_biased_sequence(rng: random.Random, length: int, gc_weight: float) -> str:
    """A coding-like sequence (sense codons only, one frame, forward strand) whose codons are drawn
    with weight ``gc_weight ** (G + C in the codon)``: above 1 GC-rich codon usage, below 1 AT-rich.
    Two such classes differ in composition, codon and amino-acid usage: learnable from embeddings."""
    weights = [gc_weight ** sum(base in "GC" for base in codon) for codon in SENSE_CODONS]
    return "".join(rng.choices(SENSE_CODONS, weights=weights, k=length // 3 + 1))[:length]


def write_labelled_set(
    outdir: str | Path,
    groups: int = 20,
    records: int = 2,
    length: tuple[int, int] = (600, 1200),
    seed: int = 0,
    gc_weights: tuple[float, float] = (2.0, 0.6),
) -> Path:
    """A toy labelled set for ``virnucpro train``: per class, ``groups`` FASTA files (one genome each,
    ``records`` coding-like sequences) whose codon usage differs between the classes (virus:
    ``gc_weights[0]``, other: ``gc_weights[1]``, see :func:`codon_biased_sequence`), and ``sheet.csv``
    (``path,label,group``). Returns the sheet's path."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lines = ["path,label,group"]
    for number in range(1, groups + 1):
        for label, weight in zip(("virus", "other"), gc_weights):
            genome = f"{label}{number:03d}"
            reads = [(f"{genome}_r{k}", codon_biased_sequence(rng, rng.randint(*length), weight)) for k in range(records)]
            write_reads(outdir / f"{genome}.fa", reads)
            lines.append(f"{genome}.fa,{label},{genome}")
    sheet = outdir / "sheet.csv"
    sheet.write_text("\n".join(lines) + "\n")
    return sheet


def write_reads(
    path: str | Path,
    reads: Iterable[tuple[str, str]],
    fmt: Literal["fasta", "fastq"] = "fasta",
    gzip: bool = False,
) -> int:
    """Write reads as FASTA or FASTQ (constant quality 'I'); returns the number written.

    ``gzip=True`` compresses at level 1 (fast), with no file name or time in the header.
    """
    if fmt not in ("fasta", "fastq"):
        raise ValueError(f"unknown format {fmt!r}")
    count = 0
    with ExitStack() as stack:
        raw = stack.enter_context(open(path, "wb"))
        if gzip:
            raw = stack.enter_context(
                gzip_module.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0)
            )
        handle: IO[str] = stack.enter_context(io.TextIOWrapper(raw, encoding="ascii", newline="\n"))
        for read_id, seq in reads:
            if fmt == "fasta":
                write_fasta_record(handle, read_id, seq)
            else:
                handle.write(f"@{read_id}\n{seq}\n+\n{'I' * len(seq)}\n")
            count += 1
    return count


def write_assets(outdir: str | Path) -> list[Path]:
    """(Re)create the bundled test files in ``outdir``; returns their paths."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (n, length, seed, prefix, fmt, compress) in ASSETS.items():
        path = outdir / name
        reads = synthetic_reads(n, length, seed=seed, prefix=prefix)
        write_reads(path, reads, fmt=fmt, gzip=compress)  # type: ignore[arg-type]
        paths.append(path)
    return paths


if __name__ == "__main__":  # pragma: no cover
    for written in write_assets(sys.argv[1] if len(sys.argv) > 1 else "assets"):
        print(written)
