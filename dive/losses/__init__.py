"""Training losses, one per module; each docstring gives the formula and where it comes from.

All similarities are cosines of L2-normalised vectors, ``s(a, b) = <a, b>``. Where
pytorch-metric-learning implements exactly the SPEC formula it does the computing.

Base losses: :class:`SelfLimitingTripletLoss` (DIVE), :class:`HeadwiseNTXentLoss` (DIVE),
:class:`SoftplusRankingLoss` (SMEC; Search-Adaptor as the DIVE paper restates it),
:class:`GradedSoftplusRankingLoss` and :class:`RecoveryLoss` (Search-Adaptor's own), :class:`SimilarityPreservationLoss` and
:class:`ReconstructionLoss` (Matryoshka-Adaptor), :class:`NeighbourSimilarityLoss` (SMEC S-XBM).
Wrappers compose with them: :class:`NestedWidthsLoss` sums an inner loss over nested widths;
:class:`CrossBatchMemoryLoss` applies an inner pair loss against a memory of past batches.
"""

from dive.losses.cross_batch_memory import CrossBatchMemoryLoss, Memory
from dive.losses.nested import NestedWidthsLoss, nested_dims, prefix
from dive.losses.neighbour_similarity import NeighbourSimilarityLoss
from dive.losses.ntxent import HeadwiseNTXentLoss
from dive.losses.ranking import GradedSoftplusRankingLoss, SoftplusRankingLoss, softplus_ranking_loss
from dive.losses.reconstruction import ReconstructionLoss, RecoveryLoss
from dive.losses.similarity_preservation import SimilarityErrors, SimilarityPreservationLoss
from dive.losses.triplet import SelfLimitingTripletLoss, row_cosine

__all__ = [
    "CrossBatchMemoryLoss", "GradedSoftplusRankingLoss", "HeadwiseNTXentLoss", "Memory", "NeighbourSimilarityLoss", "NestedWidthsLoss",
    "ReconstructionLoss", "RecoveryLoss", "SelfLimitingTripletLoss", "SimilarityErrors", "SimilarityPreservationLoss",
    "SoftplusRankingLoss", "nested_dims", "prefix", "row_cosine", "softplus_ranking_loss",
]
