"""Which floating-point type a model runs in, from ``--precision`` and the device.

``auto`` on a CUDA device tries bf16 then fp16 (compute capability 8.0 or newer: Ampere,
Hopper, ...) or fp16 alone (older GPUs) and keeps the first that matches fp32 on a probe set,
else fp32 (:func:`load_checked`). On a CPU that multiplies bf16 natively (AVX512_BF16 or
AMX-BF16: :func:`cpu_has_native_bf16`) ``auto`` tries bf16 the same way; other CPUs run in fp32.
An explicit ``bf16`` runs on such a CPU as asked; on other CPUs, and ``fp16`` on any CPU, the
request is overridden to fp32 (emulated half precision is slower than fp32 there), with one log
line per request.

**The parity check of ``auto``.** The loader loads the model in fp32 and embeds a fixed probe
set, then casts the model to each candidate in turn and embeds the probe again. The first
candidate whose every probe embedding is finite and has cosine >= 0.9999 to its fp32
embedding is kept; after a candidate fails, the loader gives a fresh fp32 embedder (ESM-2
loads its weights again, as casting back would not restore them; the DNA model keeps fp32
weights under autocast) and the next candidate is tried, else fp32 stays. When fp32 does not
fit in the GPU's memory, nothing can be measured: the first candidate is used unchecked, with
a warning. One log line says what was chosen and why; the measurements go into summary.json.

The probe is the kept frames of 32 synthetic coding reads of 300 bp and 32 of 500 bp (the two
chunk lengths; :mod:`virnucpro.synthetic`, fixed seed): the same sequences everywhere, so
workers on the same kind of GPU measure the same thing and make the same choice. It costs
two forward passes over the 64 frames (about 8,600 tokens) per model load, in batches of at
most ``PROBE_BATCH_TOKENS`` padded tokens: a model that fits the GPU in fp32 with room for an
ordinary batch is measured, not taken for one that does not fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Protocol, TypeVar

import numpy as np
import torch

from virnucpro.contracts import PRECISIONS
from virnucpro.errors import VirnucproError, is_out_of_memory, release_cached_memory
from virnucpro.log import get_logger

log = get_logger("precision")

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_overridden_logged: set[str] = set()


def is_cuda(device: str | torch.device) -> bool:
    """True for ``cuda`` / ``cuda:N`` devices."""
    return torch.device(device).type == "cuda"


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The instruction-set flags Linux lists for the first CPU; empty where that cannot be read."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as lines:
            for line in lines:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[-1].split())
    except OSError:
        pass
    return set()


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU has bf16 matrix instructions (AVX512_BF16 or AMX-BF16)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve_dtype(precision: str, device: str) -> torch.dtype:
    """The torch dtype for ``precision`` (auto, fp32, bf16, fp16) on ``device`` ("cpu", "cuda:N")."""
    if precision not in PRECISIONS:
        raise VirnucproError(f"unknown precision {precision!r} (choose one of {', '.join(PRECISIONS)})")
    if not is_cuda(device):
        if precision == "bf16" and cpu_has_native_bf16():
            return torch.bfloat16
        if precision not in ("auto", "fp32") and precision not in _overridden_logged:
            _overridden_logged.add(precision)
            why = "this CPU has no bf16 instructions" if precision == "bf16" else "fp16 is emulated on CPUs"
            log.info("--precision %s ignored on the CPU (%s): running in fp32", precision, why)
        return torch.float32
    if precision == "auto":
        major, _minor = torch.cuda.get_device_capability(torch.device(device))
        return torch.bfloat16 if major >= 8 else torch.float16
    return _DTYPES[precision]


def parity_candidates(precision: str, device: str) -> list[torch.dtype]:
    """Half precisions ``--precision auto`` tries on ``device``, best first; [] when nothing is checked
    (a CPU without bf16 instructions, or an explicit precision: the user's choice is used as given)."""
    if precision != "auto":
        return []
    if not is_cuda(device):
        return [torch.bfloat16] if cpu_has_native_bf16() else []
    major, _minor = torch.cuda.get_device_capability(torch.device(device))
    return [torch.bfloat16, torch.float16] if major >= 8 else [torch.float16]


def dtype_name(dtype: torch.dtype) -> str:
    """Short name used in embedding-file metadata: fp32, bf16 or fp16."""
    return {v: k for k, v in _DTYPES.items()}[dtype]


# --------------------------------------------------------------------------- the parity check of auto

PARITY_MIN_COSINE = 0.9999
PROBE_READS_PER_LENGTH = 32
PROBE_SEED = 20261129
PROBE_BATCH_TOKENS = 2048  # the smallest default token budget of the embedding stages


class Recastable(Protocol):
    """An embedder whose model can be cast to another floating-point type in place."""

    dtype: torch.dtype

    def set_precision(self, dtype: torch.dtype) -> None: ...

    def embed_batch(self, sequences: list[str]) -> np.ndarray: ...

    def make_batches(self, sequences: list[str], token_budget: int) -> list[list[int]]: ...


E = TypeVar("E", bound=Recastable)


@dataclass(frozen=True)
class ParityCheck:
    """One candidate precision measured against fp32 on the probe set."""

    precision: str
    min_cosine: float  # nan when an embedding was not finite, or when nothing could be measured
    sequences: int  # 0: not measured (fp32 does not fit in the device's memory)

    @property
    def passed(self) -> bool | None:
        """Whether the candidate matches fp32; None when it could not be measured."""
        return bool(self.min_cosine >= PARITY_MIN_COSINE) if self.sequences else None  # False for nan

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "min_cosine": None if np.isnan(self.min_cosine) else round(self.min_cosine, 7),
                "passed": self.passed}


def cosines(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``[n, dim]`` matrices, in float64."""
    a, b = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def min_cosine(reference: np.ndarray, other: np.ndarray) -> float:
    """Smallest row-wise cosine similarity (:func:`cosines`); nan if any value is not finite."""
    if not (np.isfinite(reference).all() and np.isfinite(other).all()):
        return float("nan")
    return float(cosines(reference, other).min())


@lru_cache(maxsize=1)
def probe_frames() -> tuple[tuple[str, str], ...]:
    """The probe set: ``(nucleotide, protein)`` of every kept frame of the probe reads."""
    from virnucpro.frames import kept_frames
    from virnucpro.synthetic import synthetic_reads

    frames = []
    for length in (300, 500):
        reads = synthetic_reads(PROBE_READS_PER_LENGTH, length, coding_fraction=1.0, seed=PROBE_SEED + length)
        for read_id, seq in reads:
            frames.extend((frame.nucleotide, frame.protein) for frame in kept_frames(read_id, seq))
    return tuple(frames)


def embed_probe(embedder: Recastable, probe: list[str]) -> np.ndarray:
    """Embeddings of ``probe`` in its order, embedded in batches of at most ``PROBE_BATCH_TOKENS``."""
    rows: dict[int, np.ndarray] = {}
    for batch in embedder.make_batches(probe, PROBE_BATCH_TOKENS):
        rows.update(zip(batch, embedder.embed_batch([probe[i] for i in batch])))
    return np.stack([rows[i] for i in range(len(probe))])


def check_candidate(embedder: Recastable, reference: np.ndarray, probe: list[str], dtype: torch.dtype) -> ParityCheck:
    """Cast ``embedder`` to ``dtype`` and compare its probe embeddings with ``reference`` (fp32)."""
    embedder.set_precision(dtype)
    return ParityCheck(dtype_name(dtype), min_cosine(reference, embed_probe(embedder, probe)), len(probe))


def load_checked(load: Callable[[torch.dtype], E], candidates: list[torch.dtype], probe: list[str], what: str) -> E:
    """Load with ``load(dtype)`` in the first of ``candidates`` that matches fp32 on ``probe``, else in fp32.

    The returned embedder carries the measurements in ``parity_checks`` (a list of dicts). When
    the model does not fit in the device's memory in fp32, nothing can be measured: the first
    candidate is used unchecked, with a warning.
    """
    embedder, reference = _fp32_reference(load, probe)
    if embedder is None:  # fp32 does not fit; nothing of the attempt is held any more
        return _unchecked(load, candidates[0], what)
    checks: list[ParityCheck] = []
    for dtype in candidates:
        check = check_candidate(embedder, reference, probe, dtype)
        checks.append(check)
        if check.passed:
            log.info("%s: %s (auto; min cosine %.6f to fp32 over %d probe sequences)",
                     what, check.precision, check.min_cosine, check.sequences)
            break
        del embedder
        release_cached_memory(collect=True)
        embedder = load(torch.float32)
    else:
        tried = ", ".join(f"{c.precision} min cosine {c.min_cosine:.6f}" for c in checks)
        log.warning("%s: fp32 (auto; below the %.4f parity limit: %s)", what, PARITY_MIN_COSINE, tried)
    embedder.parity_checks = [c.as_dict() for c in checks]
    return embedder


def _fp32_reference(load: Callable[[torch.dtype], E], probe: list[str]) -> tuple[E | None, np.ndarray | None]:
    """The fp32 embedder and its probe embeddings; (None, None) when fp32 runs out of memory.

    Returns outside the ``except`` block, so the error's traceback (and the fp32 model or
    activations it holds) is released before anything else is loaded.
    """
    try:
        embedder = load(torch.float32)
        return embedder, embed_probe(embedder, probe)
    except Exception as error:  # noqa: BLE001  (only out-of-memory is handled here)
        if not is_out_of_memory(error):
            raise
    return None, None


def _unchecked(load: Callable[[torch.dtype], E], dtype: torch.dtype, what: str) -> E:
    """``load(dtype)`` without a parity check (fp32 did not fit), said in a warning and in ``parity_checks``."""
    release_cached_memory(collect=True)
    embedder = load(dtype)
    check = ParityCheck(dtype_name(dtype), float("nan"), 0)
    log.warning("%s: %s unchecked (auto; the model does not fit in this device's memory in fp32, so parity "
                "cannot be measured; --precision fp32 or a larger GPU for the reference numbers)", what, check.precision)
    embedder.parity_checks = [check.as_dict()]
    return embedder
