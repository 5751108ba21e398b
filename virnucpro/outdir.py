"""Output directories: created with a one-line error, and held by one run at a time."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from virnucpro.errors import InputError, VirnucproError
from virnucpro.log import get_logger

log = get_logger("outdir")

LOCK_FILE = ".virnucpro.lock"


def make_outdir(outdir: Path) -> Path:
    """Create ``outdir`` (and its parents); a path that cannot be a directory is a one-line error."""
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise VirnucproError(f"{outdir}: cannot create the output directory ({error.strerror or error})") from None
    return outdir


@contextlib.contextmanager
def claimed_outdir(outdir: Path) -> Iterator[Path]:
    """Create ``outdir`` and hold an exclusive lock on ``outdir/.virnucpro.lock`` while the block runs.

    A second run into the same directory (which would mix both runs' files) stops at once with
    an InputError. The lock is the kernel's (``flock``): it goes with the process, so a killed
    run leaves at most an empty, unlocked file. The file is removed when the block ends. On a
    file system without ``flock`` the run goes on unlocked.
    """
    outdir = make_outdir(outdir)
    _refuse_inside_a_held_directory(outdir)
    lock_path = outdir / LOCK_FILE
    while True:
        handle = _open_lock(lock_path)
        try:
            if not _locked(handle, outdir):
                break  # no locking here: run unlocked
            if _same_file(handle, lock_path):
                try:
                    remove_stale_temporaries(outdir)
                    yield outdir
                finally:
                    lock_path.unlink(missing_ok=True)  # still locked: nobody can take the old file meanwhile
                return
        finally:
            handle.close()
        # the holder removed the file between our open and our lock: take the new one
    try:
        remove_stale_temporaries(outdir)
        yield outdir
    finally:
        lock_path.unlink(missing_ok=True)


# What atomic.atomic_path names its temporaries: ".{name}.{8 random characters of mkstemp}.tmp".
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def _refuse_inside_a_held_directory(outdir: Path) -> None:
    """A directory inside one a run holds (``predict``'s ``DIR/work/...``) belongs to that run."""
    for parent in outdir.resolve().parents:
        if _held_by_another(parent / LOCK_FILE):
            raise InputError(f"{outdir}: inside {parent}, where another virnucpro run is writing")


def remove_stale_temporaries(outdir: Path) -> int:
    """Remove the temporary files a killed run left anywhere under ``outdir`` (ours only: named as
    :func:`virnucpro.atomic.atomic_path` names them). A directory below that another run holds
    stops the run: both would write into it.

    Called with ``outdir`` held, so no run of ours is writing there. Returns how many were removed.
    """
    removed = 0
    for directory, _subdirectories, files in os.walk(outdir):
        here = Path(directory)
        if here != outdir and LOCK_FILE in files and _held_by_another(here / LOCK_FILE):
            raise InputError(f"{outdir}: another virnucpro run is writing into {here}, inside it")
        for name in files:
            if _TEMPORARY.match(name):
                (here / name).unlink(missing_ok=True)
                removed += 1
    if removed:
        log.info("%s: removed %d temporary file(s) left by an interrupted run", outdir, removed)
    return removed


def _held_by_another(lock_path: Path) -> bool:
    """True when a run holds the lock ``lock_path`` (a lock file left by a killed run is not held)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def _open_lock(lock_path: Path):
    """Open (or create) the lock file itself: never the target of a symbolic link planted in its place,
    and only a regular file (a FIFO or device there is refused, not opened for writing)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(lock_path, flags, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InputError(f"{lock_path}: is a symbolic link; refusing to use it as the lock file") from None
        raise VirnucproError(f"{lock_path}: cannot open the lock file ({error.strerror or error})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(f"{lock_path}: is not a regular file; refusing to use it as the lock file")
    return os.fdopen(fd, "r+")


def _locked(handle, outdir: Path) -> bool:
    """Take the exclusive lock (False where the file system has no locking)."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise InputError(f"{outdir}: another virnucpro run is writing into this directory") from None
    except OSError as error:
        if error.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        log.debug("%s: no file locking on this file system (%s); not locked", outdir, error.strerror)
        return False
    return True


def _same_file(handle, path: Path) -> bool:
    """True while ``path`` still names the file ``handle`` has open."""
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False
