"""Sequences out: input records of chosen calls, byte for byte, streaming, checked against prepare."""

from __future__ import annotations

import gzip
import io
import logging
import random
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest

from virnucpro import contracts as c
from virnucpro.errors import InputError
from virnucpro.extract import extract_sequences, parse_extract, plan_extraction, raw_records
from virnucpro.prepare import prepare, read_manifest
from virnucpro.seqio import read_file

from helpers import captured_log
from sample_data import records_of, write_synthetic_sample

TRICKY = {
    "fasta_wrapped_crlf_bom": (
        b"\xef\xbb\xbf>a desc here\r\nACGT\r\nAC\r\n\r\n>b\nGG GG\n\n\n>c\nTT",
        [b">a desc here\r\nACGT\r\nAC\r\n", b">b\nGG GG\n", b">c\nTT\n"],
    ),
    "fasta_empty_record": (b">e\n>f x\nAC\n", [b">e\n", b">f x\nAC\n"]),
    "fastq_wrapped_at_quality": (
        b"\n@r1 c\nACGT\nAC\n+\n@@II\nII\n\n@r2\nACG\n+r2\n@I@\n@r3\n\n+\n",
        [b"@r1 c\nACGT\nAC\n+\n@@II\nII\n", b"@r2\nACG\n+r2\n@I@\n", b"@r3\n\n+\n"],
    ),
    "fastq_crlf_no_final_break": (b"@q1\r\nAC\r\n+\r\nII\r\n@q2\r\nGT\r\n+\r\nII", [b"@q1\r\nAC\r\n+\r\nII\r\n", b"@q2\r\nGT\r\n+\r\nII\n"]),
}


@pytest.mark.parametrize("name", list(TRICKY))
def test_raw_records_have_the_parsers_boundaries(tmp_path: Path, name: str) -> None:
    content, expected = TRICKY[name]
    path = tmp_path / "in.txt"
    path.write_bytes(content)
    fmt = "fastq" if name.startswith("fastq") else "fasta"
    raw = list(raw_records(io.BytesIO(content), fmt))
    assert [record.data for record in raw] == expected
    assert [(record.id, record.length) for record in raw] == [(i, len(seq)) for i, seq in read_file(str(path))]


def test_parse_extract() -> None:
    assert parse_extract("virus") == ("virus",)
    assert parse_extract("virus,others,virus") == ("virus", "others")
    assert parse_extract("none") == ()
    for bad, why in (("viral", "'viral' is not a call"), ("virus,none", "none cannot be combined"),
                     ("", "an empty entry"), ("virus,,others", "an empty entry")):  # fmt: skip
        with pytest.raises(InputError, match=why):
            parse_extract(bad)


def write_calls(prepared: Path, path: Path, seed: int = 0) -> list[tuple[str, str]]:
    """A sequence table with random pair calls (the same for both mates); returns (source, call) per row."""
    rng = random.Random(seed)
    rows, call = [], ""
    for row in read_manifest(prepared):
        if row.mate != 2:
            call = rng.choice(c.CALLS)
        rows.append((row.original_id, str(row.length), row.source, call))
    path.write_text("original_id\tlength\tsource\tpair_call\n" + "".join("\t".join(r) + "\n" for r in rows))
    return [(source, call) for _, _, source, call in rows]


@pytest.fixture(scope="module")
def prepared_sample(tmp_path_factory) -> tuple:
    root = tmp_path_factory.mktemp("extract")
    sample = write_synthetic_sample(root / "in")
    prepare(sample.inputs, root / "prepared", 300)
    calls = write_calls(root / "prepared", root / "table.tsv")
    return sample, root, calls


def test_extracted_records_are_byte_equal_and_mates_in_step(prepared_sample, tmp_path: Path) -> None:
    sample, root, calls = prepared_sample
    plan = plan_extraction(root / "prepared", ("virus", "others"))
    result = extract_sequences(plan, root / "table.tsv", tmp_path)
    names = sorted(path.name for path in (tmp_path / c.EXTRACT_DIR).iterdir())
    assert names == sorted(
        f"{stem}.{label}.{ext}"
        for stem, ext in (("contigs", "fa.gz"), ("lib1_R1", "fq.gz"), ("lib1_R2", "fq.gz"), ("lib2_R1", "fq.gz"),
                          ("lib2_R2", "fq.gz"))
        for label in ("viral", "others")
    )  # fmt: skip
    for path, fmt in ((sample.contigs, "fasta"), *((p, "fastq") for p in (*sample.casava, *sample.slashed))):
        inputs = records_of(path, fmt)
        own = [call for source, call in calls if source == str(path)]
        assert len(own) == len(inputs)
        stem = path.name.split(".")[0]
        ext = "fa.gz" if fmt == "fasta" else "fq.gz"
        for call, label in (("virus", "viral"), ("others", "others")):
            written = gzip.decompress((tmp_path / c.EXTRACT_DIR / f"{stem}.{label}.{ext}").read_bytes())
            assert written == b"".join(record for record, mine in zip(inputs, own) if mine == call)
    for first, second in (sample.casava, sample.slashed):  # both mates of every pair, same order
        for label in ("viral", "others"):
            ones = records_of(tmp_path / c.EXTRACT_DIR / f"{first.name.split('.')[0]}.{label}.fq.gz", "fastq")
            twos = records_of(tmp_path / c.EXTRACT_DIR / f"{second.name.split('.')[0]}.{label}.fq.gz", "fastq")
            assert len(ones) == len(twos)
            assert [r.split()[0].removesuffix(b"/1") for r in ones] == [r.split()[0].removesuffix(b"/2") for r in twos]
    counts = {(e["input"], e["call"]): e["records"] for e in result.to_dict()["files"]}
    assert counts[(str(sample.contigs), "virus")] == sum(1 for s, k in calls if s == str(sample.contigs) and k == "virus")


def test_same_records_give_the_same_bytes(prepared_sample, tmp_path: Path) -> None:
    _, root, _ = prepared_sample
    plan = plan_extraction(root / "prepared", ("virus",))
    for out in ("a", "b"):
        extract_sequences(plan, root / "table.tsv", tmp_path / out)
    for path in (tmp_path / "a" / c.EXTRACT_DIR).iterdir():
        assert path.read_bytes() == (tmp_path / "b" / c.EXTRACT_DIR / path.name).read_bytes()


def test_inputs_elsewhere_are_checked_to_be_the_prepared_files(prepared_sample, tmp_path: Path) -> None:
    sample, root, _ = prepared_sample
    moved = [tmp_path / Path(p).name for p in sample.inputs]
    for source, target in zip(sample.inputs, moved):
        target.write_bytes(Path(source).read_bytes())
    plan = plan_extraction(root / "prepared", ("virus",), [str(p) for p in moved])
    result = extract_sequences(plan, root / "table.tsv", tmp_path / "out")
    assert not result.skipped and len(result.files) == 5
    with pytest.raises(InputError, match=r"--input: 1 file\(s\) given, the prepared sample has 5"):
        plan_extraction(root / "prepared", ("virus",), [str(moved[0])])
    with pytest.raises(InputError, match="no such file"):
        plan_extraction(root / "prepared", ("virus",), [str(tmp_path / "gone.fa"), *map(str, moved[1:])])
    swapped = [moved[1], moved[0], *moved[2:]]
    with pytest.raises(InputError, match=r"lib1_R1.fastq.gz: not the file prepared as .*contigs.fa: \d+ bytes, prepared"):
        plan_extraction(root / "prepared", ("virus",), [str(p) for p in swapped])


def test_a_changed_file_of_the_same_size_leaves_no_output(prepared_sample, tmp_path: Path) -> None:
    sample, root, _ = prepared_sample
    copies = [tmp_path / Path(p).name for p in sample.inputs]
    for source, target in zip(sample.inputs, copies):
        target.write_bytes(Path(source).read_bytes())
    data = copies[0].read_bytes()
    copies[0].write_bytes(data[:-2] + (b"A\n" if data[-2:] != b"A\n" else b"C\n"))  # last base changed
    plan = plan_extraction(root / "prepared", ("virus",), [str(p) for p in copies])
    with pytest.raises(InputError, match=r"contigs.fa: not the file prepared as .* \(its sha256 differs\)"):
        extract_sequences(plan, root / "table.tsv", tmp_path / "out")
    assert not list((tmp_path / "out" / c.EXTRACT_DIR).glob("contigs*"))  # nothing half-written under a final name
    renamed = data.replace(b">contig000001", b">contig000009", 1)
    copies[0].write_bytes(renamed)
    plan = plan_extraction(root / "prepared", ("virus",), [str(p) for p in copies])
    with pytest.raises(InputError, match=r"contigs.fa: record 1 is contig000009_\w+ \(\d+ bp\), prepared as contig000001"):
        extract_sequences(plan, root / "table.tsv", tmp_path / "out")


def test_a_changed_mate_file_leaves_neither_mate(prepared_sample, tmp_path: Path) -> None:
    sample, root, _ = prepared_sample
    r2 = tmp_path / "lib1_R2.fastq.gz"  # its first two records swapped
    lines = gzip.decompress(Path(sample.casava[1]).read_bytes()).splitlines(keepends=True)
    r2.write_bytes(gzip.compress(b"".join(lines[4:8] + lines[0:4] + lines[8:])))
    plan = plan_extraction(root / "prepared", ("virus",))
    plan.sources = [replace(s, path=str(r2)) if s.prepared == str(sample.casava[1]) else s for s in plan.sources]
    with pytest.raises(InputError, match=r"lib1_R2.fastq.gz: record 1 is M00123\S+ \(\d+ bp\), prepared as"):
        extract_sequences(plan, root / "table.tsv", tmp_path / "out")
    left = sorted(path.name for path in (tmp_path / "out" / c.EXTRACT_DIR).iterdir())
    assert left == ["contigs.viral.fa.gz"]  # the input before the pair is done; neither mate's file is left


def test_inputs_that_are_gone_or_streams_are_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    reads = tmp_path / "reads.fa"
    reads.write_text(">a\nACGT\n")
    prepare([reads], tmp_path / "prepared", 300)
    reads.unlink()
    with captured_log(caplog):
        plan = plan_extraction(tmp_path / "prepared", ("virus",))
    assert not plan.sources and "give the input files with --input" in plan.skipped[str(reads)]
    assert any(r.levelno == logging.WARNING and "no sequences extracted" in r.getMessage() for r in caplog.records)
    assert plan_extraction(tmp_path / "prepared", ()).sources == []  # --extract none: inputs not needed


def synthetic_fastq(path: Path, reads: int) -> None:
    rng = random.Random(reads)
    with gzip.open(path, "wt", compresslevel=1) as handle:
        for number in range(reads):
            seq = "".join(rng.choices("ACGT", k=150))
            handle.write(f"@r{number} 1:N:0\n{seq}\n+\n{'I' * 150}\n")


def fake_prepared(directory: Path, reads_path: Path, reads: int) -> Path:
    """prepare.json and a sequence table for ``reads_path`` without running prepare (every read virus)."""
    import json

    from virnucpro.seqio import file_sha256

    directory.mkdir()
    info = {"format": 2, "inputs": [{"path": str(reads_path), "sha256": file_sha256(reads_path),
                                     "size": reads_path.stat().st_size}]}  # fmt: skip
    (directory / c.PREPARE_INFO).write_text(json.dumps(info))
    with open(directory / "table.tsv", "w") as handle:
        handle.write("original_id\tlength\tsource\tpair_call\n")
        for number in range(reads):
            handle.write(f"r{number}\t150\t{reads_path}\tvirus\n")
    return directory


@pytest.mark.slow
def test_memory_stays_flat_in_the_number_of_reads(tmp_path: Path) -> None:
    """Peak Python memory of extracting 4,000 and 40,000 reads (every one selected) is the same
    within 1 MiB; holding 40,000 records would take more than 10 MiB."""
    peaks = []
    for reads in (4_000, 40_000):
        reads_path = tmp_path / f"reads{reads}.fq.gz"
        synthetic_fastq(reads_path, reads)
        prepared = fake_prepared(tmp_path / f"prepared{reads}", reads_path, reads)
        plan = plan_extraction(prepared, ("virus",))
        tracemalloc.start()
        try:
            result = extract_sequences(plan, prepared / "table.tsv", tmp_path / f"out{reads}")
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert result.files[0]["records"] == reads
    assert peaks[1] - peaks[0] < 1 << 20, peaks
