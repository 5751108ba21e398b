"""The prepare stage: outputs, manifest, residue-balanced shards, atomicity, streaming, assets."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from virnucpro import contracts as c
from virnucpro.cli import main
from virnucpro.errors import InputError
from virnucpro.frames import chunk_sequence, kept_frames
from virnucpro.prepare import (
    ManifestRow,
    list_shards,
    prepare,
    prepare_is_current,
    read_manifest,
    read_prepare_info,
    shard_paths,
)
from virnucpro.seqio import read_fasta, read_records
from virnucpro.synthetic import ASSETS, synthetic_reads, write_assets, write_reads

from helpers import captured_log

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
ASSET_FILES = [ASSETS_DIR / name for name in ASSETS]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    outdir = tmp_path_factory.mktemp("prepared")
    result = prepare(ASSET_FILES, outdir, 300, shard_size=700)
    return outdir, result


def test_manifest_rows_follow_input_order(prepared: tuple[Path, object]) -> None:
    outdir, result = prepared
    records = list(read_records(ASSET_FILES))
    rows = list(read_manifest(outdir))
    assert (outdir / c.MANIFEST).read_text().splitlines()[0].split("\t") == list(c.MANIFEST_COLUMNS)
    assert [row.id for row in rows] == [record.id for record in records]
    for row, record in zip(rows, records):
        chunks = chunk_sequence(record.id, record.seq, 300)
        frames = [frame for chunk_id, chunk in chunks for frame in kept_frames(chunk_id, chunk)]
        assert row == ManifestRow(record.id, record.original_id, record.source, len(record.seq), len(chunks), len(frames))
    assert result.records == len(rows) == 60
    assert result.chunks == sum(row.chunks for row in rows)
    assert result.frames == sum(row.kept_frames for row in rows) > 0
    assert tuple(f.name for f in ManifestRow.__dataclass_fields__.values()) == c.MANIFEST_COLUMNS


def test_chunks_and_frames_files(prepared: tuple[Path, object]) -> None:
    outdir, result = prepared
    chunks = list(read_fasta(outdir / c.CHUNKS_FASTA))
    expected_chunks = [chunk for r in read_records(ASSET_FILES) for chunk in chunk_sequence(r.id, r.seq, 300)]
    assert chunks == expected_chunks
    expected = [frame for chunk_id, chunk in chunks for frame in kept_frames(chunk_id, chunk)]
    nucleotide = list(read_fasta(outdir / c.FRAMES_NUCLEOTIDE))
    protein = list(read_fasta(outdir / c.FRAMES_PROTEIN))
    assert nucleotide == [(f.id, f.nucleotide) for f in expected]
    assert protein == [(f.id, f.protein) for f in expected]
    assert result.residues == sum(len(seq) for _, seq in protein)
    # one line per sequence, no wrapping
    assert (outdir / c.FRAMES_PROTEIN).read_text().count("\n") == 2 * len(protein)


def test_shards_are_balanced_and_match_the_frames(prepared: tuple[Path, object]) -> None:
    outdir, result = prepared
    stems = list_shards(outdir)
    assert stems == result.shards == [f"shard_{i:05d}" for i in range(len(stems))]
    assert len(stems) > 2
    all_nucleotide: list[tuple[str, str]] = []
    all_protein: list[tuple[str, str]] = []
    residues = []
    for stem in stems:
        nucleotide_path, protein_path = shard_paths(outdir, stem)
        assert nucleotide_path.parent == outdir / c.SHARD_NUCLEOTIDE_DIR
        assert protein_path.parent == outdir / c.SHARD_PROTEIN_DIR
        nucleotide, protein = list(read_fasta(nucleotide_path)), list(read_fasta(protein_path))
        assert [i for i, _ in nucleotide] == [i for i, _ in protein]
        all_nucleotide += nucleotide
        all_protein += protein
        residues.append(sum(len(seq) for _, seq in protein))
        last_chunk = protein[-1][0][:-2]
        residues_before_last_chunk = sum(len(seq) for i, seq in protein if i[:-2] != last_chunk)
        assert residues_before_last_chunk < 700  # a new shard starts only once 700 residues are reached
    assert all(r >= 700 for r in residues[:-1])
    assert all_nucleotide == list(read_fasta(outdir / c.FRAMES_NUCLEOTIDE))
    assert all_protein == list(read_fasta(outdir / c.FRAMES_PROTEIN))
    chunk_of_shard = {}
    for stem in stems:
        for frame_id, _ in read_fasta(shard_paths(outdir, stem)[1]):
            assert chunk_of_shard.setdefault(frame_id[:-2], stem) == stem  # never split across shards


def test_prepare_info_and_is_current(prepared: tuple[Path, object], tmp_path: Path) -> None:
    outdir, result = prepared
    info = read_prepare_info(outdir)
    assert info["chunk_length"] == 300 and info["shard_size"] == 700
    assert [entry["path"] for entry in info["inputs"]] == [str(p) for p in ASSET_FILES]
    assert info["frames"] == result.frames and info["shards"] == result.shards
    assert prepare_is_current(outdir, ASSET_FILES, 300, 700)
    assert not prepare_is_current(outdir, ASSET_FILES, 500, 700)
    assert not prepare_is_current(outdir, ASSET_FILES, 300, 1000)
    assert not prepare_is_current(outdir, ASSET_FILES[:1], 300, 700)
    assert not prepare_is_current(tmp_path, ASSET_FILES, 300, 700)
    with pytest.raises(InputError, match="prepare"):
        read_prepare_info(tmp_path)


def test_rerun_replaces_outputs_and_changed_input_is_not_current(tmp_path: Path) -> None:
    reads = tmp_path / "reads.fa"
    write_reads(reads, synthetic_reads(40, 400, coding_fraction=1.0, seed=11))
    outdir = tmp_path / "out"
    first = prepare([reads], outdir, 300, shard_size=500)
    assert len(first.shards) > 3
    assert prepare_is_current(outdir, [reads], 300, 500)
    write_reads(reads, synthetic_reads(5, 400, coding_fraction=1.0, seed=12))
    assert not prepare_is_current(outdir, [reads], 300, 500)
    second = prepare([reads], outdir, 300, shard_size=500)
    assert list_shards(outdir) == second.shards and len(second.shards) < len(first.shards)
    assert sum(1 for _ in read_manifest(outdir)) == 5


def _pipe_path(text: str) -> str:
    """A path to a pipe holding ``text`` (like ``/dev/stdin`` or ``<(zcat ...)``): it can be read once."""
    read_end, write_end = os.pipe()
    os.write(write_end, text.encode())
    os.close(write_end)
    return f"/dev/fd/{read_end}"


def test_resume_does_not_use_up_a_stream(tmp_path: Path) -> None:
    """--resume cannot check a stream without reading it, so prepare runs again and reads it whole."""
    first_reads = synthetic_reads(6, 400, coding_fraction=1.0, seed=21)
    second_reads = synthetic_reads(4, 400, coding_fraction=1.0, seed=22)
    outdir = tmp_path / "out"
    texts = []
    for reads in (first_reads, second_reads):
        write_reads(tmp_path / "reads.fa", reads)
        texts.append((tmp_path / "reads.fa").read_text())
    first, second = _pipe_path(texts[0]), _pipe_path(texts[1])
    try:
        assert prepare([first], outdir, 300).records == 6
        assert not prepare_is_current(outdir, [second], 300)
        assert prepare([second], outdir, 300).records == 4
    finally:
        for stream in (first, second):
            os.close(int(stream.rsplit("/", 1)[1]))


@pytest.mark.slow
def test_cli_reads_standard_input_as_dash(tmp_path: Path) -> None:
    text = ">r1\n" + "ATG" * 120 + "\n>r2\n" + "ATGAAA" * 60 + "\n"
    command = [sys.executable, "-m", "virnucpro", "prepare", "-", "--outdir", str(tmp_path / "out"), "-q"]
    done = subprocess.run(command, input=text.encode(), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert [(row.id, row.source) for row in read_manifest(tmp_path / "out")] == [("r1", "/dev/stdin"), ("r2", "/dev/stdin")]
    terminal, other_end = os.openpty()
    try:
        waiting = subprocess.run(command, stdin=other_end, capture_output=True, timeout=120)
    finally:
        os.close(terminal)
        os.close(other_end)
    assert waiting.returncode == 1
    assert waiting.stderr.decode().count("\n") == 1 and "terminal here: pipe the sequences in" in waiting.stderr.decode()


def test_no_kept_frame_gives_no_shard(tmp_path: Path) -> None:
    reads = tmp_path / "n.fa"
    reads.write_text(">a\nNNNNNNNNNNNN\n>b\nAC\n>empty\n\n")
    result = prepare([reads], tmp_path / "out", 300)
    assert (result.records, result.chunks, result.frames, result.shards) == (3, 3, 0, [])
    assert list_shards(tmp_path / "out") == []
    assert (tmp_path / "out" / c.FRAMES_PROTEIN).read_text() == ""
    assert [(r.chunks, r.kept_frames) for r in read_manifest(tmp_path / "out")] == [(1, 0), (1, 0), (1, 0)]


def test_rna_letters_are_not_translated_and_are_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reads = tmp_path / "rna.fa"
    reads.write_text(">dna\nATGAAACCC\n>rna1\nAUGAAACCC\n>rna2\nUUUUUU\n")
    with captured_log(caplog):
        result = prepare([reads], tmp_path / "out", 300)
    assert result.records == 3  # kept, with the reference's translation (codons with U dropped)
    proteins = dict(read_fasta(tmp_path / "out" / c.FRAMES_PROTEIN))
    assert proteins["rna1_chunk_1F1"] == "KP" and proteins["dna_chunk_1F1"] == "MKP"
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "2 record(s) contain U" in warning and "first: rna1" in warning and "write U as T" in warning


def test_failed_prepare_leaves_no_output(tmp_path: Path) -> None:
    good = tmp_path / "good.fa"
    write_reads(good, synthetic_reads(50, 600, coding_fraction=1.0, seed=5))
    bad = tmp_path / "bad.fa"
    bad.write_text(">ok\nACGT\n>p\nMEEPQLLS\n")
    outdir = tmp_path / "out"
    prepare([good], outdir, 300, shard_size=300)  # an earlier complete run
    with pytest.raises(InputError, match="bad.fa"):
        prepare([good, bad], outdir, 300, shard_size=300)
    names = {p.name for p in outdir.rglob("*") if p.is_file()}
    assert not {c.MANIFEST, "prepare.json"} & names  # no completion marker of a mixed run
    assert not any(name.startswith(".") for name in names)  # no temporary files left behind
    assert list_shards(outdir) == []


def test_duplicate_ids_stay_visible_in_manifest(tmp_path: Path) -> None:
    a = tmp_path / "a.fa"
    a.write_text(">r\nATGAAACCC\n>r\nATGAAAGGG\n")
    b = tmp_path / "b.fq.gz"
    b.write_bytes(gzip.compress(b"@r\nATGCCC\n+\nIIIIII\n"))
    prepare([a, b], tmp_path / "out", 300)
    rows = list(read_manifest(tmp_path / "out"))
    assert [(r.id, r.original_id, r.source) for r in rows] == [("r", "r", str(a)), ("r_dup2", "r", str(a)), ("r_dup3", "r", str(b))]
    frame_ids = [i for i, _ in read_fasta(tmp_path / "out" / c.FRAMES_PROTEIN)]
    assert len(frame_ids) == len(set(frame_ids))
    assert "r_dup2_chunk_1F1" in frame_ids


def _peak_bytes(reads: int, tmp_path: Path) -> int:
    path = tmp_path / f"{reads}.fa.gz"
    write_reads(path, synthetic_reads(reads, 3000, coding_fraction=0.5, seed=reads), gzip=True)
    tracemalloc.start()
    try:
        prepare([path], tmp_path / f"out{reads}", 500)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_prepare_memory_does_not_grow_with_input(tmp_path: Path) -> None:
    small = _peak_bytes(100, tmp_path)  # 0.3 Mbp
    large = _peak_bytes(1600, tmp_path)  # 4.8 Mbp: 16x the input
    assert large - small < 1_000_000, (small, large)


def test_cli_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outdir = tmp_path / "out"
    args = ["prepare", *map(str, ASSET_FILES), "--outdir", str(outdir), "--chunk-length", "500", "--shard-size", "2000"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "60 records" in err
    assert read_prepare_info(outdir)["chunk_length"] == 500
    assert main([*args, "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["prepare", str(ASSET_FILES[0]), "--outdir", str(outdir), "--chunk-length", "0"]) == 1
    assert main(["prepare", "--outdir", str(outdir)]) == 1
    capsys.readouterr()
    assert main(["prepare", str(tmp_path / "nope.fa"), "--outdir", str(tmp_path / "new")]) == 1
    assert capsys.readouterr().err == f"virnucpro: error: {tmp_path / 'nope.fa'}: no such file\n"
    assert not (tmp_path / "new").exists()  # the input is checked before the output directory is made


def test_bundled_assets_are_reproducible(tmp_path: Path) -> None:
    for fresh in write_assets(tmp_path):
        bundled = ASSETS_DIR / fresh.name
        read = gzip.decompress if fresh.suffix == ".gz" else (lambda data: data)
        assert read(fresh.read_bytes()) == read(bundled.read_bytes()), fresh.name
    records = list(read_records(ASSET_FILES))
    assert 50 <= len(records) <= 70
    assert {r.id.rsplit("_", 1)[1] for r in records} == {"coding", "random"}
    assert max(len(chunk_sequence(r.id, r.seq, 300)) for r in records) >= 3
    assert all(150 <= len(r.seq) <= 700 for r in records)
