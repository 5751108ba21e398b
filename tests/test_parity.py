"""``--precision auto``: half precision only after a measured parity check.

On a GPU, and on a CPU with bf16 instructions (AVX512_BF16, AMX). These tests drive the check
with a double whose half-precision error is set per dtype, and with the real loaders on this
CPU, where bf16 is a real cast (ESM-2) or autocast (DNA) and the CPU's bf16 flag is patched in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from virnucpro.embeddings import dna, esm, precision
from virnucpro.embeddings.esm import load_esm_embedder
from virnucpro.embeddings.precision import (
    PARITY_MIN_COSINE,
    PROBE_BATCH_TOKENS,
    check_candidate,
    embed_probe,
    load_checked,
    min_cosine,
    parity_candidates,
    probe_frames,
)

from helpers import captured_log

BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32


def test_min_cosine_is_the_worst_row_and_nan_for_non_finite_values() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    assert min_cosine(a, a) == pytest.approx(1.0)
    assert min_cosine(a, np.array([[1.0, 0.0], [1.0, 0.0]])) == pytest.approx(np.sqrt(0.5))
    assert np.isnan(min_cosine(a, np.array([[1.0, 0.0], [np.inf, 1.0]])))


@pytest.mark.slow
def test_the_probe_is_fixed_and_holds_frames_of_both_chunk_lengths() -> None:
    import hashlib
    import os
    import subprocess
    import sys

    frames = probe_frames()
    digest = hashlib.sha256(repr(frames).encode()).hexdigest()
    # The probe decides what --precision auto picks: a change to virnucpro.synthetic must not move it
    # unnoticed (if it is meant to, record the new digest here and say so in the CHANGELOG).
    assert digest == "ef6ee5df9ef6a144c85057a79bbff45cf8b86f08fc331363ad88a158652c6eaf"
    code = "import hashlib; from virnucpro.embeddings.precision import probe_frames; "
    code += "print(hashlib.sha256(repr(probe_frames()).encode()).hexdigest())"
    for seed in ("1", "2"):  # other processes, other string hashing: the same sequences
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert done.stdout.strip() == digest, done.stderr[-500:]
    assert len(frames) >= 64
    lengths = {len(protein) for _, protein in frames}
    assert min(lengths) >= 99 and max(lengths) <= 167  # 300 and 500 bp reads -> 99-166 residue proteins
    assert all(set(nucleotide) <= set("ACGT") for nucleotide, _ in frames)


def test_candidates_by_gpu_generation_and_none_for_the_cpu_or_an_explicit_choice(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert parity_candidates("auto", "cuda:0") == [BF16, FP16]
    assert parity_candidates("bf16", "cuda:0") == [] and parity_candidates("fp32", "cuda:0") == []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert parity_candidates("auto", "cuda:1") == [FP16]


@pytest.mark.parametrize("native", [False, True])
def test_a_cpu_checks_bf16_only_where_it_has_bf16_instructions(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert parity_candidates("auto", "cpu") == ([BF16] if native else [])
    assert parity_candidates("bf16", "cpu") == [] and parity_candidates("fp32", "cpu") == []
    assert precision.resolve_dtype("auto", "cpu") == FP32  # unchecked: fp32
    assert precision.resolve_dtype("bf16", "cpu") == (BF16 if native else FP32)  # asked for, and there
    assert precision.resolve_dtype("fp16", "cpu") == FP32  # emulated on every CPU


@pytest.mark.parametrize(
    "flags, native",
    [("fpu sse avx2 fma", False), ("fpu avx512f avx512_bf16 avx512_vnni", True), ("fpu amx_bf16 amx_tile", True)],
)
def test_bf16_instructions_are_read_from_the_cpu_flags(tmp_path, flags: str, native: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert ({"avx512_bf16", "amx_bf16"} & precision.cpu_flags(str(cpuinfo)) != set()) is native
    assert precision.cpu_flags(str(tmp_path / "missing")) == set()


@dataclass
class NoisyEmbedder:
    """A Recastable double: fp32 vectors, plus noise of a set relative size in each half precision."""

    noise: dict[torch.dtype, float]
    dtype: torch.dtype = FP32
    casts: list[torch.dtype] = field(default_factory=list)

    def set_precision(self, dtype: torch.dtype) -> None:
        assert self.dtype == FP32, "a half-precision model was cast again"
        self.dtype = dtype
        self.casts.append(dtype)

    def embed_batch(self, sequences: list[str]) -> np.ndarray:
        rng = np.random.default_rng([len(s) for s in sequences])
        vectors = rng.normal(size=(len(sequences), 64))
        scale = self.noise.get(self.dtype, 0.0)
        return vectors + scale * np.linalg.norm(vectors, axis=1, keepdims=True) * rng.normal(size=vectors.shape) / 8

    def make_batches(self, sequences: list[str], token_budget: int) -> list[list[int]]:
        """Consecutive batches of at most ``token_budget`` letters (the double's tokens)."""
        batches: list[list[int]] = [[]]
        for i, sequence in enumerate(sequences):
            if batches[-1] and sum(len(sequences[j]) for j in batches[-1]) + len(sequence) > token_budget:
                batches.append([])
            batches[-1].append(i)
        return batches


class Loader:
    """``load(dtype)`` for load_checked: counts the loads, each a fresh NoisyEmbedder.

    ``fp32_fits=False``: loading in fp32 runs out of memory, as a 3B model on a 10 GB GPU would.
    """

    def __init__(self, noise: dict[torch.dtype, float], fp32_fits: bool = True) -> None:
        self.noise, self.loads, self.fp32_fits = noise, [], fp32_fits

    def __call__(self, dtype: torch.dtype) -> NoisyEmbedder:
        self.loads.append(dtype)
        if dtype == FP32 and not self.fp32_fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 11.00 GiB")
        return NoisyEmbedder(self.noise, dtype=dtype)


PROBE = ["M" * n for n in range(40, 80)]


def test_the_first_candidate_that_matches_fp32_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    load = Loader({BF16: 1e-6, FP16: 1e-7})
    with captured_log(caplog):
        embedder = load_checked(load, [BF16, FP16], PROBE, "model on cuda:0")
    assert (embedder.dtype, load.loads) == (BF16, [FP32])  # one load, cast once
    assert [(c["precision"], c["passed"]) for c in embedder.parity_checks] == [("bf16", True)]
    assert embedder.parity_checks[0]["sequences"] == len(PROBE)
    assert "model on cuda:0: bf16 (auto; min cosine 1.000000 to fp32 over 40 probe sequences)" in caplog.text


def test_a_failing_candidate_means_a_fresh_fp32_model_for_the_next() -> None:
    load = Loader({BF16: 0.05, FP16: 1e-6})
    embedder = load_checked(load, [BF16, FP16], PROBE, "model")
    assert (embedder.dtype, embedder.casts, load.loads) == (FP16, [FP16], [FP32, FP32])
    first, second = embedder.parity_checks
    assert (first["precision"], first["passed"], second["precision"], second["passed"]) == ("bf16", False, "fp16", True)
    assert first["min_cosine"] < PARITY_MIN_COSINE <= second["min_cosine"]


def test_when_nothing_matches_the_model_runs_in_fp32_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    load = Loader({BF16: 0.05, FP16: float("inf")})  # fp16 overflows: not finite
    with captured_log(caplog):
        embedder = load_checked(load, [BF16, FP16], PROBE, "model on cuda:0")
    assert (embedder.dtype, embedder.casts, load.loads) == (FP32, [], [FP32, FP32, FP32])
    assert [c["min_cosine"] for c in embedder.parity_checks][1] is None  # nan, stored as null
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "model on cuda:0: fp32 (auto; below the 0.9999 parity limit: bf16 min cosine" in warning[0].getMessage()


def test_a_model_too_big_for_fp32_runs_its_first_candidate_unchecked_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    load = Loader({BF16: 0.05}, fp32_fits=False)
    with captured_log(caplog):
        embedder = load_checked(load, [BF16, FP16], PROBE, "ESM-2 on cuda:0")
    assert (embedder.dtype, load.loads) == (BF16, [FP32, BF16])
    assert embedder.parity_checks == [{"precision": "bf16", "min_cosine": None, "sequences": 0, "passed": None}]
    assert "ESM-2 on cuda:0: bf16 unchecked (auto; the model does not fit in this device's memory in fp32" in caplog.text


def test_when_the_fp32_probe_runs_out_of_memory_the_fp32_model_is_gone_before_the_candidate_loads() -> None:
    import gc
    import weakref

    made: list[weakref.ref] = []

    class TightGpu(NoisyEmbedder):
        def embed_batch(self, sequences: list[str]) -> np.ndarray:
            if self.dtype == FP32:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().embed_batch(sequences)

    def load(dtype: torch.dtype) -> TightGpu:
        gc.collect()
        assert all(ref() is None for ref in made), "the fp32 model is still held while another loads"
        embedder = TightGpu({}, dtype=dtype)
        made.append(weakref.ref(embedder))
        return embedder

    embedder = load_checked(load, [BF16], PROBE, "model")
    assert embedder.dtype == BF16 and embedder.parity_checks[0]["passed"] is None and len(made) == 2


def test_the_probe_is_embedded_in_batches_so_a_model_that_fits_is_measured() -> None:
    """A GPU with room for the fp32 model and ordinary batches, not for the whole probe at once:
    the check is made (before, the probe's one big batch ran out of memory and the first
    candidate was taken unchecked)."""
    sizes: list[int] = []

    class RoomForOrdinaryBatches(NoisyEmbedder):
        def embed_batch(self, sequences: list[str]) -> np.ndarray:
            sizes.append(sum(map(len, sequences)))
            if sizes[-1] > PROBE_BATCH_TOKENS:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().embed_batch(sequences)

    probe = ["M" * 300] * 40  # 12,000 letters: more than one batch
    embedder = load_checked(lambda dtype: RoomForOrdinaryBatches({BF16: 1e-6}, dtype=dtype), [BF16], probe, "model")
    assert embedder.dtype == BF16 and embedder.parity_checks[0]["passed"] is True
    assert embedder.parity_checks[0]["sequences"] == len(probe) and len(sizes) > 2


@pytest.mark.slow
def test_the_probe_embeddings_are_in_probe_order(test_models) -> None:
    probe = [protein for _, protein in probe_frames()]
    embedder = load_esm_embedder(str(test_models.esm), precision="fp32")
    assert len(embedder.make_batches(probe, PROBE_BATCH_TOKENS)) > 1
    np.testing.assert_allclose(embed_probe(embedder, probe), embedder.embed_batch(probe), atol=1e-5, rtol=0)


def test_an_error_other_than_memory_while_checking_is_not_swallowed() -> None:
    def broken(dtype: torch.dtype) -> NoisyEmbedder:
        raise RuntimeError("CUDA error: device-side assert triggered")

    with pytest.raises(RuntimeError, match="device-side assert"):
        load_checked(broken, [BF16], PROBE, "model")


@pytest.mark.slow
def test_the_check_measures_a_real_bf16_cast_of_esm2(test_models) -> None:
    """On the CPU, bf16 is a real cast of the tiny ESM-2: the check reports what the cast does."""
    probe = [protein for _, protein in probe_frames()]
    full = load_esm_embedder(str(test_models.esm), precision="fp32")
    reference = full.embed_batch(probe)
    check = check_candidate(full, reference, probe, BF16)
    assert full.dtype == BF16 and next(full.model.parameters()).dtype == BF16
    assert check.min_cosine == pytest.approx(min_cosine(reference, embed_probe(full, probe)), abs=1e-12)
    assert 0.99 < check.min_cosine < 1.0  # measured, not assumed: bf16 differs a little
    assert full.identity()["precision"] == "bf16"
    # Cast after loading (what the check keeps) == cast while loading (what --precision bf16 does on a GPU).
    network, alphabet, name = esm._load_fair_esm(str(test_models.esm))
    direct = esm.EsmEmbedder(esm.cast_model(network.eval(), "cpu", BF16), alphabet, name, full.layer, dtype=BF16)
    np.testing.assert_array_equal(full.embed_batch(probe[:16]), direct.embed_batch(probe[:16]))


@pytest.mark.slow
@pytest.mark.parametrize("limit", [0.5, 1.5])  # a limit every bf16 cast meets; one none can
def test_the_esm_loader_keeps_bf16_or_reloads_the_exact_fp32_weights(
    monkeypatch: pytest.MonkeyPatch, test_models, limit: float
) -> None:
    monkeypatch.setattr(esm, "parity_candidates", lambda precision, device: [BF16])
    monkeypatch.setattr(precision, "PARITY_MIN_COSINE", limit)
    embedder = load_esm_embedder(str(test_models.esm), precision="auto")
    expected = "bf16" if limit < 1 else "fp32"
    assert embedder.identity()["precision"] == expected and len(embedder.parity_checks) == 1
    if expected == "fp32":  # reloaded, not cast back: the numbers are exactly the fp32 model's
        probe = [protein for _, protein in probe_frames()][:8]
        plain = load_esm_embedder(str(test_models.esm), precision="fp32")
        np.testing.assert_array_equal(embedder.embed_batch(probe), plain.embed_batch(probe))


@pytest.mark.slow
def test_the_dna_loader_goes_back_to_fp32_without_reloading(monkeypatch: pytest.MonkeyPatch, test_models) -> None:
    monkeypatch.setattr(dna, "parity_candidates", lambda precision, device: [BF16])
    monkeypatch.setattr(precision, "PARITY_MIN_COSINE", 1.5)
    loads = []
    original = dna._load_model
    monkeypatch.setattr(dna, "_load_model", lambda source: loads.append(source) or original(source))
    embedder = dna.load_dna_embedder(str(test_models.dna), precision="auto")
    assert embedder.identity()["precision"] == "fp32" and len(loads) == 1
    assert embedder.parity_checks[0]["precision"] == "bf16" and not embedder.parity_checks[0]["passed"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["esm", "dna"])
def test_auto_on_a_cpu_with_bf16_measures_bf16_and_keeps_it_only_when_it_matches(
    monkeypatch: pytest.MonkeyPatch, test_models, kind: str
) -> None:
    """What `--precision auto` does on a Zen 4/5 or Sapphire Rapids CPU: one measured bf16 candidate
    over the whole probe; the embedder runs in what the measurement allows."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    if kind == "esm":
        embedder, probe = load_esm_embedder(str(test_models.esm), precision="auto"), [p for _, p in probe_frames()]
        reference = load_esm_embedder(str(test_models.esm), precision="fp32")
    else:
        embedder, probe = dna.load_dna_embedder(str(test_models.dna), precision="auto"), [n for n, _ in probe_frames()]
        reference = dna.load_dna_embedder(str(test_models.dna), precision="fp32")
    (check,) = embedder.parity_checks
    assert check["precision"] == "bf16" and check["sequences"] == len(probe)
    assert embedder.identity()["precision"] == ("bf16" if check["passed"] else "fp32")
    measured = min_cosine(embed_probe(reference, probe), embed_probe(embedder, probe))
    if check["passed"]:  # bf16 really runs (it is not fp32 under another name), and it is what was measured
        assert measured == pytest.approx(check["min_cosine"], abs=1e-6) and measured < 1.0
    else:
        assert measured == 1.0


def test_cpu_bf16_autocast_is_not_bypassed_by_the_onednn_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under bf16 autocast the products run in bf16, also where fp32 linears go through oneDNN."""
    from virnucpro.embeddings import cpu_linear

    monkeypatch.setattr(cpu_linear, "onednn_chosen", lambda: True)
    x, weight, bias = torch.randn(5, 16), torch.randn(8, 16), torch.randn(8)
    with torch.autocast(device_type="cpu", dtype=BF16):
        assert cpu_linear.linear(x, weight, bias).dtype == BF16
        assert cpu_linear.linear(x, weight, bias, gelu=True).dtype == BF16
