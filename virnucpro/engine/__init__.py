"""The worker engine: one spawned process per GPU, a token-balanced queue, failures as data, resume.

See docs/engine.md. Public API: :func:`run_embedding` (many files, many workers) and
:func:`embed_file` (one file with a loaded model, in this process).
"""

from virnucpro.engine.embed_file import FileResult, embed_file
from virnucpro.engine.run import EngineResult, run_embedding

__all__ = ["EngineResult", "FileResult", "embed_file", "run_embedding"]
