"""Search-Adaptor (Yoon et al., ACL 2024), as SPEC "Search-Adaptor" and DIVE App. F.3 restate it.

A residual MLP ``f(x) = x + g(x)``, ``g = Linear(d,h) ReLU Linear(h,d)``, Xavier-uniform init
(so, unlike Matryoshka-Adaptor, it does not start at the identity). Output
``y = norm(f(x)[:k])``. Loss, with ``s(a, b) = <y(a), y(b)>``::

    L = mean_i softplus(s(q_i, n_i) - s(q_i, p_i))
        + alpha * (L1(f(q), q) + L1(f(p), p) + L1(f(n), n)) / 3,     alpha = 0.1

where ``L1`` is the element-wise mean absolute error (``F.l1_loss``, as in App. F.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from dive.errors import DiveError
from dive.losses import ReconstructionLoss, SoftplusRankingLoss
from dive.methods.base import Citation, TorchAdapter
from dive.methods.residual import ResidualMLP, prefix
from dive.train import Batch, TrainConfig


@dataclass(frozen=True)
class SearchAdaptorConfig:
    """Search-Adaptor's hyperparameters.

    Defaults: hidden 2048 and Xavier init from DIVE App. F.3; alpha 0.1 from SPEC
    "Search-Adaptor" / App. F.3; ``train`` is the DIVE paper's common budget (Section 4.1:
    AdamW, lr 2e-4, batch 128, 50 epochs).

    Attributes:
        dim: target dimension k (leading dims of ``x + g(x)`` kept).
        hidden: width h of the residual MLP's hidden layer.
        alpha: weight of the L1 recovery regulariser.
        train: optimisation settings.
    """

    dim: int = 128
    hidden: int = 2048
    alpha: float = 0.1
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.dim < 1 or self.hidden < 1 or self.alpha < 0:
            raise DiveError("dim and hidden must be positive and alpha >= 0")


class SearchAdaptor(TorchAdapter):
    name = "search-adaptor"
    summary = "Xavier-initialised residual MLP, softplus pairwise ranking loss + L1 recovery; keeps the first k dims"
    citation = Citation("Search-Adaptor: Embedding Customization for Information Retrieval", "Yoon et al.",
                        "ACL 2024", "re-implemented as the DIVE paper's App. F.3 describes it")
    Config = SearchAdaptorConfig

    def __init__(self, config: SearchAdaptorConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.ranking_loss = SoftplusRankingLoss()
        self.recovery_loss = ReconstructionLoss()

    def build(self, input_dim: int) -> ResidualMLP:
        return ResidualMLP(input_dim, self.config.hidden, init="xavier")

    def encode(self, vectors: torch.Tensor) -> torch.Tensor:
        return prefix(self.module(vectors), self.output_dim)

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        outputs = [self.module(part) for part in batch]
        loss_rank = self.ranking_loss(*(prefix(output, self.output_dim) for output in outputs))
        loss_rec = sum((self.recovery_loss(output, part) for output, part in zip(outputs, batch)),
                       loss_rank.new_zeros(())) / len(batch)
        return {"loss": loss_rank + self.config.alpha * loss_rec, "loss_rank": loss_rank, "loss_rec": loss_rec}
