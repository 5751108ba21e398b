"""A stop (SIGTERM, Ctrl-C) that breaks some cleanup on its way is still a stop, never a failed file.

The case that made this test file: a SIGTERM arriving while the embedding file's zip writer had
just opened a member left the zip "open for writing"; closing it raised ValueError, whose context
is the interruption. Recorded as an ordinary failure, the file was blamed (exit 2) and the run
went on after the scheduler had asked it to stop.
"""

from __future__ import annotations

import gc
import signal
import zipfile
from pathlib import Path

import pytest

from virnucpro.cli import main
from virnucpro.engine import embed_file, run_embedding
from virnucpro.errors import InputError, Terminated, interruption_behind, raise_interruption_behind

from engine_doubles import FakeEmbedder, FakeSpec, protein, write_fasta


class Stop(BaseException):
    """Stands for an interruption (Terminated, KeyboardInterrupt) without pytest treating it as Ctrl-C."""


def _raised_during(interruption: BaseException, error: Exception) -> Exception:
    """``error`` as Python makes it when cleanup fails while ``interruption`` unwinds."""
    try:
        try:
            raise interruption
        finally:
            raise error
    except Exception as raised:  # noqa: BLE001
        return raised


def test_the_interruption_behind_an_error_is_found_through_causes_and_suppressed_contexts() -> None:
    stop = Stop()
    broken = _raised_during(stop, ValueError("Can't close the ZIP file"))
    assert interruption_behind(broken) is stop
    try:  # wrapped the way our loaders wrap errors: `raise ModelError(...) from None`
        try:
            raise broken
        except ValueError:
            raise InputError("x.npz: not a valid embedding file") from None
    except InputError as wrapped:
        assert interruption_behind(wrapped) is stop
    assert interruption_behind(ValueError("plain")) is None
    assert interruption_behind(_raised_during(GeneratorExit(), ValueError("closed"))) is None  # not a stop
    with pytest.raises(Stop):
        raise_interruption_behind(broken)
    raise_interruption_behind(ValueError("plain"))  # nothing behind it: returns


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_stop_while_the_output_zip_is_written_stops_the_file_instead_of_failing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real mechanism: the signal lands just after zipfile opened a member for writing."""
    fasta = write_fasta(tmp_path / "in.faa", [(f"s{i}", protein(i, 20)) for i in range(4)])
    opened = zipfile.ZipFile._open_to_write

    def open_then_stop(self: zipfile.ZipFile, *args: object, **kwargs: object) -> object:
        member = opened(self, *args, **kwargs)  # the zip is "open for writing"; the member never reaches `with`
        assert member is not None  # held by this frame, as by the frame the signal interrupted
        raise Stop()

    monkeypatch.setattr(zipfile.ZipFile, "_open_to_write", open_then_stop)
    with pytest.raises(Stop) as stopped:
        embed_file(str(fasta), FakeEmbedder(), tmp_path / "out.npz", 64)
    del stopped  # its traceback holds the half-open zip, which complains as it is collected: here, not later
    gc.collect()
    assert not (tmp_path / "out.npz").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_without_an_interruption_the_same_broken_write_is_the_files_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other side: an ordinary error in the same place is still data (exit 2, not a crash)."""
    fasta = write_fasta(tmp_path / "in.faa", [(f"s{i}", protein(i, 20)) for i in range(4)])

    def broken_write(self: zipfile.ZipFile, *args: object, **kwargs: object) -> object:
        raise ValueError("zip writer broke")

    monkeypatch.setattr(zipfile.ZipFile, "_open_to_write", broken_write)
    result = embed_file(str(fasta), FakeEmbedder(), tmp_path / "out.npz", 64)
    assert [failure.message for failure in result.failures] == ["zip writer broke"]


class _StoppingSpec(FakeSpec):
    def load(self, device: str = "cpu") -> FakeEmbedder:
        raise _raised_during(Stop(), RuntimeError("checkpoint reader broke"))


def test_a_stop_during_the_model_load_is_not_a_systemic_failure(tmp_path: Path) -> None:
    fasta = write_fasta(tmp_path / "in.faa", [("s0", protein(0, 20))])
    with pytest.raises(Stop):
        run_embedding([str(fasta)], _StoppingSpec(), tmp_path / "out", 64, workers=1, progress="quiet")
    assert not (tmp_path / "out" / "failed_files.txt").exists()


def test_the_cli_ends_a_run_whose_error_hides_a_sigterm_as_terminated(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Without the handler's flag (the Terminated here is raised by hand): the error's context alone decides."""
    import virnucpro.cli as cli_module

    def broken_command(**_options: object) -> None:
        raise _raised_during(Terminated(), OSError(5, "Input/output error", "out/x.npz"))

    monkeypatch.setattr(cli_module.cli, "main", broken_command)
    assert main(["embed-esm", "x.faa", "--outdir", "out"]) == 128 + signal.SIGTERM
    assert capsys.readouterr().err == "virnucpro: terminated (SIGTERM); finished outputs are kept: --resume continues\n"

    def broken_by_ctrl_c(**_options: object) -> None:
        raise _raised_during(KeyboardInterrupt(), InputError("x.faa: record 3: truncated"))

    monkeypatch.setattr(cli_module.cli, "main", broken_by_ctrl_c)
    assert main(["embed-esm", "x.faa", "--outdir", "out"]) == 1
    assert capsys.readouterr().err == "virnucpro: interrupted; finished outputs are kept: --resume continues\n"

    def user_error(**_options: object) -> None:
        raise InputError("x.faa: record 3: truncated")

    monkeypatch.setattr(cli_module.cli, "main", user_error)
    assert main(["embed-esm", "x.faa", "--outdir", "out"]) == 1
    assert capsys.readouterr().err == "virnucpro: error: x.faa: record 3: truncated\n"
