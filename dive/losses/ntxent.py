"""DIVE's head-wise NT-Xent contrastive loss."""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.losses import SupConLoss


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
