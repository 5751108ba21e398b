"""Every error reads as one line, the same on the console and in failed_files.txt."""

from __future__ import annotations

from pathlib import Path

import pytest

import virnucpro.cli as cli_module
from virnucpro.cli import main
from virnucpro.engine import embed_file
from virnucpro.errors import DeviceFailure, InputError, ModelError, Terminated, VirnucproError, error_line

from engine_doubles import FakeEmbedder


def test_the_hierarchy_is_the_documented_one() -> None:
    assert issubclass(InputError, VirnucproError) and issubclass(ModelError, VirnucproError)
    assert issubclass(DeviceFailure, RuntimeError) and not issubclass(DeviceFailure, VirnucproError)
    assert issubclass(Terminated, BaseException) and not issubclass(Terminated, Exception)


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (InputError("x.fa: record 3 (r3):\n  truncated"), "x.fa: record 3 (r3): truncated"),
        (FileNotFoundError(2, "No such file or directory", "x.fa"), "x.fa: no such file"),
        (PermissionError(13, "Permission denied", "out/x.npz"), "out/x.npz: Permission denied"),
        (OSError(28, "No space left on device"), "No space left on device"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "binary content, not a FASTA text file"),
        (ValueError("record 2 (b): empty sequence"), "record 2 (b): empty sequence"),
        (RuntimeError("boom"), "RuntimeError: boom"),
    ],
)
def test_error_line(error: BaseException, line: str) -> None:
    assert error_line(error) == line


def test_a_file_error_reads_the_same_on_the_console_and_in_failed_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    missing = tmp_path / "missing.faa"
    [failure] = embed_file(str(missing), FakeEmbedder(), tmp_path / "out.npz", 64).failures
    assert failure.message == f"{missing}: no such file"

    def refused(**_options: object) -> None:
        raise FileNotFoundError(2, "No such file or directory", str(missing))

    monkeypatch.setattr(cli_module.cli, "main", refused)
    assert main(["prepare", str(missing), "--outdir", "out"]) == 1
    assert capsys.readouterr().err == f"virnucpro: error: {failure.message}\n"
