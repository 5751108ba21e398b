"""Output directories: one-line errors, and one run at a time per directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from virnucpro import contracts as c
from virnucpro.cli import main
from virnucpro.errors import InputError, VirnucproError
from virnucpro.outdir import LOCK_FILE, claimed_outdir, make_outdir

READS = str(Path(__file__).parents[1] / "assets" / "test_reads.fa")


def test_a_second_run_into_a_claimed_directory_is_refused(tmp_path: Path, capsys) -> None:
    outdir = tmp_path / "out"
    with claimed_outdir(outdir):
        assert (outdir / LOCK_FILE).exists()
        with pytest.raises(InputError, match="another virnucpro run is writing into this directory"):
            with claimed_outdir(outdir):
                pass
        for command in (["prepare", READS], ["summarize", str(tmp_path)]):
            assert main([*command, "--outdir", str(outdir)]) == c.EXIT_FAILED
            assert capsys.readouterr().err.splitlines() == [
                f"virnucpro: error: {outdir}: another virnucpro run is writing into this directory"
            ]
        assert sorted(p.name for p in outdir.iterdir()) == [LOCK_FILE]  # the refused runs wrote nothing
    assert list(outdir.iterdir()) == []  # released and removed: no clutter in the results
    assert main(["prepare", READS, "--outdir", str(outdir), "--quiet"]) == c.EXIT_OK
    assert not (outdir / LOCK_FILE).exists()


def test_a_lock_file_left_by_a_killed_run_does_not_block(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text("")  # a run killed with -9 leaves the file, not the lock
    with claimed_outdir(tmp_path):
        pass
    assert not (tmp_path / LOCK_FILE).exists()


def test_an_outdir_that_cannot_be_a_directory_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    with pytest.raises(VirnucproError, match=r"a_file/sub: cannot create the output directory \(Not a directory\)$"):
        make_outdir(tmp_path / "a_file" / "sub")


def test_a_file_system_without_locking_runs_unlocked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import fcntl

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with claimed_outdir(tmp_path / "nfs") as outdir:
        with claimed_outdir(outdir):  # nothing to hold: both run (as before locking existed)
            pass
    assert outdir.is_dir() and list(outdir.iterdir()) == []


def test_a_lock_file_replaced_while_waiting_is_taken_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The holder removed the file between our open and our lock: the new file is locked instead."""
    from virnucpro import outdir as module

    checks = iter([False, True])
    monkeypatch.setattr(module, "_same_file", lambda handle, path: next(checks))
    with claimed_outdir(tmp_path):
        assert (tmp_path / LOCK_FILE).exists()
    assert next(checks, "all used") == "all used"  # opened and locked twice


def test_a_lock_file_planted_as_a_symlink_is_refused_and_its_target_untouched(tmp_path: Path, capsys) -> None:
    outdir = tmp_path / "out"
    outdir.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (outdir / LOCK_FILE).symlink_to(target)
    dangling = tmp_path / "out2"
    dangling.mkdir()
    (dangling / LOCK_FILE).symlink_to(tmp_path / "would_be_created")
    for directory in (outdir, dangling):
        assert main(["prepare", READS, "--outdir", str(directory), "--quiet"]) == c.EXIT_FAILED
        assert capsys.readouterr().err.splitlines() == [
            f"virnucpro: error: {directory / LOCK_FILE}: is a symbolic link; refusing to use it as the lock file"
        ]
    assert target.read_text() == "keep me" and not (tmp_path / "would_be_created").exists()
    assert sorted(p.name for p in outdir.iterdir()) == [LOCK_FILE]  # nothing written


def test_a_lock_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / LOCK_FILE)  # opening a FIFO for writing would block the run
    with pytest.raises(InputError, match="is not a regular file; refusing to use it as the lock file$"):
        with claimed_outdir(tmp_path):
            pass
    (tmp_path / LOCK_FILE).unlink()
    (tmp_path / LOCK_FILE).mkdir()
    with pytest.raises(VirnucproError, match=f"{LOCK_FILE}: (cannot open the lock file|is not a regular file)"):
        with claimed_outdir(tmp_path):
            pass


def test_temporaries_a_killed_run_left_are_removed_when_the_next_run_starts(tmp_path: Path) -> None:
    """SIGKILL leaves '.NAME.XXXXXXXX.tmp' files (25-66 MB each) under the output and work/."""
    outdir = tmp_path / "out"
    left = [
        outdir / ".sequence_predictions.tsv.k2j3h4g5.tmp",
        outdir / "work" / "prepared" / ".frames.protein.faa.a_b9c8d7.tmp",
        outdir / "work" / "embeddings" / "esm" / ".shard_00000.npz.zzzzzzzz.tmp",
    ]
    kept = [outdir / "notes.tmp", outdir / ".hidden", outdir / ".a.tmp", outdir / "work" / "shard_00000.npz"]
    for path in [*left, *kept]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("partial")
    with claimed_outdir(outdir):
        assert [path.exists() for path in left] == [False] * len(left)
        assert all(path.exists() for path in kept)


def test_a_directory_inside_one_a_run_holds_is_refused_both_ways(tmp_path: Path, capsys) -> None:
    """`prepare` into a running predict's DIR/work/prepared was accepted: 20 rows for 5,000 records."""
    outdir = tmp_path / "out"
    inside = outdir / "work" / "prepared"
    with claimed_outdir(outdir):
        assert main(["prepare", READS, "--outdir", str(inside), "--quiet"]) == c.EXIT_FAILED
        assert capsys.readouterr().err.splitlines() == [
            f"virnucpro: error: {inside}: inside {outdir.resolve()}, where another virnucpro run is writing"
        ]
    assert not (inside / "manifest.tsv").exists()
    with claimed_outdir(inside):
        (inside / ".x.fa.abcdefgh.tmp").write_text("being written")
        with pytest.raises(InputError, match=f"{outdir}: another virnucpro run is writing into {inside}, inside it$"):
            with claimed_outdir(outdir):
                pass
        assert (inside / ".x.fa.abcdefgh.tmp").exists()  # the other run's file is left alone
    assert main(["prepare", READS, "--outdir", str(outdir), "--quiet"]) == c.EXIT_OK
