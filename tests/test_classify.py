"""Chunk consensus, sequence calls and the prediction file formats (no models needed)."""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path

import pytest

from virnucpro import classify as classify_module
from virnucpro import contracts as c
from virnucpro.classify import (
    CallRule,
    ClassifyResult,
    FrameScore,
    PredictionWriter,
    frame_label,
    group_by_record,
)
from virnucpro.errors import InputError
from virnucpro.prepare import ManifestRow


def row(rid: str, length: int, chunks: int, kept: int) -> ManifestRow:
    return ManifestRow(id=rid, original_id=rid, source="in.fa", length=length, chunks=chunks, kept_frames=kept)


def rows_for(records, frames, rule=CallRule()):
    return [(r, r.call(rule)) for r in group_by_record(iter(records), iter(frames))]


def test_chunk_consensus_takes_max_of_each_score_and_ties_go_to_virus():
    frames = [
        FrameScore("a_chunk_1F1", (0.2, 0.8)),
        FrameScore("a_chunk_1R2", (0.9, 0.1)),
        FrameScore("b_chunk_1F2", (0.5, 0.5)),
    ]
    (a, (call_a, _)), (b, (call_b, _)) = rows_for([row("a", 300, 1, 2), row("b", 300, 1, 1)], frames)
    assert (a.chunk_calls[0].max_score_0, a.chunk_calls[0].max_score_1) == (0.9, 0.8)
    assert call_a == c.CALL_OTHERS  # max P(virus) 0.8 < max P(others) 0.9
    assert b.chunk_calls[0].is_virus and call_b == c.CALL_VIRUS  # tie -> virus (reference)
    assert frame_label((0.5, 0.5)) == c.CALL_OTHERS  # frame-level tie -> others (torch.max)


def test_sequence_call_rule_uses_fraction_of_chunks_with_a_frame():
    frames = [
        FrameScore("s_chunk_1F1", (0.1, 0.9)),
        FrameScore("s_chunk_2F1", (0.9, 0.1)),
        FrameScore("s_chunk_3R1", (0.8, 0.2)),
    ]
    record = row("s", 900, 4, 3)  # chunk 4 has no kept frame
    [(seq, (call, reason))] = rows_for([record], frames)
    assert seq.chunks_with_frame == 3 and seq.virus_chunks(CallRule()) == 1
    assert call == c.CALL_OTHERS and reason == "1/3 chunks virus"
    [(_, (call_low, _))] = rows_for([record], frames, CallRule(virus_fraction=0.3))
    assert call_low == c.CALL_VIRUS
    fields = dict(zip(c.SEQUENCE_PREDICTIONS_HEADER, seq.fields(CallRule())))
    assert fields["max_p_virus"] == repr(0.9)
    assert float(fields["mean_p_virus"]) == pytest.approx((0.9 + 0.1 + 0.2) / 3)
    assert fields["chunks"] == "4" and fields["chunks_with_frame"] == "3"


def test_one_chunk_read_gets_its_chunk_call_for_any_fraction():
    frames = [FrameScore("r_chunk_1F3", (0.3, 0.7))]
    for fraction in (0.01, 0.5, 1.0):
        [(_, (call, _))] = rows_for([row("r", 250, 1, 1)], frames, CallRule(fraction))
        assert call == c.CALL_VIRUS


def test_no_frame_and_empty_records_are_reported_not_dropped():
    results = rows_for([row("empty", 0, 1, 0), row("stops", 300, 1, 0)], [])
    assert [r[1] for r in results] == [
        (c.CALL_NO_FRAME, "empty sequence"),
        (c.CALL_NO_FRAME, "every frame of every chunk has a stop codon or no complete codon"),
    ]
    fields = results[1][0].fields(CallRule())
    assert fields[6:8] == ["NA", "NA"]


def test_a_frame_without_embedding_makes_the_sequence_failed_with_reason():
    frames = [
        FrameScore("x_chunk_1F1", (0.1, 0.9)),
        FrameScore("x_chunk_2F1", None, "no ESM-2 embeddings for shard shard_00001", "shard_00001"),
    ]
    [(seq, (call, reason))] = rows_for([row("x", 600, 2, 2)], frames)
    assert call == c.CALL_FAILED and "shard_00001" in reason
    assert len(seq.chunk_calls) == 1  # the scored chunk keeps its reference consensus row
    assert seq.fields(CallRule())[5:8] == ["0", "NA", "NA"]


def test_inconsistent_prepared_data_is_an_input_error():
    with pytest.raises(InputError, match="expected a frame of a"):
        rows_for([row("a", 300, 1, 1)], [FrameScore("b_chunk_1F1", (0.5, 0.5))])
    with pytest.raises(InputError, match="end of frames"):
        rows_for([row("a", 300, 1, 2)], [FrameScore("a_chunk_1F1", (0.5, 0.5))])


def test_writer_produces_reference_formats(tmp_path: Path):
    frames = [FrameScore("a_chunk_1F1", (0.25, 0.75)), FrameScore("a_chunk_1R1", (0.5, 0.5))]
    with PredictionWriter(tmp_path, CallRule()) as writer:
        for seq in group_by_record(iter([row("a", 300, 1, 2)]), iter(frames)):
            writer.write(seq)
    assert (tmp_path / c.PREDICTION_RESULTS).read_text() == (
        "Sequence_ID\tPrediction\tscore1\tscore2\n"
        "a_chunk_1F1\tvirus\t0.25\t0.75\n"
        "a_chunk_1R1\tothers\t0.5\t0.5\n"
    )
    assert (tmp_path / c.PREDICTION_HIGHEST).read_text() == (
        "Modified_ID\tIs_Virus\tmax_score_0\tmax_score_1\na_chunk_1\tTrue\t0.5\t0.75\n"
    )
    lines = (tmp_path / c.SEQUENCE_PREDICTIONS).read_text().splitlines()
    assert lines[0].split("\t") == list(c.SEQUENCE_PREDICTIONS_HEADER)
    assert lines[1].split("\t") == ["a", "a", "300", "1", "1", "1", "0.75", "0.75", "virus", "1/1 chunks virus", "in.fa", "NA", "virus"]


def test_writer_leaves_no_file_when_interrupted(tmp_path: Path):
    with pytest.raises(RuntimeError):
        with PredictionWriter(tmp_path, CallRule()):
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("failed", "calls", "expected"),
    [
        (0, {c.CALL_VIRUS: 2}, c.EXIT_OK),
        (1, {c.CALL_VIRUS: 2, c.CALL_FAILED: 1}, c.EXIT_PARTIAL),
        (1, {c.CALL_FAILED: 3}, c.EXIT_FAILED),
        (1, {c.CALL_NO_FRAME: 2, c.CALL_FAILED: 1}, c.EXIT_FAILED),  # nothing could be classified
        (0, {c.CALL_NO_FRAME: 2}, c.EXIT_OK),
    ],
)
def test_exit_status(failed: int, calls: dict, expected: int):
    result = ClassifyResult(failures=[c.Failure("f", "ESM-2", "x")] * failed)
    result.calls.update(calls)
    result.records = sum(calls.values())
    assert result.exit_status == expected


def test_failure_line_round_trip():
    failure = c.Failure("shards/protein/shard_00001.fa", c.STAGE_ESM, "out of\nmemory | at 1 sequence")
    assert failure.line() == "shards/protein/shard_00001.fa|ESM-2|out of memory / at 1 sequence"
    assert c.Failure.parse(failure.line()) == c.Failure(failure.file_path, "ESM-2", "out of memory / at 1 sequence")


def test_a_sequence_failure_names_its_sequence_and_survives_the_file():
    failure = c.Failure.of_sequence("shard_00001.fa", c.STAGE_ESM, "r1_chunk_1F2", "embedding not finite in fp16")
    parsed = c.Failure.parse(failure.line())
    assert parsed.failed_sequence() == ("r1_chunk_1F2", "embedding not finite in fp16")
    assert c.Failure("shard_00001.fa", c.STAGE_ESM, "no such file").failed_sequence() is None
    assert c.Failure("shard_00001.fa", c.STAGE_ESM, "sequence file unreadable").failed_sequence() is None


def test_a_sequence_failure_finds_its_frame_even_with_a_pipe_in_the_id():
    from virnucpro.classify import failure_key, upstream_reasons

    frame = "gi|123|ref|NC_1|_chunk_1F1"
    failure = c.Failure.of_sequence("shard_00000.fa", c.STAGE_ESM, frame, "embedding not finite in fp16")
    for given in (failure, c.Failure.parse(failure.line())):  # in memory (predict), or read back (classify --failed)
        by_frame, _by_shard = upstream_reasons([given])
        assert by_frame[failure_key(frame)] == "ESM-2: embedding not finite in fp16"


def test_prediction_files_are_all_written_or_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk when the last file is closed leaves none of the three (the others were renamed
    already), names that file, and leaves no temporary file behind."""
    real_atomic_open = classify_module.atomic_open

    @contextlib.contextmanager
    def disk_full_at_results(path: Path, mode: str = "w"):
        with real_atomic_open(path, mode) as handle:
            yield handle
            if path.name == c.PREDICTION_RESULTS:  # opened first, so closed last
                raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(classify_module, "atomic_open", disk_full_at_results)
    with pytest.raises(OSError) as raised, PredictionWriter(tmp_path, CallRule()):
        pass
    assert raised.value.filename == str(tmp_path / c.PREDICTION_RESULTS)
    assert list(tmp_path.iterdir()) == []


def test_a_non_finite_score_fails_its_frame_and_is_never_a_call(tmp_path: Path):
    import numpy as np
    import torch

    from virnucpro.classifier.model import ClassifierMeta, MLPClassifier
    from virnucpro.classify import FrameScorer
    from virnucpro.embeddings.store import save_embeddings

    ids = ["a_chunk_1F1", "b_chunk_1F1", "c_chunk_1F1"]
    dna, esm = np.ones((3, 4), dtype=np.float32), np.ones((3, 6), dtype=np.float32)
    esm[1, 2] = np.inf  # what a broken embedding (or an overflowing fp16 model) can hand over
    for name, matrix in (("dna", dna), ("esm", esm)):
        (tmp_path / name).mkdir()
        save_embeddings(tmp_path / name / "shard_00000.npz", ids, matrix, {})
    torch.manual_seed(0)
    result = ClassifyResult()
    scorer = FrameScorer(MLPClassifier(10, hidden_dim=8).eval(), ClassifierMeta(4, 6), tmp_path / "dna",
                         tmp_path / "esm", None, 16, result)  # fmt: skip
    scores = list(scorer.score_shard(ids, "shard_00000"))
    assert [s.scores is None for s in scores] == [False, True, False]
    assert scores[1].reason == "classifier score is not finite for frame b_chunk_1F1"
    (_, (call, reason)), = rows_for([row("b", 300, 1, 1)], [scores[1]])
    assert (call, reason) == (c.CALL_FAILED, scores[1].reason)


def test_a_pipe_or_line_break_in_a_file_path_is_escaped_in_failure_lines():
    """'|' separates the fields of failed_files.txt: one in an output path made lines ambiguous."""
    for path in ("out|x/shard_00000.fa", "100%|done/a.fa", "a%7Cb/new\nline.fa", "plain/shard.fa"):
        failure = c.Failure(path, c.STAGE_DNA, "not embedded: the run stopped")
        line = failure.line()
        assert line.count("|") == 2 and "\n" not in line
        assert line.split("|")[1:] == [c.STAGE_DNA, "not embedded: the run stopped"]
        assert c.Failure.parse(line) == failure
    assert c.Failure("out|x/s.fa", c.STAGE_DNA, "m").line() == "out%7Cx/s.fa|DNABERT-S|m"
    with pytest.raises(ValueError):
        c.Failure.parse("a|b|c|d")  # a path with a raw '|' was not written by us


def _scorer_over(tmp_path: Path, ids: list[str], made_from: dict[str, Path]):
    import numpy as np
    import torch

    from virnucpro.classifier.model import ClassifierMeta, MLPClassifier
    from virnucpro.classify import FrameScorer
    from virnucpro.embeddings.store import META_INPUT_SHA256, save_embeddings
    from virnucpro.seqio import file_sha256

    for name, dim in (("dna", 4), ("esm", 6)):
        (tmp_path / name).mkdir(exist_ok=True)
        meta = {META_INPUT_SHA256: file_sha256(made_from[name])}
        save_embeddings(tmp_path / name / "shard_00000.npz", ids, np.ones((len(ids), dim), np.float32), meta)
    torch.manual_seed(0)
    return FrameScorer(MLPClassifier(10, hidden_dim=8).eval(), ClassifierMeta(4, 6), tmp_path / "dna",
                       tmp_path / "esm", None, 16, ClassifyResult())  # fmt: skip


def test_embeddings_of_another_sample_with_the_same_shard_names_are_refused(tmp_path: Path):
    ours = tmp_path / "nucleotide.fa", tmp_path / "protein.fa"
    ours[0].write_text(">a_chunk_1F1\nACGTAC\n>b_chunk_1F1\nTTTGGG\n")
    ours[1].write_text(">a_chunk_1F1\nTY\n>b_chunk_1F1\nFG\n")
    theirs = tmp_path / "their_protein.fa"
    theirs.write_text(">a_chunk_1F1\nMK\n>b_chunk_1F1\nLL\n")  # another sample: same ids, other sequences
    ids = ["a_chunk_1F1", "b_chunk_1F1"]

    scorer = _scorer_over(tmp_path, ids, {"dna": ours[0], "esm": ours[1]})
    assert all(s.scores is not None for s in scorer.score_shard(ids, "shard_00000", ours))

    scorer = _scorer_over(tmp_path, ids, {"dna": ours[0], "esm": theirs})
    with pytest.raises(InputError) as error:
        list(scorer.score_shard(ids, "shard_00000", ours))
    assert str(error.value) == (
        f"{tmp_path / 'esm' / 'shard_00000.npz'}: embeddings of another input, not of {ours[1]} (its sha256 differs)"
    )

    scorer = _scorer_over(tmp_path, ["a_chunk_1F1", "z_chunk_1F1"], {"dna": ours[0], "esm": ours[1]})
    with pytest.raises(InputError, match=r"dna/shard_00000.npz: embeddings of another input, .*frame z_chunk_1F1"):
        list(scorer.score_shard(ids, "shard_00000", ours))


def test_scores_print_as_the_reference_s_repr_of_float32_item(tmp_path: Path):
    """The reference prints ``repr(tensor.item())``: a float32's exact value (0.10000000149011612),
    not the shortest text of the float32 (0.1) that str() of a numpy float32 gives."""
    import numpy as np

    from virnucpro.classify import predict_proba

    ids = ["a_chunk_1F1", "a_chunk_1R1"]
    scorer = _scorer_over(tmp_path, ids, {"dna": _fasta(tmp_path / "n.fa", ids), "esm": _fasta(tmp_path / "p.fa", ids)})
    scores = list(scorer.score_shard(ids, "shard_00000"))
    expected = predict_proba(scorer.model, np.ones((2, 10), np.float32))
    with PredictionWriter(tmp_path, CallRule()) as writer:
        for seq in group_by_record(iter([row("a", 300, 1, 2)]), iter(scores)):
            writer.write(seq)
    fields = [line.split("\t")[2:] for line in (tmp_path / c.PREDICTION_RESULTS).read_text().splitlines()[1:]]
    assert fields == [[repr(p.item()) for p in pair] for pair in expected]
    assert all(text != str(np.float32(text)) for pair in fields for text in pair)  # tells repr from str here
    assert float(np.float32(0.1).item()) == 0.10000000149011612 and str(np.float32(0.1)) == "0.1"


def _fasta(path: Path, ids: list[str]) -> Path:
    path.write_text("".join(f">{frame_id}\nMK\n" for frame_id in ids))
    return path
