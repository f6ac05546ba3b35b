"""The residual MLP shared by Matryoshka-Adaptor, Search-Adaptor and SMEC, and prefix helpers.

DIVE paper Appendix F.2-F.4: all three baselines use ``f(x) = x + g(x)``,
``g = Linear(d, h) ReLU Linear(h, d)``, and read a compressed vector as ``norm(f(x)[:k])``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dive.errors import DiveError

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


def nested_dims(dim: int, input_dim: int) -> list[int]:
    """``M = [k, 2k, 4k, ...]`` (every ``k * 2^i`` below d) plus d, e.g. (128, 384) -> [128, 256, 384]."""
    dims, width = [], dim
    while width < input_dim:
        dims.append(width)
        width *= 2
    return dims + [input_dim]


def prefix(vectors: torch.Tensor, width: int) -> torch.Tensor:
    """``norm(v[:, :width])``: the Matryoshka output of width ``width``."""
    return F.normalize(vectors[:, :width], dim=1)
