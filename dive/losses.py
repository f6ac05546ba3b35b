"""Training losses. Each docstring gives the formula and where it comes from.

All similarities are cosines of L2-normalised vectors, ``s(a, b) = <a, b>``. Where
pytorch-metric-learning implements exactly the SPEC formula it does the computing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.losses import SupConLoss, TripletMarginLoss
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


class HeadwiseNTXentLoss(torch.nn.Module):
    """Head-wise NT-Xent over implicit views (DIVE paper Eq. 9-10, Appendix F.1; SPEC "DIVE").

    For ``[B, H, k]`` unit head vectors flattened to ``B*H`` anchors ``a``, positives ``P(a)``
    are the other ``H-1`` heads of the same sample and the softmax runs over every vector but
    ``a``::

        l(a) = -1/|P(a)| * sum_{p in P(a)} log( exp(s(a,p)/tau) / sum_{j != a} exp(s(a,j)/tau) )
        NTX  = mean_a l(a)

    This is the supervised-contrastive "L_out" loss (Khosla et al., 2020) with the sample index
    as label, i.e. pytorch-metric-learning's ``SupConLoss``. With ``H = 1`` there are no
    positives and the loss is zero.
    """

    def __init__(self, temperature: float):
        super().__init__()
        self.temperature = temperature
        self.loss = SupConLoss(temperature=temperature, distance=CosineSimilarity())

    def forward(self, heads: torch.Tensor) -> torch.Tensor:
        batch, n_heads, dim = heads.shape
        if n_heads < 2:
            return heads.new_zeros(())
        labels = torch.arange(batch, device=heads.device).repeat_interleave(n_heads)
        return self.loss(heads.reshape(batch * n_heads, dim), labels)


def softplus_ranking_loss(query: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Pairwise logistic ranking loss ``mean softplus(s(q,n) - s(q,p))``.

    Search-Adaptor (Yoon et al., ACL 2024) and SMEC's ranking term (Zhang et al., EMNLP 2025),
    as written in the DIVE paper's Appendix F.3/F.4 (``log(1 + exp(s_neg - s_pos))``).
    """
    return F.softplus(row_cosine(query, negative) - row_cosine(query, positive)).mean()

