"""Frozen: the full-dimension embeddings, unchanged (SPEC "Unsupervised and trivial baselines")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dive.data.sets import TrainSet
from dive.methods.base import Method


@dataclass(frozen=True)
class FrozenConfig:
    """No settings: the output dimension is the input dimension."""


class Frozen(Method):
    name = "frozen"
    summary = "the full-dimension frozen embeddings, unchanged: the reference every metric is compared with"
    Config = FrozenConfig
    role = "reference"
    supervised = False

    @property
    def output_dim(self) -> int:
        return self.input_dim or 0

    def _check_target_dim(self, input_dim: int) -> None:
        """Any input dimension is fine: nothing is reduced."""

    def _fit(self, train_set: TrainSet) -> None:
        """Nothing to learn."""

    def _transform(self, vectors: np.ndarray) -> np.ndarray:
        return vectors

    def linear_layers(self) -> list:
        """No layer: the input itself (re-normalised)."""
        return []
