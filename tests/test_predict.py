"""End-to-end `virnucpro predict` and `classify` on the bundled data with tiny test models."""

from __future__ import annotations

import gzip
import json
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from virnucpro import contracts as c
from virnucpro.classifier.checkpoints import load_native
from virnucpro.cli import main
from virnucpro.embeddings.dna import DnaSpec
from virnucpro.embeddings.esm import EsmSpec
from virnucpro.frames import chunk_sequence, kept_frames
from virnucpro.seqio import read_records

from helpers import model_args, model_spec, read_tsv
from sample_data import records_of

PREDICTION_FILES = (c.PREDICTION_RESULTS, c.PREDICTION_HIGHEST, c.SEQUENCE_PREDICTIONS)


@pytest.fixture(scope="module")
def inputs(repo_root: Path) -> list[str]:
    return [str(repo_root / "assets" / "test_reads.fa"), str(repo_root / "assets" / "test_reads.fq.gz")]


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, test_models, inputs) -> Path:
    outdir = tmp_path_factory.mktemp("predict") / "out"
    assert main(["predict", *inputs, "--outdir", str(outdir), *model_args(test_models)]) == c.EXIT_OK
    return outdir


@pytest.mark.slow
@pytest.mark.end_to_end
def test_every_input_record_has_exactly_one_row_in_input_order(predicted: Path, inputs):
    records = list(read_records(inputs))
    rows = read_tsv(predicted / c.SEQUENCE_PREDICTIONS)
    assert [r["id"] for r in rows] == [rec.id for rec in records]
    assert [r["source"] for r in rows] == [rec.source for rec in records]  # which input file (one sample, two files)
    assert len({r["source"] for r in rows}) == len(inputs) > 1
    assert {r["call"] for r in rows} <= set(c.CALLS)
    summary = json.loads((predicted / c.SUMMARY_JSON).read_text())
    assert summary["exit_status"] == 0 and summary["records"] == len(records)
    assert sum(summary["calls"].values()) == len(records)
    assert set(summary["timings_s"]) >= {"prepare", "embed_dna", "embed_esm", "classify"}
    assert summary["versions"]["virnucpro"] and summary["versions"]["torch"] == metadata.version("torch")
    assert not (predicted / c.FAILED_FILES).exists()


@pytest.mark.slow
def test_frame_scores_equal_a_one_at_a_time_reference_computation(predicted: Path, inputs, test_models):
    """Reference strategy: every frame embedded alone, features concatenated, MLP in eval mode."""
    frames = [
        frame
        for record in read_records(inputs)
        for chunk_id, chunk in chunk_sequence(record.id, record.seq, 300)
        for frame in kept_frames(chunk_id, chunk)
    ]
    dna = DnaSpec(str(test_models.dna)).load("cpu")
    esm = EsmSpec(str(test_models.esm)).load("cpu")
    model, _ = load_native(test_models.classifier)
    rows = read_tsv(predicted / c.PREDICTION_RESULTS)
    assert [r["Sequence_ID"] for r in rows] == [f.id for f in frames]
    for frame, row in zip(frames, rows):
        features = np.concatenate([dna.embed_batch([frame.nucleotide])[0], esm.embed_batch([frame.protein])[0]])
        with torch.no_grad():
            p_others, p_virus = torch.softmax(model(torch.from_numpy(features)[None]), dim=1)[0].tolist()
        assert float(row["score1"]) == pytest.approx(p_others, abs=1e-5)
        assert float(row["score2"]) == pytest.approx(p_virus, abs=1e-5)
        assert row["Prediction"] == ("virus" if p_virus > p_others else "others")


@pytest.mark.slow
@pytest.mark.end_to_end
def test_chunk_calls_follow_the_reference_consensus(predicted: Path):
    frames = read_tsv(predicted / c.PREDICTION_RESULTS)
    by_chunk: dict[str, list[tuple[float, float]]] = {}
    for row in frames:
        by_chunk.setdefault(row["Sequence_ID"][:-2], []).append((float(row["score1"]), float(row["score2"])))
    chunks = read_tsv(predicted / c.PREDICTION_HIGHEST)
    assert [r["Modified_ID"] for r in chunks] == list(by_chunk)
    for row in chunks:
        scores = by_chunk[row["Modified_ID"]]
        best0, best1 = max(s[0] for s in scores), max(s[1] for s in scores)
        assert (float(row["max_score_0"]), float(row["max_score_1"])) == (best0, best1)
        assert row["Is_Virus"] == str(best1 >= best0)


@pytest.mark.slow
def test_same_input_and_models_give_byte_identical_prediction_files(predicted: Path, tmp_path, test_models, inputs):
    again = tmp_path / "again"
    assert main(["predict", *inputs, "--outdir", str(again), *model_args(test_models)]) == c.EXIT_OK
    for name in PREDICTION_FILES:
        assert (again / name).read_bytes() == (predicted / name).read_bytes(), name


@pytest.mark.slow
def test_resume_skips_completed_stages_and_keeps_results(predicted: Path, tmp_path, test_models, inputs):
    copy = tmp_path / "copy"
    shutil.copytree(predicted, copy)
    embeddings = sorted((copy / "work" / "embeddings").rglob("*.npz"))
    prepared = sorted(p for p in (copy / "work" / "prepared").rglob("*") if p.is_file())
    stamps = {path: path.stat().st_mtime_ns for path in embeddings + prepared}
    assert embeddings and any(p.name == c.MANIFEST for p in prepared)
    args = ["predict", *inputs, "--outdir", str(copy), "--resume", *model_args(test_models)]
    assert main(args) == c.EXIT_OK
    assert {path: path.stat().st_mtime_ns for path in embeddings + prepared} == stamps  # not prepared nor embedded again
    for name in PREDICTION_FILES:
        assert (copy / name).read_bytes() == (predicted / name).read_bytes()


def classify_args(prepared: Path, work: Path, outdir: Path, models, *extra: str) -> list[str]:
    return [
        "classify", "--prepared", str(prepared),
        "--dna-embeddings", str(work / "dna"), "--esm-embeddings", str(work / "esm"),
        "--outdir", str(outdir), "--classifier", str(models.classifier), "--quiet", *extra,
    ]  # fmt: skip


def _prepare_and_embed(tmp_path: Path, test_models, inputs) -> tuple[Path, Path, list[str]]:
    """prepare (at least 3 shards), embed-dna and embed-esm: (prepared, embeddings dir, shard stems)."""
    prepared = tmp_path / "prepared"
    assert main(["prepare", *inputs, "--outdir", str(prepared), "--shard-size", "1500", "--quiet"]) == 0
    stems = sorted(p.stem for p in (prepared / c.SHARD_PROTEIN_DIR).glob("*.fa"))
    assert len(stems) >= 3
    work = tmp_path / "emb"
    for kind, sub in (("embed-dna", c.SHARD_NUCLEOTIDE_DIR), ("embed-esm", c.SHARD_PROTEIN_DIR)):
        files = [str(prepared / sub / f"{stem}.fa") for stem in stems]
        model = ["--dna-model", str(test_models.dna)] if kind == "embed-dna" else ["--esm-model", str(test_models.esm)]
        assert main([kind, *files, "--outdir", str(work / kind[6:]), *model, "--quiet"]) == 0
    return prepared, work, stems


@pytest.mark.slow
def test_classify_with_a_missing_shard_is_partial_and_loses_nothing(tmp_path, test_models, inputs):
    prepared, work, stems = _prepare_and_embed(tmp_path, test_models, inputs)
    lost = work / "esm" / f"{stems[1]}.npz"
    lost.rename(tmp_path / "kept_aside.npz")  # a lost ESM task

    out = tmp_path / "out"
    assert main(classify_args(prepared, work, out, test_models)) == c.EXIT_PARTIAL
    rows = read_tsv(out / c.SEQUENCE_PREDICTIONS)
    assert len(rows) == sum(1 for _ in read_records(inputs))
    failed = [r for r in rows if r["call"] == c.CALL_FAILED]
    assert failed and all(stems[1] in r["reason"] for r in failed)
    failures = c.read_failures(out / c.FAILED_FILES)
    assert [(f.stage, stems[1] in f.message) for f in failures] == [(c.STAGE_CLASSIFY, True)]
    assert json.loads((out / c.SUMMARY_JSON).read_text())["exit_status"] == c.EXIT_PARTIAL


    # With the embedding stage's failure line for that shard, the rows give its words, not just "missing".
    failed_file = work / "esm" / c.FAILED_FILES
    why = "not embedded: systemic failure: 1 of 1 workers failed, stopping (worker 0 (gpu 0): killed by SIGKILL)"
    c.write_failures(failed_file, [c.Failure(f"shards/protein/{stems[1]}.fa", c.STAGE_ESM, why)])
    explained = tmp_path / "explained"
    assert main(classify_args(prepared, work, explained, test_models, "--failed", str(failed_file))) == c.EXIT_PARTIAL
    reasons = {r["reason"] for r in read_tsv(explained / c.SEQUENCE_PREDICTIONS) if r["call"] == c.CALL_FAILED}
    assert reasons == {f"ESM-2: {why}"}

    # The shard back, the same command again: complete, and the earlier failure list is gone.
    (tmp_path / "kept_aside.npz").rename(lost)
    assert main(classify_args(prepared, work, out, test_models)) == c.EXIT_OK
    assert not (out / c.FAILED_FILES).exists()
    assert main(["summarize", str(out), "--outdir", str(tmp_path / "run"), "--quiet"]) == c.EXIT_OK

    for stem in stems:  # every shard lost: total failure
        (work / "esm" / f"{stem}.npz").unlink(missing_ok=True)
    assert main(classify_args(prepared, work, tmp_path / "none", test_models)) == c.EXIT_FAILED


@pytest.mark.slow
def test_a_sequence_the_embedding_stage_skipped_is_failed_with_the_stage_s_reason(tmp_path, test_models, inputs):
    from virnucpro.embeddings.store import load_embeddings, save_embeddings

    prepared, work, stems = _prepare_and_embed(tmp_path, test_models, inputs)
    shard = work / "esm" / f"{stems[0]}.npz"
    stored = load_embeddings(shard)
    skipped = stored.ids[1]  # as embed_file leaves a frame that ran out of memory alone
    save_embeddings(shard, stored.ids[:1] + stored.ids[2:], np.delete(stored.matrix, 1, axis=0), stored.meta)
    failed_file = work / "esm" / c.FAILED_FILES
    why = "out of memory with one sequence per batch (99 tokens)"
    c.write_failures(failed_file, [c.Failure.of_sequence(str(shard), c.STAGE_ESM, skipped, why)])

    out = tmp_path / "out"
    assert main(classify_args(prepared, work, out, test_models, "--failed", str(failed_file))) == c.EXIT_PARTIAL
    failed = [r for r in read_tsv(out / c.SEQUENCE_PREDICTIONS) if r["call"] == c.CALL_FAILED]
    assert len(failed) == 1 and skipped.startswith(failed[0]["id"] + "_chunk_")
    assert f"ESM-2: {why}" in failed[0]["reason"]
    assert [f.failed_sequence() for f in c.read_failures(out / c.FAILED_FILES)] == [(skipped, why)]


def test_classifier_for_other_embedding_sizes_is_refused(tmp_path, test_models, inputs):
    from virnucpro.classifier.checkpoints import save_native
    from virnucpro.classifier.model import ClassifierMeta, MLPClassifier

    wrong = tmp_path / "wrong.pt"
    save_native(wrong, MLPClassifier(768 + 2560), ClassifierMeta(dna_dim=768, esm_dim=2560, chunk_length=300))
    args = ["predict", inputs[0], "--outdir", str(tmp_path / "o"), *model_args(test_models), "--classifier", str(wrong)]
    assert main(args) == c.EXIT_FAILED


def test_bad_input_is_one_line_exit_1(tmp_path, test_models, capsys):
    bad = tmp_path / "protein.fa"
    bad.write_text(">p1\nMEEPQSDPSVEPPLSQETFSDLWKLL\n")
    assert main(["predict", str(bad), "--outdir", str(tmp_path / "o"), *model_args(test_models)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "protein.fa" in err[0] and "p1" in err[0] and "Traceback" not in err[0]


def test_usage_errors_exit_1_not_2(capsys):
    assert main(["predict"]) == 1
    assert main(["predict", "x.fa", "--outdir", "o", "--chunk-length", "400"]) == 1
    assert main(["no-such-command"]) == 1
    capsys.readouterr()
    assert main(["convert-checkpoint", "a.pth", "b.pt"]) == 1  # click's message spans lines: joined
    assert capsys.readouterr().err.splitlines() == [
        "virnucpro: error: Missing option '--chunk-length'. Choose from: 300, 500"
    ]
    assert main([]) == 0  # a bare `virnucpro` shows the help
    shown = capsys.readouterr()
    assert shown.out.startswith("Usage: virnucpro") and "predict" in shown.out and shown.err == ""


@pytest.mark.slow
def test_a_rerun_that_fails_leaves_no_result_files_of_the_run_before(tmp_path, test_models, inputs, capsys):
    outdir = tmp_path / "out"
    assert main(["predict", inputs[0], "--outdir", str(outdir), *model_args(test_models), "--quiet"]) == c.EXIT_OK
    assert all((outdir / name).exists() for name in c.RESULT_FILES if name != c.FAILED_FILES)
    bad = tmp_path / "bad_in_the_middle.fa"
    bad.write_text(">ok\nACGTACGTACGT\n>bad\nACGT*ACGT\n")  # found only while reading, after the checks
    assert main(["predict", str(bad), "--outdir", str(outdir), *model_args(test_models), "--quiet"]) == c.EXIT_FAILED
    assert "record 2 (bad)" in capsys.readouterr().err
    assert [name for name in c.RESULT_FILES if (outdir / name).exists()] == []  # nothing that looks like a result
    assert (outdir / "work").is_dir()  # what --resume reuses is kept


def test_unusable_outdirs_and_values_are_one_line_exit_1(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    reads = str(Path(__file__).parents[1] / "assets" / "test_reads.fa")
    cases = [
        (["prepare", reads, "-o", str(blocker / "sub")], f"{blocker / 'sub'}: cannot create the output directory (Not a directory)"),
        (["make-test-models", str(blocker / "sub")], f"{blocker / 'sub'}: Not a directory"),  # any OSError: one line
        (["summarize", str(tmp_path), "-o", ""], "Invalid value for '--outdir' / '-o': an empty path (an unset variable?)"),
        (["predict", reads, "-o", " "], "Invalid value for '--outdir' / '-o': an empty path (an unset variable?)"),
        (["predict", reads, "-o", str(tmp_path / "o"), "--virus-fraction", "nan"], "Invalid value for '--virus-fraction': nan is not a number"),
    ]
    for args, message in cases:
        assert main(args) == c.EXIT_FAILED, args
        assert capsys.readouterr().err.splitlines() == [f"virnucpro: error: {message}"], args


def test_a_missing_input_is_named_before_the_classifier_is_fetched(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VIRNUCPRO_CACHE", str(tmp_path / "empty-cache"))  # the reference model is not there
    assert main(["predict", str(tmp_path / "nope.fa"), "--outdir", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.splitlines() == [f"virnucpro: error: {tmp_path / 'nope.fa'}: no such file"]


@pytest.mark.slow
def test_a_mismatched_classifier_is_refused_before_any_embedding(tmp_path, test_models, inputs, capsys):
    from virnucpro.classifier.checkpoints import save_native
    from virnucpro.classifier.model import ClassifierMeta, MLPClassifier
    dna, esm = DnaSpec(str(test_models.dna)).shape(), EsmSpec(str(test_models.esm)).shape()
    assert dna is not None and esm is not None and esm.layers is not None
    layer_classifier = tmp_path / "layer.pt"
    meta = ClassifierMeta(dna_dim=dna.dim, esm_dim=esm.dim, chunk_length=300, esm_layer=esm.layers - 1)
    save_native(layer_classifier, MLPClassifier(meta.input_dim), meta)
    out = tmp_path / "o"
    args = ["predict", inputs[0], "--outdir", str(out), *model_args(test_models), "--classifier", str(layer_classifier)]
    assert main(args) == c.EXIT_FAILED
    assert f"ESM layer {esm.layers - 1}, not layer {esm.layers}" in capsys.readouterr().err
    assert not (out / "work").exists()  # refused before prepare and embedding
    assert main([*args, "--esm-layer", str(esm.layers - 1)]) == c.EXIT_OK


def test_model_shapes_are_read_without_loading_models(tmp_path, test_models, monkeypatch):
    import esm

    from virnucpro.embeddings import dna, dnabert_files
    from virnucpro.embeddings import esm as esm_module
    from virnucpro.embeddings.base import ModelShape

    expected_esm = EsmSpec(str(test_models.esm)).load("cpu")
    expected_dna_dim = DnaSpec(str(test_models.dna)).load("cpu").dim

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded to read its shape")

    monkeypatch.setattr(esm.pretrained, "load_model_and_alphabet_local", no_loading)
    monkeypatch.setattr(esm.pretrained, "load_model_and_alphabet_core", no_loading)
    monkeypatch.setattr(esm_module, "load_esm_embedder", no_loading)
    monkeypatch.setattr(dna, "load_dna_embedder", no_loading)
    monkeypatch.setattr(dnabert_files, "load_model_folder", no_loading)

    assert EsmSpec("esm2_t36_3B_UR50D").shape() == ModelShape(2560, 36)
    assert EsmSpec("esm2_t33_650M_UR50D").shape() == ModelShape(1280, 33)
    assert EsmSpec("esm1b_t33_650M_UR50S").shape() is None  # not ESM-2: checked after embedding
    assert EsmSpec(str(tmp_path / "missing.pt")).shape() is None  # the loader reports it
    assert DnaSpec(str(tmp_path / "no-such-dir")).shape() is None
    assert EsmSpec(str(test_models.esm)).shape() == ModelShape(expected_esm.dim, expected_esm.layer)
    assert DnaSpec(str(test_models.dna)).shape() == ModelShape(expected_dna_dim)


def test_a_local_model_replaced_under_the_same_name_changes_the_identity(tmp_path, test_models):
    import os
    import shutil

    for kind, source in (("esm", test_models.esm), ("dna", test_models.dna)):
        copy = tmp_path / kind / source.name
        copy.parent.mkdir()
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, copy)
        if kind == "esm":
            shutil.copy2(source.with_name(f"{source.stem}-contact-regression.pt"), copy.parent)
        before = model_spec(kind, str(copy)).load("cpu").identity()
        target = copy if copy.is_file() else next(p for p in copy.iterdir() if p.is_file())
        later = max(p.stat().st_mtime_ns for p in copy.parent.rglob('*')) + 10**9
        os.utime(target, ns=(later, later))
        assert model_spec(kind, str(copy)).load("cpu").identity() != before  # so --resume re-embeds


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--esm-model", "esm2_typo.pt", "esm2_typo.pt: ESM model file not found"),
        ("--esm-model", "esm2_t99_typo", "unknown ESM model 'esm2_t99_typo'"),
        ("--dna-model", "models/DNABERT-Z", "models/DNABERT-Z: DNA model directory not found"),
    ],
)
def test_a_mistyped_model_is_refused_before_any_work(tmp_path, test_models, inputs, capsys, monkeypatch, option, value, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    args = ["predict", *inputs, "--outdir", str(tmp_path / "out"), *model_args(test_models), option, value]
    assert main(args) == c.EXIT_FAILED
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"virnucpro: error: {message}")
    assert not (tmp_path / "out").exists()  # nothing prepared, nothing embedded


@pytest.mark.slow
def test_swapped_embedding_folders_are_refused(tmp_path, test_models, inputs, capsys):
    prepared, work, _stems = _prepare_and_embed(tmp_path, test_models, inputs)
    args = ["classify", "--prepared", str(prepared), "--dna-embeddings", str(work / "esm"),
            "--esm-embeddings", str(work / "dna"), "--outdir", str(tmp_path / "out"),
            "--classifier", str(test_models.classifier), "--quiet"]  # fmt: skip
    capsys.readouterr()
    assert main(args) == c.EXIT_FAILED
    assert capsys.readouterr().err.splitlines() == [
        f"virnucpro: error: {work / 'esm'}: holds ESM-2 embeddings where DNABERT-S embeddings belong "
        "(--dna-embeddings and --esm-embeddings swapped?)"
    ]


def test_a_classifier_described_by_its_maker_is_labelled_in_errors(test_models):
    from virnucpro.classifier.compatibility import check_compatible
    from virnucpro.errors import ModelError

    _model, meta = load_native(test_models.classifier)
    assert meta.source and not meta.source.endswith(".pt")  # "virnucpro make-test-models (...)"
    with pytest.raises(ModelError, match=r"^classifier \(virnucpro make-test-models .*\): classifier expects"):
        check_compatible(meta, dna_dim=meta.dna_dim + 1, esm_dim=meta.esm_dim)


@pytest.mark.slow
@pytest.mark.end_to_end
def test_summary_names_the_embedding_models_with_numbers_as_numbers(predicted: Path):
    models = json.loads((predicted / c.SUMMARY_JSON).read_text())["models"]
    esm, dna = models[c.STAGE_ESM], models[c.STAGE_DNA]
    assert isinstance(esm["dim"], int) and isinstance(esm["layer"], int) and esm["precision"] == "fp32"
    assert isinstance(dna["dim"], int) and dna["kind"] == "dna"
    assert not {"records", "embedded", "input_sha256", "embedder"} & (esm.keys() | dna.keys())  # one shard's counts


def test_what_users_take_away_from_the_bundled_data(predicted: Path, inputs) -> None:
    """viral/ holds each input's virus records byte for byte; regions, report and MultiQC files are there."""
    rows = read_tsv(predicted / c.SEQUENCE_PREDICTIONS)
    for path, fmt, name in ((inputs[0], "fasta", "test_reads.viral.fa.gz"), (inputs[1], "fastq", "test_reads.viral.fq.gz")):
        calls = [r["pair_call"] for r in rows if r["source"] == path]
        expected = b"".join(record for record, call in zip(records_of(Path(path), fmt), calls) if call == c.CALL_VIRUS)
        assert gzip.decompress((predicted / c.EXTRACT_DIR / name).read_bytes()) == expected != b""
    virus_chunks = {r["Modified_ID"].rsplit("_chunk_", 1)[0] for r in read_tsv(predicted / c.PREDICTION_HIGHEST)
                    if r["Is_Virus"] == "True"}  # fmt: skip
    assert {r["id"] for r in read_tsv(predicted / c.VIRAL_REGIONS)} == virus_chunks
    assert (predicted / c.REPORT_HTML).stat().st_size > 10_000
    assert sorted(p.name for p in (predicted / c.MULTIQC_DIR).iterdir()) == ["out_virnucpro_mqc.tsv", "out_virnucpro_mqc.yaml"]
