"""What users take away, end to end: `virnucpro predict` and the pipeline's stages (prepare,
embed-dna, embed-esm, classify, summarize) on a sample of long contigs and paired FASTQ.gz, with
tiny test models: the same regions, pair calls, extracted sequences, report and MultiQC files."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from virnucpro import contracts as c
from virnucpro.cli import main
from virnucpro.frames import chunk_bounds
from virnucpro.multiqc import file_names
from virnucpro.pairs import pair_call, read_sample_records
from virnucpro.seqio import read_fasta

from helpers import model_args, read_tsv
from sample_data import records_of, write_synthetic_sample

pytestmark = pytest.mark.slow

TABLES = (c.PREDICTION_RESULTS, c.PREDICTION_HIGHEST, c.SEQUENCE_PREDICTIONS, c.VIRAL_REGIONS)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_synthetic_sample(tmp_path_factory.mktemp("sample") / "in")


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, test_models, sample) -> Path:
    outdir = tmp_path_factory.mktemp("predict") / "sample1"
    assert main(["predict", *sample.inputs, "--outdir", str(outdir), *model_args(test_models)]) == c.EXIT_OK
    return outdir


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, test_models, sample) -> Path:
    """The pipeline's commands, each in a directory of its own; classify reads copies of the inputs (--input)."""
    root = tmp_path_factory.mktemp("pipeline")
    prepared = root / "prepare" / "prepared"
    assert main(["prepare", *sample.inputs, "--outdir", str(prepared), "--quiet"]) == c.EXIT_OK
    embeddings = {}
    for kind, sub, model in (("dna", "nucleotide", test_models.dna), ("esm", "protein", test_models.esm)):
        shards = sorted(str(p) for p in (prepared / "shards" / sub).glob("shard_*.fa"))
        embeddings[kind] = root / f"embed_{kind}"
        args = [f"embed-{kind}", *shards, "--outdir", str(embeddings[kind]), f"--{kind}-model", str(model), "--quiet"]
        assert main(args) == c.EXIT_OK
    staged = root / "classify_task"
    staged.mkdir()
    copies = []
    for path in sample.inputs:
        copies.append(str(staged / Path(path).name))
        shutil.copyfile(path, copies[-1])
    outdir = root / "results" / "sample1"
    args = ["classify", "--prepared", str(prepared), "--dna-embeddings", str(embeddings["dna"]),
            "--esm-embeddings", str(embeddings["esm"]), "--outdir", str(outdir), "--classifier",
            str(test_models.classifier), *(a for path in copies for a in ("--input", path)), "--quiet"]  # fmt: skip
    assert main(args) == c.EXIT_OK
    engine = [str(embeddings[kind] / c.SUMMARY_JSON) for kind in ("dna", "esm")]
    args = ["summarize", str(outdir), "--outdir", str(root / "results" / "pipeline_info"), "--quiet"]
    assert main([*args, *(a for path in engine for a in ("--engine-summary", path))]) == c.EXIT_OK
    return root / "results"


def test_predict_writes_every_file(predicted: Path, sample) -> None:
    for name in (*TABLES, c.SUMMARY_JSON, c.REPORT_HTML):
        assert (predicted / name).is_file(), name
    viral = sorted(path.name for path in (predicted / c.EXTRACT_DIR).iterdir())
    assert viral == ["contigs.viral.fa.gz", "lib1_R1.viral.fq.gz", "lib1_R2.viral.fq.gz", "lib2_R1.viral.fq.gz",
                     "lib2_R2.viral.fq.gz"]  # fmt: skip
    assert sorted(p.name for p in (predicted / c.MULTIQC_DIR).iterdir()) == sorted(file_names("sample1"))
    summary = json.loads((predicted / c.SUMMARY_JSON).read_text())
    assert summary["call_rule"] == {"virus_fraction": 0.5, "min_p_virus": None, "pair_rule": "any"}
    assert summary["pairs"] == 40 and summary["pairing"] == "auto"
    assert summary["regions"]["count"] == len(read_tsv(predicted / c.VIRAL_REGIONS)) > 0
    assert summary["extract"]["calls"] == ["virus"] and not summary["extract"]["skipped"]
    assert "extract" in summary["timings_s"]


def test_mates_are_adjacent_and_share_their_pair_call(predicted: Path, sample) -> None:
    rows = read_tsv(predicted / c.SEQUENCE_PREDICTIONS)
    assert [r["source"] for r in rows[:5]] == [str(sample.contigs)] * 5
    assert [r["mate"] for r in rows[:5]] == ["NA"] * 5 and all(r["pair_call"] == r["call"] for r in rows[:5])
    mates = rows[5:]
    assert len(mates) == 80 and [r["mate"] for r in mates] == ["1", "2"] * 40
    for one, two in zip(mates[::2], mates[1::2]):
        assert one["id"].removesuffix("/1") == two["id"].removesuffix("/2")
        assert one["pair_call"] == two["pair_call"] == pair_call(one["call"], two["call"], "any")
    assert {r["source"] for r in mates[:50]} == {str(p) for p in sample.casava}


def test_regions_agree_with_the_chunk_calls(predicted: Path) -> None:
    sequences = {r["id"]: r for r in read_tsv(predicted / c.SEQUENCE_PREDICTIONS)}
    chunks = {r["Modified_ID"]: r["Is_Virus"] == "True" for r in read_tsv(predicted / c.PREDICTION_HIGHEST)}
    chunk_seqs = dict(read_fasta(predicted / "work" / "prepared" / c.CHUNKS_FASTA))
    expected = []
    for seq_id, row in sequences.items():
        length = int(row["length"])
        virus = [k for k in range(1, int(row["chunks"]) + 1) if chunks.get(f"{seq_id}_chunk_{k}")]
        runs: list[list[int]] = []
        for k in virus:  # --region-max-gap 1: at most one chunk that is not virus between two
            (runs[-1].append(k) if runs and k - runs[-1][-1] <= 2 else runs.append([k]))
        bounds = chunk_bounds(length, 300)
        expected += [(seq_id, str(bounds[run[0] - 1][0] + 1), str(bounds[run[-1] - 1][1]), str(len(run))) for run in runs]
    regions = read_tsv(predicted / c.VIRAL_REGIONS)
    assert [(r["id"], r["start"], r["end"], r["virus_chunks"]) for r in regions] == expected
    assert any(int(r["chunks"]) > 1 for r in regions)  # the long contigs have multi-chunk regions
    records = {record.id: record.seq for record in read_sample_records([str(p) for p in _inputs(predicted)], _mates)}
    by_id = {(r["id"], r["start"]): r for r in regions}
    for seq_id, start, end, _ in expected:  # the region's bases begin and end with its virus chunks' bases
        region, bases = by_id[(seq_id, start)], records[seq_id][int(start) - 1 : int(end)]
        virus = [k for k in range(1, int(sequences[seq_id]["chunks"]) + 1) if chunks.get(f"{seq_id}_chunk_{k}")]
        first = next(k for k in virus if chunk_bounds(int(sequences[seq_id]["length"]), 300)[k - 1][0] + 1 == int(start))
        last = next(k for k in reversed(virus) if chunk_bounds(int(sequences[seq_id]["length"]), 300)[k - 1][1] == int(end))
        assert bases.startswith(chunk_seqs[f"{seq_id}_chunk_{first}"]) and bases.endswith(chunk_seqs[f"{seq_id}_chunk_{last}"])
        assert float(region["fraction_of_sequence"]) == pytest.approx(len(bases) / len(records[seq_id]), rel=1e-5)


def _inputs(predicted: Path) -> list[str]:
    return json.loads((predicted / c.SUMMARY_JSON).read_text())["inputs"]


_mates = [(1, 2), (3, 4)]  # contigs, lib1 R1/R2, lib2 R1/R2


def test_extracted_sequences_are_the_virus_records_byte_for_byte(predicted: Path, sample) -> None:
    rows = read_tsv(predicted / c.SEQUENCE_PREDICTIONS)
    inputs = [(sample.contigs, "fasta", "contigs.viral.fa.gz")] + [
        (path, "fastq", path.name.split(".")[0] + ".viral.fq.gz") for path in (*sample.casava, *sample.slashed)
    ]
    for path, fmt, name in inputs:
        calls = [r["pair_call"] for r in rows if r["source"] == str(path)]
        records = records_of(path, fmt)
        written = gzip.decompress((predicted / c.EXTRACT_DIR / name).read_bytes())
        assert written == b"".join(rec for rec, call in zip(records, calls) if call == c.CALL_VIRUS), name
    assert any(r["pair_call"] == c.CALL_VIRUS for r in rows[5:])  # some pairs selected: the check is not empty


def test_the_pipeline_writes_the_same_files_as_predict(predicted: Path, pipeline: Path) -> None:
    sample_dir = pipeline / "sample1"
    for name in TABLES:
        assert (sample_dir / name).read_bytes() == (predicted / name).read_bytes(), name
    for path in (predicted / c.EXTRACT_DIR).iterdir():
        assert (sample_dir / c.EXTRACT_DIR / path.name).read_bytes() == path.read_bytes(), path.name
    info = pipeline / "pipeline_info"
    assert (info / c.RUN_REPORT_HTML).is_file()
    assert sorted(p.name for p in (info / c.MULTIQC_DIR).iterdir()) == sorted(file_names("sample1"))
    report = (info / c.RUN_REPORT_HTML).read_text()
    assert "DNABERT-S" in report and "ESM-2" in report and "tokens/s" in report  # throughput from --engine-summary
    summary = json.loads((sample_dir / c.SUMMARY_JSON).read_text())
    assert summary["extract"]["files"][0]["records"] == json.loads((predicted / c.SUMMARY_JSON).read_text())[
        "extract"]["files"][0]["records"]  # fmt: skip


def test_threshold_and_pair_rule_options(pipeline: Path, test_models, tmp_path: Path) -> None:
    root = pipeline.parent
    base = ["classify", "--prepared", str(root / "prepare" / "prepared"), "--dna-embeddings", str(root / "embed_dna"),
            "--esm-embeddings", str(root / "embed_esm"), "--classifier", str(test_models.classifier), "--quiet",
            *(a for p in sorted((root / "classify_task").iterdir(), key=_input_order(root)) for a in ("--input", str(p)))]  # fmt: skip
    out = tmp_path / "strict"
    assert main([*base, "--outdir", str(out), "--min-p-virus", "0.505", "--pair-rule", "both", "--extract", "none"]) == 0
    chunks = read_tsv(out / c.PREDICTION_HIGHEST)
    assert [r["Is_Virus"] == "True" for r in chunks] == [float(r["max_score_1"]) >= 0.505 for r in chunks]
    default = read_tsv(pipeline / "sample1" / c.PREDICTION_HIGHEST)
    assert [r["Is_Virus"] == "True" for r in default] == [float(r["max_score_1"]) >= float(r["max_score_0"]) for r in default]
    assert [r["Is_Virus"] for r in chunks] != [r["Is_Virus"] for r in default]  # the threshold changed some calls
    rows = read_tsv(out / c.SEQUENCE_PREDICTIONS)
    for one, two in zip(rows[5::2], rows[6::2]):
        assert one["pair_call"] == pair_call(one["call"], two["call"], "both")
    summary = json.loads((out / c.SUMMARY_JSON).read_text())
    assert summary["call_rule"] == {"virus_fraction": 0.5, "min_p_virus": 0.505, "pair_rule": "both"}
    assert summary["extract"] == {"calls": [], "files": [], "skipped": {}} and not (out / c.EXTRACT_DIR).exists()


def _input_order(root: Path):
    order = [Path(entry["path"]).name for entry in json.loads((root / "prepare" / "prepared" / c.PREPARE_INFO).read_text())["inputs"]]
    return lambda path: order.index(path.name)
