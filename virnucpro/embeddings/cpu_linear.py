"""fp32 linear layers on the CPU through oneDNN instead of the default BLAS, where that pays.

PyTorch's CPU ``nn.Linear`` calls its BLAS (MKL in the official wheels). On AMD CPUs with
AVX-512 MKL takes a generic code path, and oneDNN (also bundled with PyTorch, used by its own
compiler backend) is faster, in fp32 and to the same accuracy (relative error
~1e-6 against float64, like MKL; no bf16 or TF32 shortcut). On an AVX2-only CPU it is the
other way round: MKL's GEMM is as fast or faster and oneDNN's fused GELU is slow, so the
embedding stages are faster without oneDNN (the measurements: docs/performance.md).

:func:`linear` therefore uses oneDNN for fp32 tensors on the CPU when the CPU has AVX-512,
oneDNN is available and it agrees with ``F.linear`` on a probe; ``F.linear`` everywhere else
(AVX2 CPUs, GPUs, half precision, builds without oneDNN). The choice depends on the machine
only, so every worker of a run computes with the same kernels.

``VIRNUCPRO_ONEDNN=1`` uses oneDNN wherever it is usable, ``0`` never (for measurements, or
as an escape hatch); unset or ``auto``: the rule above.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import nn

from virnucpro.errors import raise_interruption_behind

ENV_SWITCH = "VIRNUCPRO_ONEDNN"
_PROBE_TOLERANCE = 1e-4
_OFF = ("0", "false", "no", "off")
_ON = ("1", "true", "yes", "on")


@functools.cache
def onednn_usable() -> bool:
    """True when oneDNN's fused linear runs here and matches ``F.linear`` (checked once per process)."""
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    shapes = ((37, 48), (40, 48), (40,), (37, 40))
    x, weight, bias, other = (torch.randn(shape, generator=generator) for shape in shapes)
    try:
        with torch.inference_mode():
            checks = [
                (op(x, weight, bias, "gelu", [], "none"), F.gelu(F.linear(x, weight, bias))),
                (op.binary(x, other, weight, bias, "add"), F.linear(x, weight, bias) + other),
            ]
    except Exception as error:  # noqa: BLE001  (any failure means: not usable here)
        raise_interruption_behind(error)
        return False
    return all(got.shape == want.shape and bool((got - want).abs().max() <= _PROBE_TOLERANCE) for got, want in checks)


def cpu_has_avx512() -> bool:
    """True when PyTorch runs its AVX-512 kernels on this CPU."""
    return torch.backends.cpu.get_cpu_capability().upper().startswith("AVX512")


@functools.cache
def onednn_chosen() -> bool:
    """True when :func:`linear` uses oneDNN on the CPU (``VIRNUCPRO_ONEDNN``, else AVX-512 only)."""
    switch = os.environ.get(ENV_SWITCH, "auto").strip().lower()
    if switch in _OFF:
        return False
    if switch not in _ON and not cpu_has_avx512():
        return False
    return onednn_usable()


def cpu_linear_backend() -> str:
    """What fp32 linear layers run on here: ``oneDNN`` or ``BLAS`` (for logs and benchmarks)."""
    return "oneDNN" if onednn_chosen() else "BLAS"


def _use_onednn(x: torch.Tensor) -> bool:
    """fp32 on the CPU, not under bf16 autocast (whose products ``F.linear`` must run), where chosen."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu") and onednn_chosen()


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    gelu: bool = False,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, then the exact (erf) GELU when ``gelu``, or ``+ residual``.

    On the CPU in fp32 through oneDNN where :func:`onednn_chosen`, with the GELU or the addition
    fused into the matrix product.
    """
    if gelu and residual is not None:
        raise ValueError("linear: gelu and residual cannot be combined")
    if _use_onednn(x):
        op = torch.ops.mkldnn._linear_pointwise
        if residual is not None:
            return op.binary(x, residual, weight, bias, "add")
        return op(x, weight, bias, "gelu", [], "none") if gelu else op(x, weight, bias, "none", [], "")
    y = F.linear(x, weight, bias)
    if gelu:
        return F.gelu(y)
    return y if residual is None else y + residual


class OneDnnLinear(nn.Linear):
    """An ``nn.Linear`` whose forward goes through :func:`linear` (same parameters, same state dict)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002  (nn.Linear's own name)
        return linear(input, self.weight, self.bias)


def use_onednn_linears(model: nn.Module) -> int:
    """Route every plain ``nn.Linear`` of ``model`` through :func:`linear`; returns how many were switched."""
    switched = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = OneDnnLinear
            switched += 1
    return switched


def restore_linears(model: nn.Module) -> int:
    """Undo :func:`use_onednn_linears` (plain ``nn.Linear`` again); returns how many were restored."""
    restored = 0
    for module in model.modules():
        if type(module) is OneDnnLinear:
            module.__class__ = nn.Linear
            restored += 1
    return restored
