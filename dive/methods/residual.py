"""The residual MLP shared by Matryoshka-Adaptor, Search-Adaptor and SMEC.

DIVE paper Appendix F.2-F.4: all three baselines use ``f(x) = x + g(x)``,
``g = Linear(d, h) ReLU Linear(h, d)``, and read a compressed vector as ``norm(f(x)[:k])``
(:func:`prefix`; it and :func:`nested_dims` live with the nested-widths loss in
:mod:`dive.losses.nested` and are re-exported here).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from dive.errors import DiveError
from dive.losses.nested import nested_dims, prefix

__all__ = ["Init", "ResidualMLP", "nested_dims", "prefix"]

Init = Literal["zero_last", "xavier", "torch"]


class ResidualMLP(nn.Module):
    """``f(x) = x + g(x)`` with ``g = Linear(d,h) ReLU Linear(h,d)``.

    ``init``: ``zero_last`` (last layer zero: f starts as the identity; Matryoshka-Adaptor),
    ``xavier`` (Xavier-uniform weights, zero biases; Search-Adaptor) or ``torch`` (torch's
    default ``nn.Linear`` init).
    """

    def __init__(self, input_dim: int, hidden: int, init: Init = "zero_last"):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, input_dim))
        if init == "xavier":
            for layer in (self.net[0], self.net[2]):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        elif init == "zero_last":
            nn.init.zeros_(self.net[2].weight)
            nn.init.zeros_(self.net[2].bias)
        elif init != "torch":
            raise DiveError(f"unknown init {init!r}")

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return vectors + self.net(vectors)
