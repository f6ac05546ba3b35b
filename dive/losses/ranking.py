"""The pairwise logistic (softplus) ranking loss of Search-Adaptor and SMEC."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dive.losses.triplet import row_cosine


class SoftplusRankingLoss(torch.nn.Module):
    """Pairwise logistic ranking loss ``L_rank = mean_i softplus(s(q_i,n_i) - s(q_i,p_i))``.

    Search-Adaptor (Yoon et al., ACL 2024) and SMEC's ranking term (Zhang et al., EMNLP 2025),
    as written in the DIVE paper's Appendix F.3/F.4 (``log(1 + exp(s_neg - s_pos))``).
    """

    def forward(self, query: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        return F.softplus(row_cosine(query, negative) - row_cosine(query, positive)).mean()


def softplus_ranking_loss(query: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Function form of :class:`SoftplusRankingLoss`."""
    return SoftplusRankingLoss()(query, positive, negative)


class GradedSoftplusRankingLoss(torch.nn.Module):
    """Search-Adaptor's relevance-weighted pairwise logistic loss over each query's candidate list.

    For a query q with candidates d_j graded y_j (qrels score; sampled negatives are 0)::

        L_rank = sum_{j,l} 1[y_j > y_l] * (y_j - y_l) * softplus(s(q,d_l) - s(q,d_j))

    (Yoon et al., ACL 2024, Sec. 4.2, Eq. 2: a weighted pairwise logistic loss). Every ordered
    pair of the list is one row here, ``(q, d_j, d_l)`` with weight ``y_j - y_l``; the batch
    value is the weighted sum divided by the number of rows (a mean over pairs), so the loss
    scale does not depend on the batch size.
    """

    def forward(self, query: torch.Tensor, higher: torch.Tensor, lower: torch.Tensor,
                weight: torch.Tensor) -> torch.Tensor:
        return (weight * F.softplus(row_cosine(query, lower) - row_cosine(query, higher))).mean()
