"""Bad values of the output options are one-line errors (exit 1) before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from virnucpro import contracts as c
from virnucpro.cli import main

BAD = [
    (["--extract", "viral"], "'viral' is not a call; give calls from virus, others, no_coding_frame, failed"),
    (["--extract", "virus,none"], "none cannot be combined with calls"),
    (["--extract", ""], "an empty entry"),
    (["--pair-rule", "either"], "'either' is not one of 'any', 'both'"),
    (["--region-max-gap", "-1"], "-1 is not in the range x>=0"),
    (["--region-max-gap", "two"], "'two' is not a valid integer"),
    (["--region-min-chunks", "0"], "0 is not in the range x>=1"),
    (["--min-p-virus", "1.5"], "'--min-p-virus': 1.5 is not in the range"),
    (["--min-p-virus", "0"], "'--min-p-virus': 0"),
    (["--min-p-virus", "nan"], "nan is not a number"),
    (["--min-p-virus", "high"], "'high' is not a valid float"),
]


@pytest.fixture
def command_lines(tmp_path: Path) -> dict[str, list[str]]:
    reads = tmp_path / "reads.fa"
    reads.write_text(">a\nACGT\n")
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    return {
        "predict": ["predict", str(reads), "--outdir", str(tmp_path / "out")],
        "classify": ["classify", "--prepared", str(prepared), "--dna-embeddings", str(tmp_path), "--esm-embeddings",
                     str(tmp_path), "--outdir", str(tmp_path / "out")],  # fmt: skip
    }


@pytest.mark.parametrize("command", ["predict", "classify"])
@pytest.mark.parametrize(("option", "message"), BAD, ids=[" ".join(args) or "empty" for args, _ in BAD])
def test_bad_values_are_one_line_errors(command_lines, command: str, option: list[str], message: str, capsys) -> None:
    assert main([*command_lines[command], *option]) == c.EXIT_FAILED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("virnucpro: error: ") and message in err, err
    assert not (Path(command_lines[command][-1])).exists()  # nothing was started


@pytest.mark.parametrize("command", ["predict", "prepare"])
def test_bad_pairing_is_a_one_line_error(tmp_path: Path, command: str, capsys) -> None:
    reads = tmp_path / "reads.fa"
    reads.write_text(">a\nACGT\n")
    assert main([command, str(reads), "--outdir", str(tmp_path / "out"), "--pairing", "mates"]) == c.EXIT_FAILED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'mates' is not one of 'auto', 'paired', 'none'" in err


def test_paired_with_an_odd_number_of_files_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    reads = tmp_path / "reads.fa"
    reads.write_text(">a\nACGT\n")
    assert main(["prepare", str(reads), "--outdir", str(tmp_path / "out"), "--pairing", "paired"]) == c.EXIT_FAILED
    assert capsys.readouterr().err == (
        "virnucpro: error: --pairing paired needs mate files two by two (R1 R2 ...), got 1 files\n"
    )


def test_input_count_mismatch_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    reads = tmp_path / "reads.fa"
    reads.write_text(">a\nACGT\n")
    assert main(["prepare", str(reads), "--outdir", str(tmp_path / "prepared"), "--quiet"]) == c.EXIT_OK
    args = ["classify", "--prepared", str(tmp_path / "prepared"), "--dna-embeddings", str(tmp_path), "--esm-embeddings",
            str(tmp_path), "--outdir", str(tmp_path / "out"), "--input", str(reads), "--input", str(reads)]  # fmt: skip
    assert main(args) == c.EXIT_FAILED
    err = capsys.readouterr().err
    assert err == f"virnucpro: error: --input: 2 file(s) given, the prepared sample has 1 ({reads}), in that order\n"
