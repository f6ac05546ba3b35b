"""Similarity preservation on given anchor-neighbour pairs (SMEC's S-XBM term)."""

from __future__ import annotations

import torch


class NeighbourSimilarityLoss(torch.nn.Module):
    """``mean_{(a, b) valid} |<y_a, y_b> - s(a, b)|``: reduced similarities against frozen ones.

    SMEC's S-XBM similarity loss ``|s_k(a, b) - s(a, b)|`` (Zhang et al., EMNLP 2025; SPEC
    "SMEC"), for ``[B, w]`` reduced anchors ``y_a``, their ``[B, n, w]`` reduced neighbours
    ``y_b``, the ``[B, n]`` frozen similarities ``s(a, b)`` and a ``[B, n]`` mask of the real
    pairs (padding pairs count for nothing). :class:`~dive.losses.CrossBatchMemoryLoss` picks
    the neighbours from its memory.
    """

    def forward(self, anchors: torch.Tensor, neighbours: torch.Tensor, frozen_similarity: torch.Tensor,
                valid: torch.Tensor) -> torch.Tensor:
        reduced_similarity = torch.einsum("bw,bnw->bn", anchors, neighbours)
        errors = (reduced_similarity - frozen_similarity.masked_fill(~valid, 0)).abs() * valid
        return errors.sum() / valid.sum().clamp(min=1)
