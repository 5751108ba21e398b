"""fp32 linear layers on the CPU through oneDNN instead of the default BLAS.

PyTorch's CPU ``nn.Linear`` calls its BLAS (MKL in the official wheels). On AMD CPUs MKL
takes a generic code path: on the Zen 5 development machines it reaches about 100 GFLOP/s per
core in fp32, where oneDNN (also bundled with PyTorch, used by its own compiler backend)
reaches about 220 GFLOP/s with AVX-512, in fp32 and to the same accuracy (relative error
~1e-6 against float64, like MKL; no bf16 or TF32 shortcut). :func:`linear` uses oneDNN for
fp32 tensors on the CPU when it is available and agrees with ``F.linear`` on a probe, and
``F.linear`` everywhere else (GPUs, half precision, builds without oneDNN).

``VIRNUCPRO_ONEDNN=0`` turns it off (for measurements, or as an escape hatch).
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import nn

ENV_SWITCH = "VIRNUCPRO_ONEDNN"
_PROBE_TOLERANCE = 1e-4


@functools.cache
def onednn_available() -> bool:
    """True when oneDNN's fused linear runs here and matches ``F.linear`` (checked once per process)."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(shape, generator=generator) for shape in ((37, 48), (40, 48), (40,)))
    try:
        with torch.inference_mode():
            got = op(x, weight, bias, "gelu", [], "none")
            expected = F.gelu(F.linear(x, weight, bias))
    except Exception:  # noqa: BLE001  (any failure means: not usable here)
        return False
    return got.shape == expected.shape and bool((got - expected).abs().max() <= _PROBE_TOLERANCE)


def _use_onednn(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and onednn_available()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, followed by the exact (erf) GELU when ``gelu``; oneDNN on the CPU."""
    if _use_onednn(x):
        if gelu:
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "none")
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    y = F.linear(x, weight, bias)
    return F.gelu(y) if gelu else y


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
