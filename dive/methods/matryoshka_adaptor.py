"""Matryoshka-Adaptor (Yoon et al., EMNLP 2024), as SPEC "Matryoshka-Adaptor" restates it.

A residual MLP ``f(x) = x + g(x)``, ``g = Linear(d,h) ReLU Linear(h,d)``, whose last layer is
zero-initialised so training starts at the identity (DIVE paper Appendix F.2). The output for
target dimension k is ``norm(f(x)[:k])``. Every loss is summed over the nested widths
``M = {k, 2k, 4k, ..., d}`` (``k * 2^i`` below d, plus d), with ``y_m = norm(f(x)[:m])`` and
``s_m(a, b) = <y_m(a), y_m(b)>``:

- ranking:  ``L_rank = sum_m mean_i max(0, (1 - s_m(q_i,p_i)) - (1 - s_m(q_i,n_i)) + 0.1)``
- pairwise: ``L_pair = sum_m mean_{i != j} |s_m(x_i,x_j) - s(x_i,x_j)|`` over in-batch pairs
- top-k:    ``L_topk = sum_m mean_{i, j in N10(i)} |s_m(x_i,x_j) - s(x_i,x_j)|``, where
  ``N10(i)`` are the 10 in-batch neighbours of ``i`` with the highest frozen similarity
- reconstruction: ``L_rec = mean |f(x) - x| = mean |g(x)|`` (independent of m)

``L = L_topk + alpha L_pair + beta L_rec + gamma L_rank`` with ``alpha = beta = gamma = 1``.

Two recipes (SPEC "Matryoshka-Adaptor"; ``recipe`` in the config):

- ``original`` (default): the paper's two-stage training. Stage 1 is unsupervised, on corpus
  batches alone (``L_topk + alpha L_pair + beta L_rec``); stage 2 adds the supervised ranking
  term with the unsupervised terms kept. The ranking term is Search-Adaptor's pairwise
  logistic loss summed over the nested widths,
  ``L_rank = sum_m mean_i softplus(s_m(q_i,n_i) - s_m(q_i,p_i))``, as the paper's public
  re-implementations use it; Adam (weight decay 0) at lr 1e-3 (the paper's Table 5); each
  stage keeps its best validation checkpoint (the identity start included) with patience.
- ``dive-appendix`` (what the ``paper`` protocol uses, to reproduce the DIVE paper's tables;
  DIVE App. F.2): one stage, the hinge ranking term above (margin 0.1) with the unsupervised
  terms, AdamW 2e-4 for the paper's fixed epochs.

Choices SPEC leaves open (documented here):

- The unsupervised losses use *corpus* vectors only (SPEC "Training data": unsupervised
  losses fit on the corpus). With triplets, every triplet batch of B is paired with B corpus
  vectors that walk through a fresh permutation of the whole corpus each epoch (wrapping
  around when there are more triplet batches than corpus chunks); the ranking loss uses the
  triplets, the three unsupervised losses use those corpus vectors.
- ``L_rec`` is the element-wise mean absolute error (``F.l1_loss``), as the DIVE paper's
  Appendix F.3 implements the same residual regulariser for Search-Adaptor; the original
  ``|.|_1`` (a sum over d dims) would be this times d.
- ``unsupervised_only=True`` trains on the corpus alone (``L_topk + alpha L_pair + beta L_rec``,
  batches of corpus vectors; the ``original`` recipe's first stage alone), so the method then
  also fits ``TrainSet.unsupervised(...)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from dive.data.sets import TrainSet
from dive.errors import DiveError
from dive.losses import (NestedWidthsLoss, ReconstructionLoss, SelfLimitingTripletLoss, SimilarityPreservationLoss,
                         SoftplusRankingLoss)
from dive.methods.base import Citation, TorchAdapter
from dive.methods.residual import ResidualMLP, appendix_settings, check_recipe, prefix
from dive.train import Batch, Stage, TrainConfig


class _SupervisedUnlessUnsupervisedOnly:
    """``supervised`` is True on the class (the default) and ``not config.unsupervised_only`` on an instance."""

    def __get__(self, instance: Any, owner: type) -> bool:
        return True if instance is None else not instance.config.unsupervised_only


@dataclass(frozen=True)
class MatryoshkaAdaptorConfig:
    """Matryoshka-Adaptor's hyperparameters.

    Defaults: hidden 2048 and the zero-initialised residual MLP from DIVE App. F.2; margin 0.1
    (``dive-appendix`` only; DIVE App. F.2 / SPEC); alpha = beta = gamma = 1 and the 10 top-k
    neighbours from SPEC "Matryoshka-Adaptor" (the original paper's unsupervised losses);
    ``train``: Adam, lr 1e-3, batch 128 (the paper's Table 5), at most 50 epochs per stage.

    Attributes:
        dim: target dimension k (the smallest nested width).
        hidden: width h of the residual MLP's hidden layer.
        margin: ranking-loss margin.
        alpha: weight of the pairwise similarity loss ``L_pair``.
        beta: weight of the reconstruction loss ``L_rec``.
        gamma: weight of the supervised ranking loss ``L_rank``.
        neighbours: in-batch neighbours per sample in the top-k loss ``L_topk``.
        unsupervised_only: train on corpus vectors alone (no triplets, no ``L_rank``).
        recipe: ``original`` (two stages, softplus ranking) or ``dive-appendix`` (see the module docstring).
        train: optimisation settings (``original``: Adam, lr 1e-3, the paper's Table 5; at most
            ``epochs`` per stage).
    """

    dim: int = 128
    hidden: int = 2048
    margin: float = 0.1
    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 1.0
    neighbours: int = 10
    unsupervised_only: bool = False
    recipe: str = "original"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, weight_decay=0.0))

    def __post_init__(self) -> None:
        if self.dim < 1 or self.hidden < 1 or self.neighbours < 1:
            raise DiveError("dim, hidden and neighbours must be positive")
        if min(self.alpha, self.beta, self.gamma) < 0:
            raise DiveError("alpha, beta and gamma must be >= 0")
        check_recipe(self.recipe)


class MatryoshkaAdaptor(TorchAdapter):
    name = "matryoshka-adaptor"
    summary = ("identity-initialised residual MLP, nested-width ranking + similarity-preservation "
               "+ reconstruction losses; keeps the first k dims")
    citation = Citation("Matryoshka-Adaptor: Unsupervised and Supervised Tuning for Smaller Embedding Dimensions",
                        "Yoon et al.", "EMNLP 2024", "the paper's two-stage recipe; the DIVE paper's App. F.2 "
                        "version for its protocol")
    Config = MatryoshkaAdaptorConfig
    search_space = {"alpha": [0.1, 1.0, 10.0], "beta": [0.1, 1.0, 10.0], "gamma": [0.1, 1.0, 10.0]}
    """The three loss weights around the paper's 1 (SPEC "Matryoshka-Adaptor": alpha = beta = gamma = 1)."""
    supervised = _SupervisedUnlessUnsupervisedOnly()  # type: ignore[assignment]

    def __init__(self, config: MatryoshkaAdaptorConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        pair_loss = SoftplusRankingLoss() if self.config.recipe == "original" else SelfLimitingTripletLoss(
            self.config.margin)
        self.ranking_loss = NestedWidthsLoss(pair_loss, dim=self.output_dim)
        self.similarity_loss = NestedWidthsLoss(SimilarityPreservationLoss(self.config.neighbours), dim=self.output_dim)
        self.reconstruction_loss = ReconstructionLoss()

    @classmethod
    def protocol_settings(cls, protocol: str) -> dict[str, Any]:
        """``paper``: the DIVE paper's App. F.2 version with its common budget (AdamW, lr 2e-4), fixed epochs."""
        return appendix_settings(protocol)

    def stages(self, train_set: TrainSet) -> list[Stage]:
        """``original``: the unsupervised stage on corpus batches, then (with labels) the supervised one."""
        if self.config.recipe == "dive-appendix" or self.config.unsupervised_only:
            return super().stages(train_set)
        epochs = self.train_config.epochs
        return [Stage(epochs=epochs, step=self.step, batches=lambda rng: self.corpus_batches(train_set, rng),
                      name="stage-0"),
                Stage(epochs=epochs, step=self.step, name="stage-1", seed_offset=1)]

    def build(self, input_dim: int) -> ResidualMLP:
        return ResidualMLP(input_dim, self.config.hidden, init="zero_last")

    def encode(self, vectors: torch.Tensor) -> torch.Tensor:
        return prefix(self.module(vectors), self.output_dim)

    def epoch_batches(self, train_set: TrainSet, rng: np.random.Generator) -> Iterator[Batch]:
        """``(corpus,)`` batches when unsupervised-only, else ``(q, p, n, corpus)``."""
        if self.config.unsupervised_only:
            return self.corpus_batches(train_set, rng)
        return self.triplets_with_corpus(train_set, rng)

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The loss parts of ``(corpus,)`` (unsupervised) or ``(q, p, n, corpus)`` (with the ranking term)."""
        corpus = batch[-1]
        outputs = self.module(corpus)
        loss_pair, loss_topk = self.similarity_loss(outputs, frozen=corpus)
        loss_rec = self.reconstruction_loss(outputs, corpus)
        parts = {"loss_topk": loss_topk, "loss_pair": loss_pair, "loss_rec": loss_rec}
        loss = loss_topk + self.config.alpha * loss_pair + self.config.beta * loss_rec
        if len(batch) > 1:  # triplets beside the corpus batch: the supervised term too
            parts["loss_rank"] = self.ranking_loss(*(self.module(part) for part in batch[:3]))
            loss = loss + self.config.gamma * parts["loss_rank"]
        parts["loss"] = loss
        return parts
