"""The Triton rotary kernel (virnucpro.embeddings.rotary_triton): the same numbers as the
element-wise form and as the exact formula, padded and packed rows, the whole ESM-2 forward
through it, and the fall-back when it cannot run.

The checks marked ``kernel`` run where the kernel does: on the CPU under Triton's interpreter,
which Triton reads when a kernel is defined, so in a child pytest with TRITON_INTERPRET=1
(:func:`test_the_kernel_under_triton_s_interpreter`); on a GPU in a child pytest with
VIRNUCPRO_ROTARY_TEST_DEVICE=cuda:0 (tests/gpu/test_gpu_rotary.py, so that the GPU tests'
pytest never initialises CUDA itself). Its speed: benchmarks/gpu_esm_throughput.py.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from virnucpro.embeddings import esm_forward, rotary_triton

pytest.importorskip("triton")  # the test extra installs it on Linux x86-64

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = os.environ.get("VIRNUCPRO_ROTARY_TEST_DEVICE", "cpu")
kernel = pytest.mark.skipif(
    not (INTERPRETED or DEVICE.startswith("cuda")), reason="runs in a child pytest where the kernel runs"
)


@pytest.mark.slow
def test_the_kernel_under_triton_s_interpreter() -> None:
    if INTERPRETED or DEVICE != "cpu":
        pytest.skip("this is a child run")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop(rotary_triton.ENV_SWITCH, None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__))],
        capture_output=True, text=True, timeout=600, env=env, cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


def test_the_cpu_keeps_the_element_wise_form() -> None:
    """Without the interpreter, CPU tensors never reach the kernel (CPU numbers stay bit-identical)."""
    if INTERPRETED or DEVICE != "cpu":
        pytest.skip("a child run")
    assert not rotary_triton.wanted(torch.zeros(1, 2, 4, 8))


class _Attention:
    """What ``_rotary_tables`` reads of a fair-esm attention module: ``rot_emb.inv_freq``."""

    def __init__(self, head_dim: int) -> None:
        self.rot_emb = type("RotaryEmbedding", (), {})()
        self.rot_emb.inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=DEVICE).float() / head_dim))


def _inputs(leading: tuple[int, ...], heads: int, head_dim: int, dtype: torch.dtype, positions: torch.Tensor):
    generator = torch.Generator().manual_seed(sum(leading) + heads + head_dim)
    qkv = (3 * torch.randn(*leading, 3, heads, head_dim, generator=generator)).to(DEVICE, dtype)
    cos, sin = esm_forward._rotary_tables(_Attention(head_dim), positions.to(DEVICE), dtype)
    return qkv, cos, sin


def _element_wise(qk, cos, sin, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(rotary_triton.ENV_SWITCH, "0")
    try:
        return esm_forward._rotate(qk, cos, sin)
    finally:
        monkeypatch.delenv(rotary_triton.ENV_SWITCH)


def _ulp(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One unit in the last place of ``dtype`` at each of ``values`` (float64)."""
    info = torch.finfo(dtype)
    exponent = torch.floor(torch.log2(values.abs().clamp_min(info.smallest_normal)))
    return torch.exp2(exponent - (info.bits - 1 - {torch.float32: 8, torch.bfloat16: 8, torch.float16: 5}[dtype]))


# (leading dims, heads, head_dim): padded [batch, tokens] rows whose positions repeat every row of
# tokens; packed [n] rows with a position each; ESM-2 t6 (20 x 16), 650M/3B-like heads (64 wide, 40
# heads: not a power of two), and heads whose half-width (6) is not a power of two.
SHAPES = [((3, 7), 20, 16), ((11,), 40, 64), ((2, 5), 5, 12)]


@kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize(("leading", "heads", "head_dim"), SHAPES)
def test_the_kernel_rotates_like_the_element_wise_form(leading, heads, head_dim, dtype, monkeypatch) -> None:
    packed = len(leading) == 1
    positions = torch.tensor([0, 1, 2, 0, 1, 2, 3, 4, 0, 1, 0]) if packed else torch.arange(leading[-1])
    qkv, cos, sin = _inputs(leading, heads, head_dim, dtype, positions)
    qk = qkv[..., :2, :, :]  # a strided view of the fused product, as _layer passes it
    assert rotary_triton.wanted(qk)
    q, k = esm_forward._rotate(qk, cos, sin)
    q_ref, k_ref = _element_wise(qk, cos, sin, monkeypatch)
    assert q.shape == q_ref.shape == (*leading, heads, head_dim) and q.is_contiguous() and k.is_contiguous()
    assert q.dtype == dtype

    # The exact formula in float64 from the same (rounded) inputs and tables. The kernel computes
    # in fp32 and rounds once: to the nearest value on a GPU, towards zero for bf16 under the
    # interpreter (numpy has no bf16), so within one unit in the last place of the result, plus
    # fp32's rounding of the two products (which matters where they cancel).
    x = qk.double().cpu()
    half = head_dim // 2
    c, s = cos.double().cpu(), sin.double().cpu()  # [P, 1, 1, half]: broadcast over query/key and heads
    first = torch.cat([x[..., :half] * c, x[..., half:] * c], dim=-1)  # the product the element-wise form rounds first
    second = torch.cat([-x[..., half:] * s, x[..., :half] * s], dim=-1)
    exact = first + second
    fp32_rounding = 2.0**-22 * (first.abs() + second.abs())
    got = torch.stack([q, k], dim=-3).double().cpu()
    assert bool(((got - exact).abs() <= _ulp(exact, dtype) + fp32_rounding).all())
    # ... and the element-wise form, which also rounds ``first`` to the type: within that rounding
    # and the two forms' roundings of the result.
    reference = torch.stack([q_ref, k_ref], dim=-3).double().cpu()
    bound = 0.5 * _ulp(first, dtype) + 1.5 * _ulp(exact, dtype) + fp32_rounding
    assert bool(((got - reference).abs() <= bound).all())
    assert not rotary_triton._given_up  # the kernel ran: it did not fall back to the element-wise form


@kernel
def test_the_whole_esm_forward_through_the_kernel(test_models, monkeypatch: pytest.MonkeyPatch) -> None:
    from virnucpro.embeddings.esm import load_esm_embedder

    embedder = load_esm_embedder(str(test_models.esm), device=DEVICE, precision="fp32")
    sequences = ["MKTAYIAKQR", "ACDEFGHIKLMNPQRSTVWY" * 3, "M"]
    calls: list[int] = []
    real = rotary_triton.rotate
    monkeypatch.setattr(rotary_triton, "rotate", lambda *args: calls.append(1) or real(*args))
    through_kernel = embedder.embed_batch(sequences)
    assert len(calls) == embedder.layer  # once per layer
    monkeypatch.setenv(rotary_triton.ENV_SWITCH, "0")
    element_wise = embedder.embed_batch(sequences)
    assert len(calls) == embedder.layer
    torch.testing.assert_close(torch.from_numpy(through_kernel), torch.from_numpy(element_wise), atol=1e-5, rtol=0)


@kernel
def test_a_kernel_that_cannot_run_is_given_up_for_the_element_wise_form(monkeypatch, caplog) -> None:
    qkv, cos, sin = _inputs((2, 3), 4, 8, torch.float32, torch.arange(3))
    qk = qkv[..., :2, :, :]

    class Failing:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launch.calls += 1
                raise RuntimeError("PTX assembly failed: no compiler for this GPU")

            launch.calls = 0
            Failing.launch = launch
            return launch

    monkeypatch.setattr(rotary_triton, "_rotary_kernel", Failing())
    monkeypatch.setattr(rotary_triton, "_given_up", [])
    with caplog.at_level(logging.WARNING, logger="virnucpro"):
        q, k = esm_forward._rotate(qk, cos, sin)
        again = esm_forward._rotate(qk, cos, sin)
    q_ref, k_ref = _element_wise(qk, cos, sin, monkeypatch)
    assert torch.equal(q, q_ref) and torch.equal(k, k_ref) and torch.equal(again[0], q_ref)
    assert Failing.launch.calls == 1  # given up after the first failure
    assert not rotary_triton.wanted(qk)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "PTX assembly failed" in warnings[0] and "element-wise" in warnings[0]


@kernel
def test_out_of_memory_in_the_kernel_is_not_hidden(monkeypatch) -> None:
    """Out of memory is the engine's to handle (it halves the batch): never swallowed here."""
    qkv, cos, sin = _inputs((2, 3), 4, 8, torch.float32, torch.arange(3))

    class OutOfMemory:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

            return launch

    monkeypatch.setattr(rotary_triton, "_rotary_kernel", OutOfMemory())
    monkeypatch.setattr(rotary_triton, "_given_up", [])
    with pytest.raises(torch.OutOfMemoryError):
        esm_forward._rotate(qkv[..., :2, :, :], cos, sin)
    assert rotary_triton.wanted(qkv)


@kernel
def test_the_switch_turns_the_kernel_off(monkeypatch) -> None:
    qk = torch.zeros(2, 2, 4, 8, device=DEVICE)
    assert rotary_triton.wanted(qk)
    monkeypatch.setenv(rotary_triton.ENV_SWITCH, "0")
    assert not rotary_triton.wanted(qk)


def test_rows_that_do_not_repeat_the_tables_positions_are_refused() -> None:
    """A table of 5 positions cannot serve 7 rows: an error, not silently wrong positions."""
    qkv, cos, sin = _inputs((7,), 4, 8, torch.float32, torch.arange(5))
    with pytest.raises(ValueError, match="7 rows do not repeat the 5 positions"):
        rotary_triton.rotate(qkv[..., :2, :, :], cos, sin)
