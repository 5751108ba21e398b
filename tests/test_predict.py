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
    """New weights copied over the old file with the old size and dates are another model for --resume."""
    import os
    import shutil

    copy = tmp_path / "esm" / test_models.esm.name
    copy.parent.mkdir()
    shutil.copy2(test_models.esm, copy)
    shutil.copy2(test_models.esm.with_name(f"{test_models.esm.stem}-contact-regression.pt"), copy.parent)
    before = model_spec("esm", str(copy)).load("cpu").identity()
    old = copy.stat()
    checkpoint = torch.load(copy, weights_only=False)  # our own test model
    weights = next(value for value in checkpoint["model"].values() if value.is_floating_point() and value.numel() > 8)
    stored = weights.numpy().tobytes()
    data = copy.read_bytes()
    assert data.count(stored) == 1
    copy.write_bytes(data.replace(stored, (weights + 1.0).numpy().tobytes()))  # new weights, same size
    os.utime(copy, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert (copy.stat().st_size, copy.stat().st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    assert model_spec("esm", str(copy)).load("cpu").identity() != before  # so --resume re-embeds

    dna = tmp_path / "dna"
    shutil.copytree(test_models.dna, dna)
    before = model_spec("dna", str(dna)).load("cpu").identity()
    later = max(p.stat().st_mtime_ns for p in dna.iterdir()) + 10**9
    for path in dna.iterdir():
        os.utime(path, ns=(later, later))
    assert model_spec("dna", str(dna)).load("cpu").identity() == before  # same content: nothing to redo


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
    meta.path = ""  # not loaded from a file: described by its maker
    with pytest.raises(ModelError, match=r"^classifier \(virnucpro make-test-models .*\): classifier expects"):
        check_compatible(meta, dna_dim=meta.dna_dim + 1, esm_dim=meta.esm_dim)


def test_a_classifier_loaded_from_a_file_is_named_by_the_path_given(tmp_path, test_models, inputs, capsys):
    """Not by the source recorded in its metadata (which names whoever made it)."""
    from virnucpro.classifier.checkpoints import save_native
    from virnucpro.classifier.model import MLPClassifier

    _model, meta = load_native(test_models.classifier)
    meta.dna_dim += 1
    wrong = tmp_path / "wrong_width.pt"
    save_native(wrong, MLPClassifier(meta.input_dim, hidden_dim=meta.hidden_dim), meta)
    assert load_native(wrong)[1].source == meta.source  # still "virnucpro make-test-models ..."
    args = ["predict", inputs[0], "--outdir", str(tmp_path / "o"), *model_args(test_models), "--classifier", str(wrong)]
    assert main(args) == c.EXIT_FAILED
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"virnucpro: error: {wrong}: classifier expects DNA {meta.dna_dim}-d")


def test_a_chunk_length_stored_as_text_is_a_damaged_checkpoint_not_a_mismatch(tmp_path, test_models, capsys):
    payload = torch.load(test_models.classifier, weights_only=True)
    payload["meta"]["chunk_length"] = "300"
    text = tmp_path / "text_chunk.pt"
    torch.save(payload, text)
    args = ["predict", str(tmp_path / "in.fa"), "--outdir", str(tmp_path / "o"), *model_args(test_models),
            "--classifier", str(text)]  # fmt: skip
    (tmp_path / "in.fa").write_text(">a\nACGT\n")
    assert main(args) == c.EXIT_FAILED
    assert capsys.readouterr().err.splitlines() == [
        f"virnucpro: error: {text}: damaged native classifier checkpoint (metadata 'chunk_length' "
        "is '300', not a whole number)"
    ]


@pytest.mark.slow
@pytest.mark.end_to_end
def test_summary_names_the_embedding_models_with_numbers_as_numbers(predicted: Path):
    models = json.loads((predicted / c.SUMMARY_JSON).read_text())["models"]
    esm, dna = models[c.STAGE_ESM], models[c.STAGE_DNA]
    assert isinstance(esm["dim"], int) and isinstance(esm["layer"], int) and esm["precision"] == "fp32"
    assert isinstance(dna["dim"], int) and dna["kind"] == "dna"
    assert not {"records", "embedded", "input_sha256", "embedder"} & (esm.keys() | dna.keys())  # one shard's counts


def test_a_classifier_with_three_outputs_is_refused_before_any_work(tmp_path, test_models, inputs, capsys):
    from virnucpro.classifier.model import MLPClassifier

    state = torch.load(test_models.classifier, weights_only=True)
    meta = state["meta"]
    model = MLPClassifier(meta["dna_dim"] + meta["esm_dim"], hidden_dim=meta["hidden_dim"], num_class=3)
    state["state_dict"] = model.state_dict()
    three = tmp_path / "three.pt"
    torch.save(state, three)
    out = tmp_path / "out"
    args = ["predict", inputs[0], "--outdir", str(out), *model_args(test_models), "--classifier", str(three)]
    assert main(args) == c.EXIT_FAILED
    assert capsys.readouterr().err.splitlines() == [
        f"virnucpro: error: {three}: classifier has 3 outputs, not 2 (others, virus)"
    ]
    assert not out.exists()  # refused before prepare and embedding


@pytest.mark.slow
def test_classify_refuses_embeddings_of_another_sample_with_the_same_shard_names(tmp_path, test_models, inputs, capsys):
    prepared, work, stems = _prepare_and_embed(tmp_path, test_models, inputs)
    other = tmp_path / "other_prepared"
    assert main(["prepare", inputs[1], inputs[0], "--outdir", str(other), "--shard-size", "1500", "--quiet"]) == 0
    assert sorted(p.stem for p in (other / c.SHARD_PROTEIN_DIR).glob("*.fa"))[0] == stems[0]  # same names
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(classify_args(other, work, out, test_models)) == c.EXIT_FAILED
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"virnucpro: error: {work / 'dna' / stems[0]}.npz: embeddings of another input, not of ")
    assert not (out / c.SEQUENCE_PREDICTIONS).exists()


def test_names_that_are_not_utf_8_are_written_escaped_and_no_result_is_lost(tmp_path, test_models, capsys):
    """Paths are bytes on Linux: a file or directory name with bytes that are not UTF-8."""
    import os

    reads = Path(os.fsdecode(bytes(tmp_path) + b"/reads\xff.fa"))
    reads.write_text(">r1\n" + "ATGAAACCCGGGTTTAAACCCGGGTTTAAA" * 5 + "\n>r2\nACGT\n")
    outdir = Path(os.fsdecode(bytes(tmp_path) + b"/out\xfe"))
    assert main(["predict", str(reads), "--outdir", str(outdir), *model_args(test_models)]) == c.EXIT_OK
    assert "Traceback" not in capsys.readouterr().err
    rows = read_tsv(outdir / c.SEQUENCE_PREDICTIONS)
    assert [row["source"] for row in rows] == [str(tmp_path / "reads\\udcff.fa")] * 2  # escaped, not lost
    assert json.loads((outdir / c.SUMMARY_JSON).read_text())["inputs"] == [str(reads)]
    failure = c.Failure(str(outdir / "x.fa"), c.STAGE_ESM, "lost")
    c.write_failures(outdir / "failures.txt", [failure])  # failed_files.txt too
    assert c.read_failures(outdir / "failures.txt")[0].file_path == str(tmp_path / "out\\udcfe" / "x.fa")


def test_an_esm_checkpoint_that_cannot_load_is_refused_before_any_work(tmp_path, test_models, inputs, capsys):
    """A truncated checkpoint was found inside the worker, after prepare and the whole DNA stage."""
    import shutil

    for name, damage in (
        ("truncated", lambda data: data[: len(data) // 2]),
        ("empty", lambda data: b""),
        ("not_a_checkpoint", lambda data: b"<html>404 Not Found</html>"),
    ):
        folder = tmp_path / name
        folder.mkdir()
        copy = folder / test_models.esm.name
        copy.write_bytes(damage(test_models.esm.read_bytes()))
        shutil.copy2(test_models.esm.with_name(f"{test_models.esm.stem}-contact-regression.pt"), folder)
        out = tmp_path / f"out_{name}"
        args = ["predict", *inputs, "--outdir", str(out), *model_args(test_models), "--esm-model", str(copy)]
        assert main(args) == c.EXIT_FAILED
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"virnucpro: error: {copy}: cannot load this ESM checkpoint (")
        assert not out.exists()  # nothing prepared, nothing embedded


def test_an_esm_name_neither_cached_nor_reachable_is_refused_before_any_work(
    tmp_path, test_models, inputs, capsys, monkeypatch
):
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    out = tmp_path / "out"
    args = ["predict", *inputs, "--outdir", str(out), *model_args(test_models), "--esm-model", "esm2_t6_8M_UR50D"]
    assert main(args) == c.EXIT_FAILED
    assert capsys.readouterr().err.splitlines() == [
        f"virnucpro: error: cannot load ESM model 'esm2_t6_8M_UR50D': not in {tmp_path / 'hub' / 'checkpoints'} and "
        "https://dl.fbaipublicfiles.com/fair-esm/models/esm2_t6_8M_UR50D.pt cannot be reached (Temporary failure in "
        "name resolution); on an offline machine, fetch it first where there is network with "
        "`python -c \"import esm; esm.pretrained.esm2_t6_8M_UR50D()\"` (same TORCH_HOME), or pass the local .pt path"
    ]
    assert not out.exists()


@pytest.mark.slow
def test_predict_carries_an_embedding_stage_s_failures_to_every_output(tmp_path, test_models, inputs, monkeypatch):
    """Exit 2 when some frames could not be embedded, 1 when none could; the stage's own reason in the
    failed rows, its lines in failed_files.txt, frames_failed in summary.json (the real in-process path)."""
    from virnucpro.embeddings.esm import EsmEmbedder

    real = EsmEmbedder.embed_batch

    def nan_for_tryptophan(self, sequences):
        vectors = real(self, sequences)
        vectors[[i for i, seq in enumerate(sequences) if "W" in seq]] = np.nan
        return vectors

    monkeypatch.setattr(EsmEmbedder, "embed_batch", nan_for_tryptophan)
    out = tmp_path / "partial"
    assert main(["predict", *inputs, "--outdir", str(out), *model_args(test_models)]) == c.EXIT_PARTIAL
    proteins = [(fid, seq) for shard in sorted((out / "work/prepared" / c.SHARD_PROTEIN_DIR).glob("*.fa"))
                for fid, seq in read_fasta_pairs(shard)]  # fmt: skip
    poisoned = {fid for fid, seq in proteins if "W" in seq}
    assert 0 < len(poisoned) < len(proteins)
    failures = c.read_failures(out / c.FAILED_FILES)
    assert {f.failed_sequence()[0] for f in failures} == poisoned
    assert {(f.stage, f.failed_sequence()[1]) for f in failures} == {(c.STAGE_ESM, "embedding not finite in fp32")}
    rows = read_tsv(out / c.SEQUENCE_PREDICTIONS)
    failed = [r for r in rows if r["call"] == c.CALL_FAILED]
    assert failed and {r["reason"] for r in failed} == {"ESM-2: embedding not finite in fp32"}
    assert {fid.split("_chunk_")[0] for fid in poisoned} == {r["id"] for r in failed}
    summary = json.loads((out / c.SUMMARY_JSON).read_text())
    assert (summary["exit_status"], summary["frames_failed"]) == (c.EXIT_PARTIAL, len(poisoned))
    assert summary["frames_scored"] == len(proteins) - len(poisoned)

    def exploding(self, sequences):
        raise ValueError("model exploded")

    monkeypatch.setattr(EsmEmbedder, "embed_batch", exploding)
    out = tmp_path / "none"
    assert main(["predict", *inputs, "--outdir", str(out), *model_args(test_models), "--shard-size", "1500"]) == 1
    failures = c.read_failures(out / c.FAILED_FILES)
    shards = sorted((out / "work/prepared" / c.SHARD_PROTEIN_DIR).glob("*.fa"))
    assert len(shards) > 1 and [Path(f.file_path).name for f in failures] == [shard.name for shard in shards]
    assert {(f.stage, f.message) for f in failures} == {(c.STAGE_ESM, "model exploded")}
    rows = read_tsv(out / c.SEQUENCE_PREDICTIONS)
    assert {r["reason"] for r in rows if r["call"] == c.CALL_FAILED} == {"ESM-2: model exploded"}
    assert {r["call"] for r in rows} == {c.CALL_FAILED, c.CALL_NO_FRAME}
    summary = json.loads((out / c.SUMMARY_JSON).read_text())
    assert (summary["exit_status"], summary["frames_scored"]) == (c.EXIT_FAILED, 0)


def read_fasta_pairs(path: Path) -> list[tuple[str, str]]:
    from virnucpro.seqio import read_fasta

    return list(read_fasta(path))


@pytest.mark.slow
def test_virus_fraction_from_the_command_line_decides_the_calls_and_dup_rows_keep_their_original_id(
    tmp_path, test_models, repo_root
):
    from virnucpro.seqio import read_records as read

    records = list(read([repo_root / "assets" / "test_reads.fa"]))
    doubled = tmp_path / "doubled.fa"
    doubled.write_text("".join(f">{r.id} copy {n}\n{r.seq}\n" for n in (1, 2) for r in records))  # ids twice
    out = tmp_path / "out"
    assert main(["predict", str(doubled), "--outdir", str(out), *model_args(test_models)]) == c.EXIT_OK
    # The tiny random models score every chunk of a read alike under the argmax rule; a --min-p-virus
    # cutoff between two chunk scores of one read gives it virus and non-virus chunks.
    scores: dict[str, list[float]] = {}
    for r in read_tsv(out / c.PREDICTION_HIGHEST):
        scores.setdefault(r["Modified_ID"].rsplit("_chunk_", 1)[0], []).append(float(r["max_score_1"]))
    low, high = next((min(s), max(s)) for s in scores.values() if min(s) < max(s))
    cutoff = str((low + high) / 2)
    calls = {}
    for fraction in ("1.0", "0.01"):
        args = ["predict", str(doubled), "--outdir", str(out), *model_args(test_models), "--virus-fraction", fraction]
        assert main([*args, "--min-p-virus", cutoff, "--resume"]) == c.EXIT_OK
        rows = read_tsv(out / c.SEQUENCE_PREDICTIONS)
        called = [r for r in rows if r["call"] in (c.CALL_VIRUS, c.CALL_OTHERS)]
        for r in called:
            virus, chunks = int(r["virus_chunks"]), int(r["chunks_with_frame"])
            assert r["call"] == (c.CALL_VIRUS if virus / chunks >= float(fraction) else c.CALL_OTHERS)
        calls[fraction] = {r["id"]: r["call"] for r in called}
        rule = json.loads((out / c.SUMMARY_JSON).read_text())["call_rule"]
        assert rule == {"virus_fraction": float(fraction), "min_p_virus": float(cutoff), "pair_rule": "any"}
    assert calls["1.0"] != calls["0.01"]  # some read has virus and non-virus chunks: the fraction mattered

    assert [r["id"] for r in rows] == [r.id for r in records] + [f"{r.id}_dup2" for r in records]
    assert [r["original_id"] for r in rows] == [r.id for r in records] * 2
    first, second = rows[: len(records)], rows[len(records) :]
    assert [r["call"] for r in first] == [r["call"] for r in second]  # the same sequences, the same calls


@pytest.mark.slow
def test_a_second_process_cannot_write_into_a_running_predict_s_directory(tmp_path, test_models, capsys):
    """predict vs predict, classify and embed-dna (into its work/): one line, exit 1, nothing written."""
    import signal
    import subprocess
    import sys
    import time

    from virnucpro.predict import PREPARED_DIR
    from virnucpro.synthetic import synthetic_reads, write_reads

    reads = tmp_path / "many.fa"
    write_reads(reads, synthetic_reads(3000, (500, 700), coding_fraction=1.0, seed=3))
    outdir = tmp_path / "out"
    first = subprocess.Popen(
        [sys.executable, "-m", "virnucpro", "predict", str(reads), "--outdir", str(outdir), *model_args(test_models)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    prepared, dna = outdir / PREPARED_DIR, outdir / "work" / "embeddings" / "dna"
    deadline = time.monotonic() + 120
    while not (prepared / c.PREPARE_INFO).exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        shard = str(sorted((prepared / c.SHARD_NUCLEOTIDE_DIR).glob("*.fa"))[0])
        busy = f"{outdir}: another virnucpro run is writing into this directory"
        for args, message in (
            (["predict", str(reads), "--outdir", str(outdir), *model_args(test_models)], busy),
            (classify_args(prepared, outdir / "work" / "embeddings", outdir, test_models), busy),
            (["embed-dna", shard, "--outdir", str(dna), "--dna-model", str(test_models.dna), "--quiet"],
             f"{dna}: inside {outdir.resolve()}, where another virnucpro run is writing"),
        ):  # fmt: skip
            capsys.readouterr()
            assert main(args) == c.EXIT_FAILED
            assert capsys.readouterr().err.splitlines() == [f"virnucpro: error: {message}"]
        assert first.poll() is None, "the first run ended before the others were tried: give it more work"
        assert not [name for name in c.RESULT_FILES if (outdir / name).exists()]  # the refused runs wrote nothing
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    assert not (outdir / ".virnucpro.lock").exists()


@pytest.mark.slow
def test_sigterm_of_a_two_worker_predict_then_resume_equals_a_one_worker_run_byte_for_byte(tmp_path, test_models):
    """Also: embed-dna with two workers writes the bytes predict's one in-process worker wrote."""
    import signal
    import subprocess
    import sys
    import time

    from virnucpro.synthetic import synthetic_reads, write_reads

    reads = tmp_path / "reads.fa"
    write_reads(reads, synthetic_reads(1500, (300, 700), seed=5))
    common = [str(reads), *model_args(test_models), "--shard-size", "20000"]
    clean = tmp_path / "clean"
    assert main(["predict", *common, "--outdir", str(clean), "--workers", "1"]) == c.EXIT_OK
    shards = sorted((clean / "work" / "prepared" / c.SHARD_NUCLEOTIDE_DIR).glob("*.fa"))
    assert len(shards) >= 4

    outdir = tmp_path / "stopped"
    command = [sys.executable, "-m", "virnucpro", "predict", *common, "--outdir", str(outdir), "--workers", "2"]
    run = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    esm = outdir / "work" / "embeddings" / "esm"
    deadline = time.monotonic() + 300
    while not list(esm.glob("*.npz")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the DNA stage is done and the ESM-2 stage has begun
    assert run.poll() is None, "the run ended before it could be stopped: give it more work"
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=120) == 128 + signal.SIGTERM, run.stderr.read()
    assert len(list(esm.glob("*.npz"))) < len(shards)  # stopped part way
    assert main(["predict", *common, "--outdir", str(outdir), "--workers", "2", "--resume"]) == c.EXIT_OK
    for name in PREDICTION_FILES:
        assert (outdir / name).read_bytes() == (clean / name).read_bytes(), name

    two = tmp_path / "dna_two_workers"
    args = ["embed-dna", *map(str, shards), "--outdir", str(two), "--dna-model", str(test_models.dna), "--quiet"]
    assert main([*args, "--workers", "2"]) == c.EXIT_OK
    for shard in shards:
        name = f"{shard.stem}{c.EMBEDDING_SUFFIX}"
        assert (two / name).read_bytes() == (clean / "work" / "embeddings" / "dna" / name).read_bytes(), name


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
