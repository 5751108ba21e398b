"""Input reading: formats by content, equivalent spellings, unique ids, one-line errors."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
from pathlib import Path

import pytest

from virnucpro.cli import main
from virnucpro.errors import InputError
from virnucpro.seqio import Record, file_sha256, read_fasta, read_records, write_fasta_record

from helpers import captured_log, read_tsv

CLEAN = ">r1 first read\nACGTACGTAAGGCCTT\n>r2\nTTGGCCAANRYK\n>r3 x\nGGGAAACCCTTT\n"
CLEAN_PAIRS = [("r1", "ACGTACGTAAGGCCTT"), ("r2", "TTGGCCAANRYK"), ("r3", "GGGAAACCCTTT")]


def _write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _pairs(*paths: Path) -> list[tuple[str, str]]:
    return [(record.id, record.seq) for record in read_records(paths)]


def test_fasta_records(tmp_path: Path) -> None:
    path = _write(tmp_path / "in.fa", CLEAN)
    records = list(read_records([str(path)]))
    assert [(r.id, r.seq) for r in records] == CLEAN_PAIRS
    assert records[0] == Record("r1", "r1", "ACGTACGTAAGGCCTT", str(path), 0)
    assert [r.index for r in records] == [0, 1, 2]


@pytest.mark.parametrize(
    "variant",
    [
        CLEAN.lower(),
        CLEAN.replace("\n", "\r\n"),
        ">r1 first read\nACGTACGT\nAAGGCCTT\n>r2\nTTGG\nCCAA\nNRYK\n\n>r3 x\nGGG\nAAA\nCCC\nTTT",  # wrapped, no final newline
        "\n\n" + CLEAN.replace("ACGTACGT", "ACGT ACGT\t"),  # leading blank lines, spaces in sequence lines
        "\ufeff" + CLEAN,  # UTF-8 byte order mark
    ],
    ids=["lowercase", "crlf", "wrapped", "whitespace", "bom"],
)
def test_equivalent_spellings(tmp_path: Path, variant: str) -> None:
    clean = _pairs(_write(tmp_path / "clean.fa", CLEAN))
    assert _pairs(_write(tmp_path / "variant.fa", variant)) == clean == CLEAN_PAIRS


def _fastq(pairs: list[tuple[str, str]]) -> str:
    return "".join(f"@{name} extra\n{seq}\n+\n{'I' * len(seq)}\n" for name, seq in pairs)


def test_fastq_plain_wrapped_crlf_and_gzip_by_content(tmp_path: Path) -> None:
    text = _fastq(CLEAN_PAIRS)
    wrapped = "@r1\nACGTACGT\nAAGGCCTT\n+r1\nIIIIIIII\n@IIIIIII\n@r2\nTTGGCCAANRYK\n+\n@@@@@@@@@@@@\n@r3\nGGGAAACCCTTT\n+\nIIIIIIIIIIII\n"
    files = [
        _write(tmp_path / "reads.fq", text),
        _write(tmp_path / "wrapped.fastq", wrapped),
        _write(tmp_path / "crlf.fq", text.replace("\n", "\r\n")),
        _write(tmp_path / "reads.fq.gz", gzip.compress(text.encode())),
        _write(tmp_path / "misleading.fa", gzip.compress(text.encode())),  # gzip FASTQ named .fa
        _write(tmp_path / "plain_named.fa.gz", CLEAN),  # plain FASTA named .gz
    ]
    for path in files:
        assert _pairs(path) == CLEAN_PAIRS, path.name


@pytest.mark.parametrize("compress", [bz2.compress, lzma.compress], ids=["bzip2", "xz"])
def test_bzip2_and_xz_are_read_by_content_to_the_end_of_every_stream(tmp_path: Path, compress) -> None:
    """Multi-stream files (pbzip2, parts concatenated with cat) hold records after the first stream's end."""
    first, rest = CLEAN.split(">r2")
    streams = _write(tmp_path / "reads.bin", compress(first.encode()) + compress((">r2" + rest).encode()))
    assert _pairs(streams) == CLEAN_PAIRS
    assert _pairs(_write(tmp_path / "reads.fa", compress(_fastq(CLEAN_PAIRS).encode()))) == CLEAN_PAIRS


@pytest.mark.parametrize(
    "text",
    [
        "\n\n@r1 desc\nACGT\n+\nIIII\n@r2\nGG\n+\nII\n",  # blank lines before the first record
        "@r1 desc\nACGT\n+r1\nIIII\n@r2\nGG\n+r2 other words\nII\n",  # '+' repeating part of the header, or not
        "@r1 desc\nACGT\n+\n+III\n@r2\nGG\n+\n@I\n",  # qualities starting with '+' and '@'
    ],
)
def test_fastq_variants_seen_in_real_files_are_read(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path / "reads.fq", text)
    assert [(r.id, r.seq) for r in read_records([path])] == [("r1", "ACGT"), ("r2", "GG")]


@pytest.mark.parametrize(
    "text",
    [
        "@a\nACGTACGTAC\n+\nIIIII\n@b\nATGGCC\n+\nIIIIII\n@c\nAC\n+\nII\n",  # 5 of 10: @b is no quality line
        "@a\nACGTAC\nGTAC\n+\nIIII\nIII\n@b\nATG\n+\nIII\n",  # wrapped, 7 of 10
        "@a\nACGTACGTAC\n+\nIIIII\n\n@b\nATG\n+\nIII\n",  # a blank line is no quality line either
        "@a\nACGTACGTAC\n+\nIIIII\n@bcde\nATGGC\n+\nIIIII\n",  # '@bcde' would complete it: its sequence follows
    ],
)
def test_a_short_quality_line_is_an_error_not_the_next_record(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path / "short.fq", text)
    with pytest.raises(InputError, match=r"record 1 \(a\) has 10 bases but [57] quality values"):
        list(read_records([path]))


@pytest.mark.parametrize(
    "text",
    [
        "@a\nACGTACGT\n+\nIIII\nIIII\n@b\nAT\n+\nII\n",
        "@a\nACGTACGT\n+\nIIII\n@III\n@b\nAT\n+\nII\n",  # the wrapped part starts with '@' (Q31)
        "@a\nACGTACGT\n+\nIIII\n@III\n\n@b\nAT\n+\nII",  # then a blank line; no newline at the end
    ],
)
def test_quality_wrapped_apart_from_the_sequence_is_read(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path / "qwrapped.fq", text)
    assert _pairs(path) == [("a", "ACGTACGT"), ("b", "AT")]


def test_a_file_given_twice_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from virnucpro.seqio import check_inputs

    reads = _write(tmp_path / "a.fa", CLEAN)
    other = _write(tmp_path / "b.fa", CLEAN)
    check_inputs([reads, other])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hard.fa").hardlink_to(reads)
    (tmp_path / "soft.fa").symlink_to(reads)
    for paths in ([str(reads), str(other), str(reads)], [str(reads), "a.fa"], [str(reads), "hard.fa"], [str(reads), "soft.fa"]):
        with pytest.raises(InputError, match=rf"^{paths[-1]}: given twice \(also as {reads}\)"):
            check_inputs(paths)


def test_several_files_in_order_with_unique_ids(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.fa", ">x\nAAA\n>x\nCCC\n>x_dup2\nGGG\n>y\nTTT\n")
    b = _write(tmp_path / "b.fq", "@x\nACG\n+\nIII\n@y desc\nTGA\n+\nIII\n")
    records = list(read_records([a, b]))
    assert [r.id for r in records] == ["x", "x_dup2", "x_dup2_dup2", "y", "x_dup3", "y_dup2"]
    assert [r.original_id for r in records] == ["x", "x", "x_dup2", "y", "x", "y"]
    assert [r.source for r in records] == [str(a)] * 4 + [str(b)] * 2
    assert [r.index for r in records] == list(range(6))
    assert len({r.id for r in records}) == len(records)
    assert [r.id for r in read_records([a, b])] == [r.id for r in records]  # deterministic


def test_empty_records_among_good_ones_are_kept(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.fa", ">empty1\n>good\nACGT\n>empty2\n\n>good2\nTT\n")
    assert _pairs(path) == [("empty1", ""), ("good", "ACGT"), ("empty2", ""), ("good2", "TT")]
    fastq = _write(tmp_path / "e.fq", "@empty\n\n+\n\n@good\nACG\n+\nIII\n")
    assert _pairs(fastq) == [("empty", ""), ("good", "ACG")]


def test_a_header_in_latin_1_is_text(tmp_path: Path) -> None:
    path = _write(tmp_path / "latin1.fa", b">r1 Escherichia coli, souche isol\xe9e \xe0 Lyon\nACGT\n")
    assert _pairs(path) == [("r1", "ACGT")]


def test_iupac_letters_and_gaps_are_kept(tmp_path: Path) -> None:
    path = _write(tmp_path / "iupac.fa", ">a\nacgtunrykmswbdhv-.\n")
    assert _pairs(path) == [("a", "ACGTUNRYKMSWBDHV-.")]


def test_read_records_is_lazy(tmp_path: Path) -> None:
    path = _write(tmp_path / "late_error.fa", ">ok\nACGT\n>bad\nMKLVEFQ\n")
    records = read_records([path])
    assert next(records).id == "ok"  # the bad record further on is not read yet
    with pytest.raises(InputError, match="bad"):
        next(records)


def test_digests_are_file_sha256(tmp_path: Path) -> None:
    plain = _write(tmp_path / "a.fa", CLEAN)
    packed = _write(tmp_path / "b.fa.gz", gzip.compress(CLEAN.encode() * 50))
    digests: dict[str, str] = {}
    assert len(list(read_records([plain, packed], digests))) == 3 + 150
    assert digests == {str(plain): file_sha256(plain), str(packed): file_sha256(packed)}
    assert digests[str(plain)] == hashlib.sha256(CLEAN.encode()).hexdigest()


def test_read_fasta_and_write_fasta_record_round_trip(tmp_path: Path) -> None:
    buffer = io.StringIO()
    for name, seq in CLEAN_PAIRS + [("empty", "")]:
        write_fasta_record(buffer, name, seq)
    assert buffer.getvalue().count("\n") == 8
    path = _write(tmp_path / "own.fa", buffer.getvalue())
    assert list(read_fasta(path)) == CLEAN_PAIRS + [("empty", "")]


def _compressed_reads(compress) -> bytes:
    return compress(("".join(f">r{i}\n{'ACGT' * 50}\n" for i in range(2000))).encode())


def _truncated(compress) -> bytes:
    data = _compressed_reads(compress)
    return data[: len(data) // 2]


def _damaged(compress) -> bytes:
    """Bytes changed in the middle of the compressed data (a bad copy), the end intact."""
    data = bytearray(_compressed_reads(compress))
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(16)
    return bytes(data)


# name -> (file content or None for "do not create", words the error must contain)
BAD_INPUTS: dict[str, tuple[bytes | None, list[str]]] = {
    "missing.fa": (None, ["no such file"]),
    "junk.bin": (bytes(range(256)) * 8, ["binary"]),
    "junk_gz.fa": (gzip.compress(bytes(range(1, 256)) * 8), ["binary"]),  # no NUL: control bytes
    "latin1_seq.fa": (b">ok caf\xe9 header\nACGT\n>bad\nAC\xe9GT\n", ["record 2", "bad", "not text"]),
    "noheader.fa": (b"ACGTACGT\nACGT\n", ["'>' or '@'"]),
    "truncated.fq": (b"@r1\nACGT\n+\nIIII\n@r2\nACGTAC\n+\nII", ["r2", "quality"]),
    "no_plus.fq": (b"@r1\nACGT\n+\nIIII\n@r2\nACGT\n", ["r2", "'+'"]),
    "no_at.fq": (b"@r1\nACGT\n+\nIIII\nr2\nACGT\n+\nIIII\n", ["record 1", "r1", "quality"]),
    "protein.fa": (b">dna\nACGT\n>prot1 some protein\nMKLVEFQPACGT\n", ["record 2", "prot1", "E", "F", "L", "protein"]),
    "no_id.fa": (b">\nACGT\n", ["record 1", "id"]),
    "reads.fa.zst": (b"\x28\xb5\x2f\xfd" + bytes(20), ["zstd", "not supported", "bzip2 or xz"]),
    "truncated.fa.bz2": (_truncated(bz2.compress), ["cannot read"]),
    "truncated.fa.xz": (_truncated(lzma.compress), ["cannot read"]),
    "damaged.fa.xz": (_damaged(lzma.compress), ["cannot read"]),
    "damaged.fa.bz2": (_damaged(bz2.compress), ["cannot read"]),
    "truncated.fa.gz": (_truncated(gzip.compress), ["cannot read"]),
}


# A sample without reads (a blank control, reads all trimmed away) is data, not a mistake.
NO_SEQUENCES: dict[str, tuple[bytes, list[tuple[str, str]], str]] = {
    "empty.fa": (b"", [], "no sequences (an empty file)"),
    "blank.fa": (b"\n  \n\n", [], "no sequences (an empty file)"),
    "empty.fq.gz": (gzip.compress(b""), [], "no sequences (an empty file)"),
    "only_empty.fq": (b"@a\n\n+\n\n@b desc\n\n+\n\n", [("a", ""), ("b", "")], "all 2 records are empty (no sequence letters)"),
}


@pytest.mark.parametrize("name", list(NO_SEQUENCES))
def test_a_file_without_sequences_is_a_sample_without_reads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    content, pairs, warning = NO_SEQUENCES[name]
    path = _write(tmp_path / name, content)
    digests: dict[str, str] = {}
    with captured_log(caplog):
        assert [(r.id, r.seq) for r in read_records([path], digests)] == pairs
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [f"{path}: {warning}"]
    assert digests == {str(path): file_sha256(path)}  # --resume can still tell whether it changed


def test_a_sample_without_reads_gets_empty_results_and_exit_0(tmp_path: Path, test_models) -> None:
    empty = _write(tmp_path / "blank_control.fq.gz", gzip.compress(b""))
    trimmed = _write(tmp_path / "trimmed.fq", NO_SEQUENCES["only_empty.fq"][0])
    models = ["--classifier", str(test_models.classifier), "--esm-model", str(test_models.esm), "--dna-model", str(test_models.dna)]
    assert main(["predict", str(empty), "--outdir", str(tmp_path / "blank"), *models, "--quiet"]) == 0
    assert (tmp_path / "blank" / "sequence_predictions.tsv").read_text().count("\n") == 1  # the header only
    assert gzip.decompress((tmp_path / "blank" / "viral" / "blank_control.viral.fq.gz").read_bytes()) == b""
    assert main(["predict", str(trimmed), "--outdir", str(tmp_path / "trimmed"), *models, "--quiet"]) == 0
    rows = read_tsv(tmp_path / "trimmed" / "sequence_predictions.tsv")
    assert [(r["id"], r["reason"]) for r in rows] == [("a", "empty sequence"), ("b", "empty sequence")]


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_line_error(tmp_path: Path, name: str) -> None:
    content, words = BAD_INPUTS[name]
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        list(read_records([path]))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for word in words:
        assert word in message


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_through_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    content, _ = BAD_INPUTS[name]
    good = _write(tmp_path / "good.fa", CLEAN)
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    code = main(["prepare", str(good), str(path), "--outdir", str(tmp_path / "out"), "--chunk-length", "300"])
    err = capsys.readouterr().err
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert str(path) in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "manifest.tsv").exists()


def test_directory_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="directory"):
        list(read_records([tmp_path]))


def test_a_control_byte_in_a_header_is_refused_wherever_it_is(tmp_path: Path) -> None:
    """A NUL in the first 64 KiB was refused as binary, after them accepted and written raw into the TSV."""
    filler = b"".join(b">r%d\nACGTACGTAC\n" % i for i in range(8000))  # > 64 KiB before the bad header
    assert len(filler) > 1 << 16
    for header, shown in ((b"bad\x00id", "'\\x00'"), (b"bad\x07id", "'\\x07'")):
        path = _write(tmp_path / "late.fa", filler + b">" + header + b" desc\nACGT\n")
        with pytest.raises(InputError) as error:
            list(read_records([path]))
        assert str(error.value) == f"{path}: record 8001: control character {shown} in the header (binary content?)"


def test_ids_with_bytes_that_are_not_utf_8_stay_distinct_and_the_change_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path / "ids.fa", b">caf\xe9\nACGT\n>caf\xe8\nACGT\n>plain caf\xe9 in the description\nAC\n")
    with captured_log(caplog):
        records = list(read_records([path]))
    assert [(r.id, r.original_id) for r in records] == [
        ("caf\\xe9", "caf\\xe9"), ("caf\\xe8", "caf\\xe8"), ("plain", "plain")
    ]  # distinct, not both 'caf\ufffd' (then 'caf\ufffd_dup2')
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"{path}: 2 id(s) with bytes that are not UTF-8 are written with the bytes escaped (first: record 1, caf\\xe9)"
    ]
