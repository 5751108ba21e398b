#!/usr/bin/env python3
"""Launch one ``virnucpro`` stage from a Nextflow task: ``virnucpro_stage.py STAGE [OPTIONS] ...``.

Nextflow puts ``bin/`` on the PATH of every task, so the modules call this script instead of
the ``virnucpro`` entry point. It runs the same CLI (same options, same exit codes 0/2/1):

- from a plain clone, without installing anything but the dependencies, the package next to
  this script (``../virnucpro``) is imported, so the pipeline always runs its own version;
- inside the project's images (``VIRNUCPRO_STAGE_PACKAGE=installed``, set by
  containers/Dockerfile.*), the image's package is used even where the engine happens to mount
  the clone (Singularity/Apptainer bind the home directory): the image is the software a task
  runs, whatever the engine; wherever ``bin/`` was copied alone, the installed package is used too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _use_repository_package() -> None:
    """Put the clone holding this script first on sys.path when it contains the package (not in the images)."""
    if os.environ.get("VIRNUCPRO_STAGE_PACKAGE") == "installed":
        return
    if (REPO_ROOT / "virnucpro" / "__init__.py").is_file() and str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


def _writable_home() -> None:
    """Give the task a writable HOME (and cache home) when it has none.

    A container may start the task with a HOME that does not exist or cannot be written (no home
    in the image; Singularity/Apptainer with --containall or a read-only home), and libraries keep
    their caches below it (Hugging Face, Triton, torch). Those then go to the task's directory.
    """
    for variable in ("HOME", "XDG_CACHE_HOME"):
        current = os.environ.get(variable)
        if variable == "XDG_CACHE_HOME" and current is None:
            continue  # unset: the libraries use $HOME/.cache, made writable above
        if not current or not os.access(current, os.W_OK):
            fallback = Path.cwd() / (".home" if variable == "HOME" else ".home/.cache")
            fallback.mkdir(parents=True, exist_ok=True)
            os.environ[variable] = str(fallback)
    # Scratch caches set to a shared place (the GPU image's TRITON_CACHE_DIR in /tmp, which
    # Singularity/Apptainer share between the users of a node): another user's directory there
    # cannot be written, so this task keeps its own.
    for variable in ("TRITON_CACHE_DIR", "MPLCONFIGDIR"):
        current = os.environ.get(variable)
        if current and not _usable_directory(Path(current)):
            fallback = Path.cwd() / ".home" / ".cache" / variable.lower()
            fallback.mkdir(parents=True, exist_ok=True)
            os.environ[variable] = str(fallback)


def _usable_directory(path: Path) -> bool:
    """Whether ``path`` is (or can be made) a directory this process can write."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


_use_repository_package()

if __name__ == "__main__" and sys.argv[1:] == ["--version"]:
    # Every task records versions: answer without loading the CLI and its heavy imports.
    from virnucpro import __version__

    print(f"virnucpro, version {__version__}")
    sys.exit(0)

from virnucpro.cli import cli, main  # noqa: E402  (after the path set-up)

__all__ = ["cli", "main"]

if __name__ == "__main__":
    _writable_home()
    main()
