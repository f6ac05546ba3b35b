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
