"""The residual MLP shared by Matryoshka-Adaptor, Search-Adaptor and SMEC.

DIVE paper Appendix F.2-F.4: all three baselines use ``f(x) = x + g(x)``,
``g = Linear(d, h) ReLU Linear(h, d)``, and read a compressed vector as ``norm(f(x)[:k])``
(:func:`prefix`; it and :func:`nested_dims` live with the nested-widths loss in
:mod:`dive.losses.nested` and are re-exported here).

Each of the three follows its own paper by default (``recipe = "original"``) and the DIVE
paper's appendix version as a switch (``recipe = "dive-appendix"``), which the ``paper``
protocol selects (:func:`appendix_settings`) so that it reproduces the DIVE paper's tables.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from dive import checks
from dive.errors import DiveError
from dive.losses.nested import nested_dims, prefix

__all__ = ["RECIPES", "Init", "ResidualMLP", "appendix_settings", "check_recipe", "nested_dims", "prefix"]

Init = Literal["zero_last", "xavier", "torch"]

RECIPES = ("original", "dive-appendix")
"""``original``: the method's own paper; ``dive-appendix``: the DIVE paper's App. F version."""


def check_recipe(recipe: str) -> None:
    checks.one_of("recipe", recipe, RECIPES)


def appendix_settings(protocol: str, **settings: Any) -> dict[str, Any]:
    """The overrides ``protocol`` implies for a baseline: under ``paper``, the DIVE-appendix recipe with
    the DIVE paper's common budget (AdamW, lr 2e-4, weight decay 0.01, fixed epochs, last kept) and
    ``settings``; under ``heldout``, none."""
    if protocol != "paper":
        return {}
    return {"recipe": "dive-appendix", **settings, "train": {"selection": "last", "lr": 2e-4, "weight_decay": 0.01}}


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
