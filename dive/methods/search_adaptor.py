"""Search-Adaptor (Yoon et al., ACL 2024): its own recipe by default, the DIVE paper's restatement as a switch.

A residual MLP ``f(x) = x + g(x)``, ``g = Linear(d,h) ReLU Linear(h,d)``, shared by queries and
documents; the compressed vector is ``y(x) = norm(f(x)[:k])`` and ``s(a, b) = <y(a), y(b)>``.

``recipe = "original"`` (default; SPEC "Search-Adaptor", checked against the paper's Sec. 4 as
public sources quote it and its public re-implementations)::

    L = L_rank + alpha * L_rec + beta * L_pred
    L_rank = sum_{j,l} 1[y_j > y_l] (y_j - y_l) softplus(s(q,d_l) - s(q,d_j))   (graded list-wise)
    L_rec  = mean over q, d of |f(x) - x|_1                   (L1 per vector, summed over d dims)
    L_pred = mean over relevant (q, d) of y_qd * |y(q) - p(y(d))|_1

The candidate list of a query is its relevant documents (graded by their qrels score) and the
shared sampled negatives (grade 0); :class:`~dive.losses.GradedSoftplusRankingLoss` takes
every ordered pair. ``p`` is a training-only query predictor (one ``Linear(k, k)``; the paper
gives no architecture), discarded at inference. Choices the paper leaves open, made here:
the last layer of ``g`` starts at zero, so the untrained adapter is truncation and model
selection can keep it; Adam (``weight_decay = 0``) at lr 1e-3; alpha 0.1 and beta 0.01, the
middle of the grids the re-implementations search (alpha in {0, 0.1, 1}, beta in {0, 0.01,
0.1}: ``dive tune --method search-adaptor`` searches them on the validation slice).

``recipe = "dive-appendix"`` (what the ``paper`` protocol uses, to reproduce the DIVE paper's
tables): DIVE App. F.3's version, Xavier init, ``mean softplus(s(q,n) - s(q,p))`` over
triplets plus ``alpha * (L1(f(q),q) + L1(f(p),p) + L1(f(n),n)) / 3`` with the element-wise mean
L1 (about 1/384 of the original's per-vector sum), no prediction term, AdamW 2e-4.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from dive.data.sets import TrainSet
from dive.errors import DiveError
from dive.losses import GradedSoftplusRankingLoss, ReconstructionLoss, RecoveryLoss, SoftplusRankingLoss
from dive.methods.base import Citation, TorchAdapter
from dive.methods.residual import ResidualMLP, appendix_settings, check_recipe, prefix
from dive.train import Batch, TrainConfig, batch_slices

@dataclass(frozen=True)
class SearchAdaptorConfig:
    """Search-Adaptor's hyperparameters.

    Defaults (``original``): hidden 2048 (DIVE App. F.3, the paper gives none); alpha 0.1 and
    beta 0.01, the middle of the re-implementations' validation grids; ``train``: Adam (weight
    decay 0), lr 1e-3, batch 128, as the paper's re-implementations, with at most 50 epochs and
    model selection on validation (:class:`~dive.train.TrainConfig`).

    Attributes:
        dim: target dimension k (leading dims of ``x + g(x)`` kept).
        hidden: width h of the residual MLP's hidden layer.
        recipe: ``original`` or ``dive-appendix`` (see the module docstring).
        alpha: weight of the recovery regulariser.
        beta: weight of the query-prediction regulariser (``original`` only).
        train: optimisation settings.
    """

    dim: int = 128
    hidden: int = 2048
    recipe: str = "original"
    alpha: float = 0.1
    beta: float = 0.01
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, weight_decay=0.0))

    def __post_init__(self) -> None:
        if self.dim < 1 or self.hidden < 1 or self.alpha < 0 or self.beta < 0:
            raise DiveError("dim and hidden must be positive, alpha and beta >= 0")
        check_recipe(self.recipe)


class SearchAdaptorModule(nn.Module):
    """The residual adapter and the training-only query predictor ``p`` (unused at inference)."""

    def __init__(self, input_dim: int, hidden: int, dim: int, recipe: str):
        super().__init__()
        self.adapter = ResidualMLP(input_dim, hidden, init="zero_last" if recipe == "original" else "xavier")
        self.predictor = nn.Linear(dim, dim)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.adapter(vectors)


class SearchAdaptor(TorchAdapter):
    name = "search-adaptor"
    summary = ("residual MLP, graded list-wise softplus ranking loss + per-vector L1 recovery + query "
               "prediction; keeps the first k dims")
    citation = Citation("Search-Adaptor: Embedding Customization for Information Retrieval", "Yoon et al.",
                        "ACL 2024", "the paper's recipe; the DIVE paper's App. F.3 version for its protocol")
    Config = SearchAdaptorConfig
    search_space = {"alpha": [0.0, 0.1, 1.0], "beta": [0.0, 0.01, 0.1]}
    """The recovery and query-prediction weights' grids of the paper's public re-implementations."""

    def __init__(self, config: SearchAdaptorConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.ranking_loss = GradedSoftplusRankingLoss()
        self.recovery_loss = RecoveryLoss()
        self.appendix_ranking_loss = SoftplusRankingLoss()
        self.appendix_recovery_loss = ReconstructionLoss()

    @classmethod
    def protocol_settings(cls, protocol: str) -> dict[str, Any]:
        """``paper``: the DIVE paper's App. F.3 version with its common budget (AdamW, lr 2e-4), fixed epochs."""
        return appendix_settings(protocol)

    def build(self, input_dim: int) -> SearchAdaptorModule:
        return SearchAdaptorModule(input_dim, self.config.hidden, self.output_dim, self.config.recipe)

    def encode(self, vectors: torch.Tensor) -> torch.Tensor:
        return prefix(self.module(vectors), self.output_dim)

    def epoch_batches(self, train_set: TrainSet, rng: np.random.Generator) -> Iterator[Batch]:
        """``original``: ``(q, d_higher, d_lower, y_higher - y_lower, y_higher)`` list pairs;
        ``dive-appendix``: triplets."""
        if self.config.recipe == "dive-appendix":
            yield from self.triplet_batches(train_set, rng)
            return
        queries = torch.from_numpy(train_set.query_vectors)
        docs = torch.from_numpy(train_set.doc_vectors)
        rows, weights, grades = (torch.from_numpy(array) for array in train_set.graded_pairs(rng))
        for chosen in batch_slices(len(rows), self.train_config.batch_size, rng):
            chosen = torch.from_numpy(chosen)
            picked = rows[chosen]
            yield queries[picked[:, 0]], docs[picked[:, 1]], docs[picked[:, 2]], weights[chosen], grades[chosen]

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._appendix_step(batch) if self.config.recipe == "dive-appendix" else self._original_step(batch)

    def _original_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        queries, higher, lower, weight, higher_grade = batch
        outputs = [self.module(part) for part in (queries, higher, lower)]
        query_out, higher_out, lower_out = (prefix(output, self.output_dim) for output in outputs)
        loss_rank = self.ranking_loss(query_out, higher_out, lower_out, weight)
        loss_rec = sum((self.recovery_loss(output, part) for output, part in zip(outputs, (queries, higher, lower))),
                       loss_rank.new_zeros(())) / 3
        # Each row's higher document is relevant (grade > 0): predict the query from it, weighted by its grade.
        predicted = self.module.predictor(higher_out)
        loss_pred = (higher_grade * (query_out - predicted).abs().sum(dim=1)).mean()
        loss = loss_rank + self.config.alpha * loss_rec + self.config.beta * loss_pred
        return {"loss": loss, "loss_rank": loss_rank, "loss_rec": loss_rec, "loss_pred": loss_pred}

    def _appendix_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        outputs = [self.module(part) for part in batch]
        loss_rank = self.appendix_ranking_loss(*(prefix(output, self.output_dim) for output in outputs))
        loss_rec = sum((self.appendix_recovery_loss(output, part) for output, part in zip(outputs, batch)),
                       loss_rank.new_zeros(())) / len(batch)
        return {"loss": loss_rank + self.config.alpha * loss_rec, "loss_rank": loss_rank, "loss_rec": loss_rec}

