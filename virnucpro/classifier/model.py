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

    @property
    def input_dim(self) -> int:
        return self.dna_dim + self.esm_dim

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ClassifierMeta":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)
