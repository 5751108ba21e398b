"""Atomic file writes: a temporary file beside the target, then a rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def give_default_mode(path: Path) -> None:
    """The mode a plain ``open(path, "w")`` would have given (files made by mkstemp are 0600)."""
    os.chmod(path, 0o666 & ~_umask())


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    An OSError without a file name (a write to a full disk, say) is given ``path``'s, so the
    one-line error says which output could not be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        give_default_mode(tmp_path)  # readable by others as usual: shared caches and results
        os.replace(tmp_path, path)
    except OSError as error:
        if error.filename is None:
            error.filename = str(path)
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


# Text files are UTF-8; what cannot be encoded (a file name's bytes that are not UTF-8, which
# Python holds as surrogates) is written escaped (``\udcff``) instead of losing the whole file.
TEXT_ERRORS = "backslashreplace"


def as_written(text: str) -> str:
    """``text`` as our text files hold it: a file name's bytes that are not UTF-8 escaped (:data:`TEXT_ERRORS`)."""
    return text.encode("utf-8", TEXT_ERRORS).decode("utf-8")


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` only if the block succeeds.

    Text is written as UTF-8, with :data:`TEXT_ERRORS`.
    """
    text = "b" not in mode
    options = {"encoding": "utf-8", "errors": TEXT_ERRORS} if text else {}
    with atomic_path(path) as tmp, open(tmp, mode, **options) as handle:
        yield handle


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path) as handle:
        handle.write(text)
