"""Matryoshka-Adaptor's in-batch similarity-preservation losses (pairwise and top-k)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class SimilarityErrors(NamedTuple):
    """The two similarity-preservation terms of one batch."""

    pair: torch.Tensor
    topk: torch.Tensor


class SimilarityPreservationLoss(torch.nn.Module):
    """``(L_pair, L_topk)``: how well reduced vectors keep the frozen in-batch similarities.

    Matryoshka-Adaptor's unsupervised losses (Yoon et al., EMNLP 2024; SPEC "Matryoshka-Adaptor").
    For frozen unit vectors ``x_i`` with similarity ``s(i,j) = <x_i, x_j>`` and unit outputs
    ``y_i`` with ``s'(i,j) = <y_i, y_j>``::

        L_pair = mean_{i != j} |s'(i,j) - s(i,j)|
        L_topk = mean_{i, j in N(i)} |s'(i,j) - s(i,j)|

    ``N(i)`` are the ``neighbours`` other rows most similar to ``i`` under ``s``. Both terms
    come from one ``s'`` matrix. Wrap in :class:`~dive.losses.NestedWidthsLoss` for the sum
    over nested widths ``m`` (``y = norm(f(x)[:m])``).
    """

    def __init__(self, neighbours: int):
        super().__init__()
        self.neighbours = neighbours

    def forward(self, reduced: torch.Tensor, frozen: torch.Tensor) -> SimilarityErrors:
        batch = frozen.shape[0]
        similarity = frozen @ frozen.T
        off_diagonal = ~torch.eye(batch, dtype=torch.bool, device=frozen.device)
        n_top = min(self.neighbours, batch - 1)
        top = similarity.masked_fill(~off_diagonal, float("-inf")).topk(n_top, dim=1).indices
        reduced_similarity = reduced @ reduced.T
        loss_pair = (reduced_similarity - similarity).abs()[off_diagonal].mean()
        loss_topk = (reduced_similarity.gather(1, top) - similarity.gather(1, top)).abs().mean()
        return SimilarityErrors(loss_pair, loss_topk)
