"""Truncation: ``norm(first k dims)`` (SPEC "Unsupervised and trivial baselines")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dive.data.sets import TrainSet
from dive.methods.base import Citation, LinearLayer, Method, l2_normalize


@dataclass(frozen=True)
class TruncateConfig:
    """Attributes:
        dim: number of leading dimensions kept.
    """

    dim: int = 128


class Truncate(Method):
    name = "truncate"
    summary = "keep the first k dimensions and re-normalise (no training)"
    citation = Citation("Matryoshka Representation Learning", "Kusupati et al.", "NeurIPS 2022",
                        "truncation is how Matryoshka embeddings are shortened")
    Config = TruncateConfig
    supervised = False

    def _fit(self, train_set: TrainSet) -> None:
        """Nothing to learn."""

    def _transform(self, vectors: np.ndarray) -> np.ndarray:
        return l2_normalize(vectors[:, : self.output_dim])

    def linear_layers(self) -> list[LinearLayer]:
        selector = torch.eye(self.input_dim)[: self.output_dim]
        return [(selector, torch.zeros(self.output_dim), False)]
