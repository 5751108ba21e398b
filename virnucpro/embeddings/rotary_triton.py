"""ESM-2's rotary embedding of the query and key as one Triton kernel (CUDA).

The element-wise form in :func:`virnucpro.embeddings.esm_forward._rotate` takes four kernels
per layer over strided halves of the fused query/key/value product, a visible share of ESM-2
3B's kernel time on a GPU (docs/performance.md). This kernel reads each query and key element
once and writes the two rotated, contiguous blocks the attention kernel wants. Same formula, computed in fp32 and
rounded once (the element-wise form rounds ``x * cos`` first), so the two agree within one
unit in the last place of the half-precision type, not bit for bit. Used on CUDA where Triton is
installed; ``VIRNUCPRO_TRITON_ROTARY=0`` turns it off, and a kernel that fails to compile or
launch (an old GPU, a Triton without a compiler for it) is given up for the element-wise form
with one warning.
"""

from __future__ import annotations

import contextlib
import os

import torch

from virnucpro.errors import describe, is_device_failure, is_out_of_memory
from virnucpro.log import get_logger

log = get_logger("esm")
ENV_SWITCH = "VIRNUCPRO_TRITON_ROTARY"
_given_up: list[str] = []  # why the kernel failed in this process, once it has

try:  # Triton comes with PyTorch's CUDA builds; the CPU wheels have none
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover  (exercised where Triton is missing)
    triton = None


def wanted(qk: torch.Tensor) -> bool:
    """Whether :func:`rotate` serves ``qk``: on CUDA (or anywhere under ``TRITON_INTERPRET=1``,
    for tests) with Triton installed and not turned off."""
    if triton is None or _given_up or os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    return qk.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:

    @triton.jit
    def _rotary_kernel(
        qk_ptr, cos_ptr, sin_ptr, out_ptr,
        rows, period, row_stride, part_stride,
        HEADS: tl.constexpr, HALF: tl.constexpr, HEADS_P: tl.constexpr, HALF_P: tl.constexpr,
    ):
        """One program per row and part (0 query, 1 key): every head of that row, rotated."""
        row = tl.program_id(0)
        part = tl.program_id(1)
        head = tl.arange(0, HEADS_P)[:, None]
        pair = tl.arange(0, HALF_P)[None, :]
        inside = (head < HEADS) & (pair < HALF)
        source = qk_ptr + row.to(tl.int64) * row_stride + part * part_stride + head * (2 * HALF) + pair
        x1 = tl.load(source, mask=inside, other=0.0).to(tl.float32)
        x2 = tl.load(source + HALF, mask=inside, other=0.0).to(tl.float32)
        table = (row % period).to(tl.int64) * HALF + pair
        cos = tl.load(cos_ptr + table, mask=pair < HALF, other=0.0).to(tl.float32)
        sin = tl.load(sin_ptr + table, mask=pair < HALF, other=0.0).to(tl.float32)
        target = out_ptr + (part.to(tl.int64) * rows + row) * (HEADS * 2 * HALF) + head * (2 * HALF) + pair
        tl.store(target, (x1 * cos - x2 * sin).to(out_ptr.dtype.element_ty), mask=inside)
        tl.store(target + HALF, (x2 * cos + x1 * sin).to(out_ptr.dtype.element_ty), mask=inside)


def rotate(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """:func:`virnucpro.embeddings.esm_forward._rotate` in one kernel; None when the kernel
    cannot run here (compile or launch error: warned once, not tried again in this process).

    ``qk [..., 2, heads, head_dim]`` (a view of the fused product: rows may be strided, each
    row's heads contiguous); ``cos``/``sin`` ``[P, 1, 1, head_dim / 2]`` for the positions
    ``0..P-1`` of the rows, repeating every ``P`` rows (padded batches) or one per row (packed).
    """
    heads, head_dim = qk.shape[-2], qk.shape[-1]
    half = head_dim // 2
    flat = qk.reshape(-1, 2, heads, head_dim)  # a view for the fused product's slices
    if flat.stride(3) != 1 or flat.stride(2) != head_dim:
        flat = flat.contiguous()
    rows = flat.shape[0]
    cos_table = cos.reshape(-1, half).contiguous()
    sin_table = sin.reshape(-1, half).contiguous()
    if rows % max(1, cos_table.shape[0]):
        raise ValueError(f"{rows} rows do not repeat the {cos_table.shape[0]} positions of the rotary tables")
    rotated = torch.empty((2, *qk.shape[:-3], heads, head_dim), dtype=qk.dtype, device=qk.device)
    if rows:
        # Triton launches on the current CUDA device: make it the tensors' (a library caller may
        # embed on cuda:1 with cuda:0 current; the engine's workers see one GPU each)
        on_device = torch.cuda.device(qk.device) if qk.is_cuda else contextlib.nullcontext()
        try:
            with on_device:
                _rotary_kernel[(rows, 2)](
                    flat, cos_table, sin_table, rotated,
                    rows, cos_table.shape[0], flat.stride(0), flat.stride(1),
                    HEADS=heads, HALF=half, HEADS_P=triton.next_power_of_2(heads), HALF_P=triton.next_power_of_2(half),
                )
        except Exception as error:  # noqa: BLE001  (a kernel that cannot run here: the element-wise form can)
            if is_out_of_memory(error) or is_device_failure(error):
                raise
            _given_up.append(describe(error, typed=True))
            log.warning("the Triton rotary kernel failed (%s): using the element-wise form", _given_up[0])
            return None
    return rotated[0], rotated[1]
