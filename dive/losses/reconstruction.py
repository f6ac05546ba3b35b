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
