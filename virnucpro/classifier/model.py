"""The reference MLP: Linear -> BatchNorm1d -> ReLU -> Dropout(0.5) -> Linear, softmax over {others, virus}."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

HIDDEN_DIM = 512
NUM_CLASSES = 2  # class 0 = others, class 1 = virus


class MLPClassifier(nn.Module):
    """Same attribute names as the reference (``hidden_layer``, ``bn1``, ``dropout``, ``output_layer``)."""

    def __init__(self, input_dim: int, hidden_dim: int = HIDDEN_DIM, num_class: int = NUM_CLASSES) -> None:
        super().__init__()
        self.hidden_layer = nn.Linear(input_dim, hidden_dim)
        self.bn1 = nn.BatchNorm1d(hidden_dim)
        self.dropout = nn.Dropout(0.5)
        self.output_layer = nn.Linear(hidden_dim, num_class)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``[n, 2]`` for features ``[n, input_dim]`` (DNA embedding first, then protein)."""
        hidden = self.dropout(torch.relu(self.bn1(self.hidden_layer(features))))
        return self.output_layer(hidden)


@dataclass
class ClassifierMeta:
    """What a native checkpoint promises about the features it expects."""

    dna_dim: int
    esm_dim: int
    chunk_length: int | None = None
    dna_model: str | None = None
    esm_model: str | None = None
    esm_layer: int | None = None
    hidden_dim: int = HIDDEN_DIM
    source: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    calibration: dict | None = None  # how P(virus) is calibrated (virnucpro.classifier.calibration), if it is
    path: str = field(default="", compare=False)  # the file it was loaded from (named in errors; not stored)

    @property
    def input_dim(self) -> int:
        return self.dna_dim + self.esm_dim

    def to_dict(self) -> dict:
        data = asdict(self)
        del data["path"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ClassifierMeta":
        """From stored metadata; a value of the wrong type (``"300"`` for a chunk length) is a ValueError."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "path"}
        for name in _WHOLE_NUMBERS:
            value = known.get(name)
            if name not in known or (value is None and name in _OPTIONAL):
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"metadata '{name}' is {value!r}, not a whole number")
        return cls(**known)


_WHOLE_NUMBERS = ("dna_dim", "esm_dim", "chunk_length", "esm_layer", "hidden_dim")
_OPTIONAL = ("chunk_length", "esm_layer")  # may be None: not recorded
