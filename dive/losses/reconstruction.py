"""The L1 reconstruction (recovery) regulariser of the residual adapters."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class ReconstructionLoss(torch.nn.Module):
    """``L_rec = mean_{i,j} |f(x)_ij - x_ij|``: how far an adapter moves its inputs.

    Matryoshka-Adaptor's reconstruction loss (Yoon et al., EMNLP 2024; SPEC "Matryoshka-Adaptor")
    and Search-Adaptor's recovery regulariser (Yoon et al., ACL 2024). It is the element-wise
    mean (``F.l1_loss``), as the DIVE paper's Appendix F.3 implements it; the original
    ``|f(x) - x|_1`` (a sum over the d dims) is this times d.
    """

    def forward(self, outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(outputs, inputs)


class RecoveryLoss(torch.nn.Module):
    """``L_rec = mean_i |f(x_i) - x_i|_1``: the L1 distance an adapter moves each vector, summed over
    its dimensions and averaged over vectors.

    Search-Adaptor's recovery regulariser as its paper defines it (Yoon et al., ACL 2024: an L1
    norm per embedding, on queries and documents). Unlike :class:`ReconstructionLoss` (the
    element-wise mean of the DIVE paper's App. F.3), it does not shrink by a factor d, so a
    weight of 0.1 keeps the adapter near its start.
    """

    def forward(self, outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return (outputs - inputs).abs().sum(dim=1).mean()
