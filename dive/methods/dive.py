"""DIVE: Dimensionality reduction with Implicit View Ensembles (SPEC "DIVE"; paper Eq. 1-10, App. F.1).

A multi-head MLP ``d -> h -> h/2 -> H*k`` (BatchNorm on the first layer only, Xavier-uniform
init) whose output is split into H L2-normalised heads of k dims. Training minimises
``L_tri + lambda * L_con``: a self-limiting hinge triplet loss on head 1 and a head-wise
NT-Xent loss treating the H heads of each vector as views. Inference keeps head 1 only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dive import checks
from dive.losses import HeadwiseNTXentLoss, SelfLimitingTripletLoss
from dive.methods.base import Citation, LinearLayer, TorchAdapter
from dive.train import Batch, TrainConfig

PAPER_TABLE_8: dict[str, tuple[float, float, float, int]] = {
    "scifact": (1.0, 0.1, 0.20, 4),
    "nfcorpus": (0.7, 0.1, 0.10, 4),
    "fiqa": (0.7, 0.1, 0.10, 4),
    "arguana": (1.3, 0.3, 0.05, 8),
    "scidocs": (0.7, 0.1, 0.10, 4),
    "quora": (0.7, 0.1, 0.10, 4),
}
"""Per-dataset (margin, lambda, tau, heads) from the DIVE paper's Table 8 (Appendix D)."""

CITATION = Citation("DIVE: Embedding Compression via Self-Limiting Gradient Updates", "Dongfang Zhao", "preprint")
"""The DIVE paper (shared by DIVE's ablations)."""


@dataclass(frozen=True)
class DiveConfig:
    """DIVE's hyperparameters.

    Defaults: SPEC "DIVE" / paper Appendix F.1 for the architecture (hidden 2048), and SPEC's
    "other datasets" row of Table 8 (margin 0.7, lambda 0.1, tau 0.10, 4 heads) for the losses;
    :meth:`Dive.default_config` swaps in a dataset's own Table 8 row.

    Attributes:
        dim: target dimension k (the kept head's width).
        hidden: width h of the first layer; the second is h/2.
        heads: number of heads H (1 = the ``w/o multi-head`` ablation, no contrastive loss).
        margin: hinge margin m of the self-limiting triplet loss.
        lambda_contrast: weight of the head-wise NT-Xent loss (0 = ``w/o contrast``).
        temperature: NT-Xent temperature tau.
        train: optimisation settings (paper: AdamW, lr 2e-4, batch 128, 50 epochs).
    """

    dim: int = 128
    hidden: int = 2048
    heads: int = 4
    margin: float = 0.7
    lambda_contrast: float = 0.1
    temperature: float = 0.1
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        checks.whole_at_least("dim", self.dim, 1)
        checks.whole_at_least("hidden", self.hidden, 2)
        checks.whole_at_least("heads", self.heads, 1)
        checks.finite("margin", self.margin)
        checks.at_least("lambda_contrast", self.lambda_contrast, 0)
        checks.above("temperature", self.temperature, 0)


class MultiHeadAdapter(nn.Module):
    """``z = W3 ReLU(W2 ReLU(BN(W1 x + b1)) + b2) + b3`` reshaped to ``[H, k]``, each head unit-norm."""

    def __init__(self, input_dim: int, hidden: int, dim: int, heads: int):
        super().__init__()
        self.dim, self.heads = dim, heads
        self.net = nn.Sequential(
            nn.Linear(input_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden // 2), nn.ReLU(),
            nn.Linear(hidden // 2, heads * dim),
        )
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """All heads, ``[B, H, k]``, each L2-normalised."""
        return F.normalize(self.net(vectors).view(-1, self.heads, self.dim), dim=-1)


class Dive(TorchAdapter):
    name = "dive"
    summary = "multi-head MLP, self-limiting hinge triplet loss + head-wise NT-Xent; keeps head 1"
    citation = CITATION
    Config = DiveConfig
    role = "main"
    search_space = {"margin": [0.5, 0.7, 1.0, 1.3, 1.5], "lambda_contrast": [0.05, 0.1, 0.2, 0.3, 0.5],
                    "temperature": [0.05, 0.1, 0.2], "heads": [2, 4, 8]}
    """SPEC "DIVE": m in {0.5..1.5}, lambda in {0.05..0.5}, tau in {0.05, 0.1, 0.2}, H in {2, 4, 8}."""

    @classmethod
    def default_config(cls, dataset: str | None = None) -> DiveConfig:
        config = DiveConfig()
        if dataset in PAPER_TABLE_8:
            margin, lambda_contrast, temperature, heads = PAPER_TABLE_8[dataset]
            config = replace(config, margin=margin, lambda_contrast=lambda_contrast,
                             temperature=temperature, heads=heads)
        return config

    def __init__(self, config: DiveConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.triplet_loss = SelfLimitingTripletLoss(self.config.margin)
        self.contrast_loss = HeadwiseNTXentLoss(self.config.temperature)

    def build(self, input_dim: int) -> MultiHeadAdapter:
        return MultiHeadAdapter(input_dim, self.config.hidden, self.config.dim, self.config.heads)

    def encode(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.module(vectors)[:, 0, :]

    def linear_layers(self) -> list[LinearLayer]:
        """Head 1 as three linear steps; eval-mode BatchNorm is folded into the first layer."""
        first, batchnorm, _, second, _, third = self.module.net
        scale = batchnorm.weight / torch.sqrt(batchnorm.running_var + batchnorm.eps)
        weight_1 = first.weight * scale[:, None]
        bias_1 = (first.bias - batchnorm.running_mean) * scale + batchnorm.bias
        k = self.config.dim
        layers = [(weight_1, bias_1, True), (second.weight, second.bias, True), (third.weight[:k], third.bias[:k], False)]
        return [(weight.detach(), bias.detach(), relu) for weight, bias, relu in layers]

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        queries, positives, negatives = (self.module(part) for part in batch)
        head_1 = (queries[:, 0], positives[:, 0], negatives[:, 0])
        loss_triplet = self.triplet_loss(*head_1)
        parts = {"loss_triplet": loss_triplet, "n_active": self.triplet_loss.active(*head_1).sum()}
        if self.config.heads > 1 and self.config.lambda_contrast > 0:
            loss_contrast = (self.contrast_loss(queries) + self.contrast_loss(positives)
                             + self.contrast_loss(negatives)) / 3
        else:
            loss_contrast = loss_triplet.new_zeros(())
        parts["loss_contrast"] = loss_contrast
        parts["loss"] = loss_triplet + self.config.lambda_contrast * loss_contrast
        return parts


def parameter_count(input_dim: int, hidden: int, dim: int, heads: int) -> int:
    """SPEC's trainable-parameter formula: ``d*h + h + 2h + h*h/2 + h/2 + (h/2)*H*k + H*k``."""
    return (input_dim * hidden + hidden + 2 * hidden + hidden * hidden // 2 + hidden // 2
            + (hidden // 2) * heads * dim + heads * dim)
