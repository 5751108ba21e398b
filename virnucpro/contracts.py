"""File contracts shared by every stage, the CLI and the Nextflow modules.

One place for names, columns, exit codes and the failure-line format; docs/output.md
describes the same contracts for users.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from pathlib import Path

# Exit codes (reference doc section 6). Usage errors are EXIT_FAILED too: 2 means "partial".
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_PARTIAL = 2
EXIT_TERMINATED = 128 + signal.SIGTERM  # stopped by SIGTERM: what a shell reports for a process killed by it

# Stage names used in failure lines.
STAGE_ESM = "ESM-2"
STAGE_DNA = "DNABERT-S"
STAGE_CLASSIFY = "classify"

# Chunk lengths the reference models were trained for.
CHUNK_LENGTHS = (300, 500)

# `--precision` of the embedding stages (embeddings.precision turns them into dtypes).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# The models the reference classifier was trained on (defaults for every entry point).
REFERENCE_DNA_MODEL = "zhihan1996/DNABERT-S"
REFERENCE_ESM_MODEL = "esm2_t36_3B_UR50D"
REFERENCE_ESM_LAYER = 36
REFERENCE_DNA_DIM = 768
REFERENCE_ESM_DIM = 2560

# `virnucpro prepare` outputs (relative to its --outdir).
PREPARE_INFO = "prepare.json"  # settings, input digests, counts; written last (marks completion)
CHUNKS_FASTA = "chunks.fa"
FRAMES_NUCLEOTIDE = "frames.nucleotide.fa"
FRAMES_PROTEIN = "frames.protein.faa"
MANIFEST = "manifest.tsv"
SHARD_NUCLEOTIDE_DIR = "shards/nucleotide"  # shard_00000.fa, ...
SHARD_PROTEIN_DIR = "shards/protein"  # shard_00000.fa, ... (same stems)
SHARD_PATTERN = "shard_{index:05d}.fa"
DEFAULT_SHARD_RESIDUES = 250_000  # `--shard-size`: ~2,500 frames of 300 bp reads, several shards per GPU on a typical sample
MANIFEST_COLUMNS = ("id", "original_id", "source", "length", "chunks", "kept_frames", "mate")

# Embedding files: one per input FASTA, named <stem>.npz (see virnucpro.embeddings.store).
EMBEDDING_SUFFIX = ".npz"

# `virnucpro predict` / `classify` outputs.
PREDICTION_RESULTS = "prediction_results.txt"
PREDICTION_HIGHEST = "prediction_results_highestscore.csv"
SEQUENCE_PREDICTIONS = "sequence_predictions.tsv"
SUMMARY_JSON = "summary.json"
FAILED_FILES = "failed_files.txt"

PREDICTION_RESULTS_HEADER = ("Sequence_ID", "Prediction", "score1", "score2")
PREDICTION_HIGHEST_HEADER = ("Modified_ID", "Is_Virus", "max_score_0", "max_score_1")
SEQUENCE_PREDICTIONS_HEADER = (
    "id",
    "original_id",
    "length",
    "chunks",
    "chunks_with_frame",
    "virus_chunks",
    "max_p_virus",
    "mean_p_virus",
    "call",
    "reason",
    "source",
    "mate",
    "pair_call",
)
VIRAL_REGIONS = "viral_regions.tsv"  # one row per viral region (virnucpro.regions)
VIRAL_REGIONS_HEADER = (
    "id",
    "start",
    "end",
    "chunks",
    "virus_chunks",
    "mean_p_virus",
    "max_p_virus",
    "fraction_of_sequence",
)
EXTRACT_DIR = "viral"  # <input stem>.viral.fa.gz / .fq.gz per input file (virnucpro.extract)
REPORT_HTML = "report.html"  # predict's report; the pipeline's is pipeline_info/virnucpro_report.html
RUN_REPORT_HTML = "virnucpro_report.html"
MULTIQC_DIR = "multiqc"  # <sample>_virnucpro_mqc.tsv / .yaml (virnucpro.multiqc)
# What a predict run writes into its --outdir besides work/: removed when the next run starts.
RESULT_FILES = (
    PREDICTION_RESULTS, PREDICTION_HIGHEST, SEQUENCE_PREDICTIONS, VIRAL_REGIONS, SUMMARY_JSON, FAILED_FILES, REPORT_HTML
)  # fmt: skip
RESULT_DIRS = (EXTRACT_DIR, MULTIQC_DIR)

# Words in failure messages that the Nextflow modules (modules/local/embed_*/main.nf) grep for.
MODEL_UNUSABLE = "the model cannot be used"  # a model no retry on another machine cures
NOT_FINITE = "embedding not finite in"  # "sequence <id>: embedding not finite in <precision>": an overflow

# Mate files (`--pairing`) and when a read pair is virus (`--pair-rule`); see virnucpro.pairs.
PAIRINGS = ("auto", "paired", "none")
PAIR_RULES = ("any", "both")

# Calls in sequence_predictions.tsv.
CALL_VIRUS = "virus"
CALL_OTHERS = "others"
CALL_NO_FRAME = "no_coding_frame"
CALL_FAILED = "failed"
CALLS = (CALL_VIRUS, CALL_OTHERS, CALL_NO_FRAME, CALL_FAILED)


_SEQUENCE_PREFIX = "sequence "


@dataclass(frozen=True)
class Failure:
    """One line of failed_files.txt: ``{file_path}|{stage}|{error_message}``."""

    file_path: str
    stage: str
    message: str

    def line(self) -> str:
        """The failure as one line: newlines and pipes in the message are flattened; in the file
        path, ``%``, ``|`` and line breaks are written as ``%25``, ``%7C``, ``%0A``, ``%0D``."""
        message = " ".join(self.message.replace("|", "/").split())
        return f"{_escape_path(self.file_path)}|{self.stage}|{message}"

    @classmethod
    def parse(cls, line: str) -> "Failure":
        """Parse one failed_files.txt line (exactly two '|': the path's are escaped, the message has none)."""
        file_path, stage, message = line.rstrip("\n").rsplit("|", 2)
        if "|" in file_path:
            raise ValueError("more than three fields")
        return cls(_PATH_ESCAPED.sub(lambda found: _PATH_UNESCAPES[found.group(0).upper()], file_path), stage, message)

    @classmethod
    def of_sequence(cls, file_path: str, stage: str, sequence_id: str, why: str) -> "Failure":
        """One sequence of a file failed (the rest of the file was kept): ``sequence <id>: <why>``."""
        return cls(file_path, stage, f"{_SEQUENCE_PREFIX}{sequence_id}: {why}")

    def failed_sequence(self) -> tuple[str, str] | None:
        """``(sequence id, why)`` when this failure is about one sequence (:meth:`of_sequence`), else None."""
        if not self.message.startswith(_SEQUENCE_PREFIX) or ": " not in self.message:
            return None
        sequence_id, why = self.message[len(_SEQUENCE_PREFIX) :].split(": ", 1)
        return sequence_id, why


_PATH_ESCAPES = {"%": "%25", "|": "%7C", "\n": "%0A", "\r": "%0D"}
_PATH_UNESCAPES = {code: char for char, code in _PATH_ESCAPES.items()}
_PATH_ESCAPED = re.compile("|".join(_PATH_UNESCAPES), re.IGNORECASE)


def _escape_path(path: str) -> str:
    return "".join(_PATH_ESCAPES.get(char, char) for char in path)


def write_failures(path: Path, failures: list[Failure]) -> None:
    """Write failed_files.txt atomically; with no failure, there is no such file (an earlier run's is removed)."""
    from virnucpro.atomic import atomic_write_text

    if failures:
        atomic_write_text(path, "".join(f.line() + "\n" for f in failures))
    else:
        path.unlink(missing_ok=True)


def read_failures(path: Path) -> list[Failure]:
    """Read a failed_files.txt; a missing file means no failure, a malformed line is a failure of its own."""
    if not path.exists():
        return []
    failures = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            failures.append(Failure.parse(line))
        except ValueError:
            failures.append(Failure(str(path), STAGE_CLASSIFY, f"malformed failure line {number}: {line}"))
    return failures
