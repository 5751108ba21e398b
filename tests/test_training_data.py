"""Labelled sheets, GenBank training frames and splits (prepare-labelled; no models needed)."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest
from Bio import SeqIO
from Bio.Seq import Seq
from Bio.SeqFeature import FeatureLocation, SeqFeature
from Bio.SeqRecord import SeqRecord

from virnucpro import contracts as c
from virnucpro.cli import main
from virnucpro.errors import InputError
from virnucpro.frames import chunk_sequence, kept_frames, translate
from virnucpro.prepare import read_manifest, read_prepare_info
from virnucpro.seqio import read_fasta
from virnucpro.synthetic import codon_biased_sequence, write_labelled_set, write_reads
from virnucpro.training.labelled import read_labels
from virnucpro.training.splits import PARTS, SplitOptions, SplitRecord, make_split, read_split


def prepare_labelled(sheet: Path, outdir: Path, *extra: str) -> int:
    return main(["prepare-labelled", str(sheet), "--outdir", str(outdir), "--quiet", *extra])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.fixture
def toy(tmp_path) -> Path:
    return write_labelled_set(tmp_path / "data", groups=6, records=2, length=(400, 700), seed=3)


# --------------------------------------------------------------------------- bad sheets


@pytest.mark.parametrize(
    "content, expected",
    [
        ("file,label\nvirus001.fa,virus\n", "missing column 'path'"),
        ("path,class\nvirus001.fa,virus\n", "missing column 'label'"),
        ("path,label\nvirus001.fa,viral\nother001.fa,other\n", "line 2: unknown label 'viral' (virus or other)"),
        ("path,label\nvirus001.fa,virus\nvirus002.fa,virus\n", "no file labelled other"),
        ("path,label\nvirus001.fa,virus\nmissing.fa,other\n", "line 3: " + "{dir}/missing.fa: no such file"),
        ("path,label\nvirus001.fa,virus\nvirus001.fa,other\n", "line 3: {dir}/virus001.fa is also on line 2"),
        ("path,label,date\nvirus001.fa,virus,2020-13-01\nother001.fa,other,2020\n", "line 2: date '2020-13-01'"),
        ("path,label,host\nvirus001.fa,virus,x\n", "unknown column 'host'"),
        ("path,label\nvirus001.fa,virus,extra\n", "line 2: 3 fields, the header has 2"),
        ("path,label\nvirus001.fa,virus\nother001.fa,other\n", "--split group needs a 'group' column"),
    ],
)
def test_bad_sheets_get_one_line_errors(toy, tmp_path, capsys, content, expected):
    sheet = toy.parent / "bad.csv"
    sheet.write_text(content)
    extra = ["--split", "group"] if "group" in expected else []
    assert prepare_labelled(sheet, tmp_path / "out", *extra) == c.EXIT_FAILED
    line = one_error_line(capsys)
    assert expected.format(dir=toy.parent) in line and str(sheet) in line
    assert not (tmp_path / "out" / c.PREPARE_INFO).exists()


def test_a_sequence_in_two_groups_is_refused_by_a_group_split(toy, tmp_path, capsys):
    """The same genome listed under two group ids would sit on both sides of the split."""
    copy = toy.parent / "copy_of_virus001.fa"
    copy.write_bytes((toy.parent / "virus001.fa").read_bytes())
    sheet = toy.parent / "twice.csv"
    sheet.write_text(toy.read_text() + "copy_of_virus001.fa,virus,another_group\n")
    assert prepare_labelled(sheet, tmp_path / "out", "--split", "group") == c.EXIT_FAILED
    line = one_error_line(capsys)
    assert "group 'another_group'" in line and "group 'virus001'" in line and "both sides" in line
    # a sequence split keeps the two copies together instead
    assert prepare_labelled(sheet, tmp_path / "seq", "--split", "sequence") == c.EXIT_OK
    _, parts = read_split(tmp_path / "seq" / "split.tsv")
    copies = [key for key in parts if key.startswith("virus001_r0")]
    assert len(copies) == 2 and len({parts[key] for key in copies}) == 1


def test_a_part_without_one_label_is_refused(tmp_path, capsys):
    sheet = write_labelled_set(tmp_path / "data", groups=2, records=1, length=(400, 500))
    assert prepare_labelled(sheet, tmp_path / "out") == c.EXIT_FAILED  # 2 groups per label: no validation part
    assert "part has no frames labelled" in one_error_line(capsys)
    assert prepare_labelled(sheet, tmp_path / "out", "--validation-fraction", "0") == c.EXIT_OK


# --------------------------------------------------------------------------- prepared layout


def test_prepare_labelled_writes_the_prepare_layout_with_labels_and_split(toy, tmp_path):
    out = tmp_path / "out"
    assert prepare_labelled(toy, out, "--chunk-length", "150") == c.EXIT_OK
    info = read_prepare_info(out)
    assert info["chunk_length"] == 150 and info["labelled"]["split"]["method"] == "group"  # auto: group column
    labels = read_labels(out)
    manifest = list(read_manifest(out))
    assert [row.id for row in manifest] == list(labels)
    assert {row.label for row in labels.values()} == {"virus", "other"}
    assert all(row.frames_rule == "stop_free" for row in labels.values())
    # the frames are those `prepare` keeps for the same files
    plain = tmp_path / "plain"
    files = [row.path for row in _sheet_rows(toy)]
    assert main(["prepare", *files, "--outdir", str(plain), "--chunk-length", "150", "--quiet"]) == 0
    for name in (c.FRAMES_NUCLEOTIDE, c.FRAMES_PROTEIN, c.CHUNKS_FASTA):
        assert (out / name).read_bytes() == (plain / name).read_bytes()
    unit, parts = read_split(out / "split.tsv")
    assert unit == "sequence_id" and set(parts) == set(labels) and set(parts.values()) == set(PARTS)


def _sheet_rows(sheet: Path):
    from virnucpro.training.sheet import read_sheet

    return read_sheet(sheet).rows


def test_group_split_never_puts_a_group_on_two_sides_and_holds_its_fractions():
    for seed in range(30):
        rng = random.Random(seed)
        records = []
        for group in range(rng.randint(6, 40)):
            label = rng.choice(("virus", "other"))
            for k in range(rng.randint(1, 5)):
                records.append(SplitRecord(f"g{group}_{k}", label, f"g{group}", "", rng.randint(0, 30),
                                           f"d{group}_{k}", "sheet line"))  # fmt: skip
        if {r.label for r in records} != {"virus", "other"}:
            continue
        options = SplitOptions("group", 0.2, 0.1, seed)
        try:
            split = make_split(records, options, "group")
        except InputError as error:
            assert "part has no frames labelled" in str(error)
            continue
        group_parts: dict[str, set[str]] = {}
        for record in records:
            group_parts.setdefault(record.group, set()).add(split.parts[record.id])
        assert all(len(parts) == 1 for parts in group_parts.values())
        frames = sum(r.frames for r in records)
        test = sum(r.frames for r in records if split.parts[r.id] == "test")
        assert test >= 0.2 * frames * 0.5  # dealt until each label's share is reached


def test_date_split_tests_on_the_later_sequences():
    records = [
        SplitRecord(f"s{i}", label, "", f"20{10 + i}-06-01", 10, f"d{i}", "line")
        for i, label in enumerate(["virus", "other"] * 6)
    ]
    split = make_split(records, SplitOptions("date", 0.1, 0.2, 1, before="2018-01-01"), "date")
    dated = {r.id: r.date for r in records}
    assert all((dated[key] >= "2018-01-01") == (part == "test") for key, part in split.parts.items())
    validation = [dated[key] for key, part in split.parts.items() if part == "validation"]
    train = [dated[key] for key, part in split.parts.items() if part == "train"]
    assert validation and max(train) < min(validation)  # the latest of the earlier ones validate


def test_random_split_is_of_frames_and_warns(caplog):
    from helpers import captured_log

    records = [SplitRecord(f"s{i}", ("virus", "other")[i % 2], "", "", 10, f"d{i}", "line") for i in range(20)]
    frames = [(f"s{i}_chunk_{k}F1", f"s{i}") for i in range(20) for k in range(10)]
    with captured_log(caplog):
        split = make_split(records, SplitOptions("random", 0.1, 0.1, 42), "random", frames)
    assert split.unit == "frame_id" and len(split.parts) == 200
    assert sum(part == "test" for part in split.parts.values()) == 20
    assert "optimistic" in caplog.text
    again = make_split(records, SplitOptions("random", 0.1, 0.1, 42), "random", frames)
    assert again.parts == split.parts and again.describe()["sha256"] == split.describe()["sha256"]


def test_split_options_are_checked():
    with pytest.raises(InputError, match="together below 1"):
        SplitOptions("group", 0.6, 0.5)
    with pytest.raises(InputError, match="--before"):
        SplitOptions("date")


# --------------------------------------------------------------------------- GenBank


def _genbank_record(rng: random.Random, name: str) -> tuple[SeqRecord, str, str]:
    """A record: a CDS of 600 bp (with its translation), then 600 bp without annotation."""
    cds = "ATG" + codon_biased_sequence(rng, 594, 1.0) + "TAA"
    rest = codon_biased_sequence(rng, 600, 1.0)
    record = SeqRecord(Seq(cds + rest), id=f"{name}.1", name=name, description="synthetic",
                       annotations={"molecule_type": "DNA"})  # fmt: skip
    feature = SeqFeature(FeatureLocation(0, len(cds)), type="CDS")
    feature.qualifiers["translation"] = [translate(cds)[:-1]]  # without the stop, as GenBank writes it
    record.features.append(feature)
    return record, cds, rest


def test_genbank_records_keep_only_frames_inside_their_cds(tmp_path):
    rng = random.Random(5)
    record, cds, rest = _genbank_record(rng, "GEN1")
    ambiguous, _, _ = _genbank_record(rng, "GEN2")
    ambiguous.seq = Seq(str(ambiguous.seq)[:100] + "N" + str(ambiguous.seq)[101:])
    path = tmp_path / "genomes.gbk.gz"
    with gzip.open(path, "wt") as handle:
        SeqIO.write([record, ambiguous], handle, "genbank")
    fasta = tmp_path / "others.fa"
    write_reads(fasta, [("other1", codon_biased_sequence(rng, 900, 0.6))])
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"path,label\n{path.name},virus\n{fasta.name},other\n")
    out = tmp_path / "out"
    assert prepare_labelled(sheet, out, "--no-split") == c.EXIT_OK
    rules = {row.id: row.frames_rule for row in read_labels(out).values()}
    assert rules == {"GEN1.1": "cds", "GEN2.1": "cds", "other1": "stop_free"}
    frames = dict(read_fasta(out / c.FRAMES_PROTEIN))
    protein = translate(cds)
    gen1 = {k: v for k, v in frames.items() if k.startswith("GEN1.1_")}
    assert gen1 and all(v in protein for v in gen1.values())
    all_gen1 = [f for cid, chunk in chunk_sequence("GEN1.1", cds + rest, 300) for f in kept_frames(cid, chunk)]
    assert len(all_gen1) > len(gen1)  # the frames outside the CDS (or in other frames) were dropped
    assert "GEN1.1_chunk_1F1" in frames  # the CDS's own frame of its first chunk ...
    assert not any(k.startswith("GEN2.1_chunk_1") for k in frames)  # ... skipped where the chunk has an N
    assert not (out / "split.tsv").exists()
    # --genbank-frames all: every stop-free frame, as predict
    assert prepare_labelled(sheet, tmp_path / "all", "--no-split", "--genbank-frames", "all") == c.EXIT_OK
    assert len([k for k, _ in read_fasta(tmp_path / "all" / c.FRAMES_PROTEIN) if k.startswith("GEN1.1_")]) == len(all_gen1)


def test_a_damaged_genbank_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "bad.gbk"
    path.write_text("LOCUS       X 10 bp DNA\nORIGIN\n        1 acgtzzzzzz\n//\n")
    fasta = tmp_path / "o.fa"
    write_reads(fasta, [("o1", "ACGT" * 50)])
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("path,label\nbad.gbk,virus\no.fa,other\n")
    assert prepare_labelled(sheet, tmp_path / "out", "--no-split") == c.EXIT_FAILED
    line = one_error_line(capsys)
    assert line.startswith(f"virnucpro: error: {path}: record 1 (X): not a nucleotide sequence")
