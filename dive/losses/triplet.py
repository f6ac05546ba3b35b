"""DIVE's self-limiting hinge triplet loss."""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.losses import TripletMarginLoss
from pytorch_metric_learning.reducers import MeanReducer


def row_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise inner product of two ``[B, k]`` batches of unit vectors."""
    return (a * b).sum(dim=1)


class SelfLimitingTripletLoss(torch.nn.Module):
    """DIVE's hinge triplet loss on head 1 (DIVE paper Eq. 7, Appendix F.1; SPEC "DIVE").

    ``L_tri = mean_i max(0, m - (s(q_i, p_i) - s(q_i, n_i)))``, averaged over *all* triplets.
    A triplet with ``s(q,p) - s(q,n) >= m`` contributes exactly zero loss and zero gradient.

    Computed by pytorch-metric-learning's ``TripletMarginLoss`` with cosine similarity and a
    ``MeanReducer`` (its default reducer averages only the non-zero terms, which SPEC forbids).

    Matryoshka-Adaptor's ranking loss ``max(0, (1 - s(q,p)) - (1 - s(q,n)) + margin)`` (DIVE
    paper Appendix F.2) is the same expression, so it reuses this class with margin 0.1.
    """

    def __init__(self, margin: float):
        super().__init__()
        self.margin = margin
        self.loss = TripletMarginLoss(margin=margin, distance=CosineSimilarity(), reducer=MeanReducer())

    def forward(self, query: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        batch = query.shape[0]
        rows = torch.arange(batch, device=query.device)
        embeddings = torch.cat([query, positive, negative])
        return self.loss(embeddings, indices_tuple=(rows, rows + batch, rows + 2 * batch))

    def active(self, query: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the triplets that still violate the margin (receive gradient)."""
        return row_cosine(query, positive) - row_cosine(query, negative) < self.margin
