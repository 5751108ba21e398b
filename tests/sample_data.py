"""Test data for the output tests.

A synthetic sample: long contigs (wrapped FASTA) and two pairs of mate files (gzip FASTQ,
Illumina ids with comments in one, ``/1`` ``/2`` ids in the other), with varied qualities, so
extracted records can be compared byte for byte with their input. And made-up sample
directories (as classify leaves them) and embedding summaries for the report and MultiQC.
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass
from pathlib import Path

from virnucpro import contracts as c
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


def make_sample(directory: Path, seed: int, sequences: int = 300) -> Path:
    """A sample directory as classify leaves it, with made-up but well-formed content."""
    rng = random.Random(seed)
    directory.mkdir(parents=True)
    calls = dict.fromkeys(c.CALLS, 0)
    paired = seed % 3 == 0
    failures = [f"shard_0000{seed % 10}.fa|ESM-2|CUDA out of memory with one sequence"] if seed % 7 == 0 else []
    seq_rows, chunk_rows, region_rows = [], [], []
    for number in range(sequences):
        length = int(min(10 ** rng.uniform(2.2, 4.5), 9_000_000))
        p = rng.betavariate(0.4 + seed % 5 / 4, 0.8)
        call = c.CALL_VIRUS if p >= 0.5 else c.CALL_OTHERS
        reason = f"{int(p >= 0.5)}/1 chunks virus"
        if number % 50 == 7:
            call, reason, p = c.CALL_NO_FRAME, "every frame of every chunk has a stop codon or no complete codon", None
        if failures and number % 40 == 3:
            call, reason, p = c.CALL_FAILED, "ESM-2: out of memory with one sequence per batch (1024 tokens)", None
        calls[call] += 1
        mate = str(number % 2 + 1) if paired else "NA"
        name = f"s{seed}_r{number}"
        score = "NA" if p is None else repr(p)
        seq_rows.append([name, name, str(length), "1", "1", str(int(call == c.CALL_VIRUS)), score, score, call, reason,
                         "in.fq.gz", mate, call])  # fmt: skip
        if p is not None:
            chunk_rows.append(f"{name}_chunk_1\t{p >= 0.5}\t{1 - p!r}\t{p!r}\n")
        if call == c.CALL_VIRUS:
            region_rows.append(f"{name}\t1\t{length}\t1\t1\t{score}\t{score}\t1\n")
    for first, second in zip(seq_rows[::2], seq_rows[1::2]) if paired else ():
        first[-1] = second[-1] = c.CALL_VIRUS if c.CALL_VIRUS in (first[8], second[8]) else first[8]
    header = "\t".join(c.SEQUENCE_PREDICTIONS_HEADER) + "\n"
    (directory / c.SEQUENCE_PREDICTIONS).write_text(header + "".join("\t".join(row) + "\n" for row in seq_rows))
    (directory / c.PREDICTION_HIGHEST).write_text("\t".join(c.PREDICTION_HIGHEST_HEADER) + "\n" + "".join(chunk_rows))
    (directory / c.VIRAL_REGIONS).write_text("\t".join(c.VIRAL_REGIONS_HEADER) + "\n" + "".join(region_rows))
    if failures:
        (directory / c.FAILED_FILES).write_text("".join(line + "\n" for line in failures))
    summary = {
        "exit_status": 2 if failures else 0, "records": sequences, "calls": calls, "failures": len(failures),
        "pairs": sequences // 2 if paired else 0, "regions": {"count": len(region_rows), "max_gap": 1, "min_chunks": 1},
        "call_rule": {"virus_fraction": 0.5, "min_p_virus": None, "pair_rule": "any"}, "chunk_length": 300,
        "command": "classify", "timings_s": {"load_classifier": 1.5, "classify": 0.2 + seed / 100, "extract": 0.01},
        "models": {"classifier": {"chunk_length": 300, "dna_dim": 768, "esm_dim": 2560}},
        "extract": {"calls": ["virus"], "files": [{"input": "in.fq.gz", "call": "virus",
                    "path": f"{directory}/viral/in.viral.fq.gz", "records": calls[c.CALL_VIRUS]}], "skipped": {}},
        "versions": {"virnucpro": "0.1.0", "torch": "2.13.0"},
    }  # fmt: skip
    (directory / c.SUMMARY_JSON).write_text(json.dumps(summary))
    return directory


def engine_summary(path: Path, stage: str, device: str) -> Path:
    stats = {"busy_s": 12.5, "files": 4, "sequences": 9000, "tokens": 2_500_000, "workers": 1, "failures": 0,
             "precision": "bf16"}  # fmt: skip
    path.write_text(json.dumps({"command": f"embed-{stage}", "engine": {"stage": stage, "devices": {device: stats}}}))
    return path
