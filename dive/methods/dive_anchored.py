"""DIVE-anchored: DIVE's losses on a multi-head adapter that starts where the frozen model is good.

The DIVE paper argues that its self-limiting loss protects the pretrained geometry when labels
are scarce; measured held out, DIVE starts from a random projection and does not get back to it
(issue 21). This method keeps DIVE's two losses and changes where training starts and what it
must keep. Each change is a config switch, so its effect can be ablated:

Architecture (``H`` heads of ``k`` dims; ``anchor`` the ``[k, d]`` matrix below)::

    trunk(x) = ReLU(W2 ReLU(Norm(W1 x + b1)) + b2)                  # d -> h -> h/2
    z_j(x)   = A x + C_j trunk(x) + c_j,   j = 1..H                 # C, c zero-initialised
    y_j(x)   = norm(z_j(x))                                         # inference keeps y_1

- ``init`` (default ``pca``): ``A`` starts at the corpus's top-k principal axes (uncentred, as
  :class:`~dive.methods.pca.Pca`), so the untrained method *is* PCA and scores what PCA
  scores; ``truncate`` starts ``A`` at the first k coordinates; ``random`` starts A at zero and
  the correction at Xavier, like DIVE (a random projection). ``A`` trains.
- ``norm`` (default ``batch``): the trunk's normalisation. ``batch`` is DIVE's BatchNorm, whose
  training statistics come from triplet batches while inference uses running averages;
  ``layer`` (LayerNorm) has no batch statistics, so training and inference compute the same
  map. Validation preferred ``batch`` (see the defaults below).
- Losses, with ``s`` the cosine of unit vectors::

      L = L_tri + lambda * L_con + mu * (L_pair + L_topk)

  ``L_tri`` is DIVE's self-limiting hinge on head 1 (margin m), ``L_con`` DIVE's head-wise
  NT-Xent over q, p and n (temperature tau), and ``L_pair + L_topk`` Matryoshka-Adaptor's
  similarity preservation of head 1 against the frozen vectors on unlabelled *corpus* batches
  (:class:`~dive.losses.SimilarityPreservationLoss`, 10 neighbours): it keeps the geometry of
  the whole corpus, not only of the few labelled documents. ``preserve`` (mu, default 1; 0
  turns it off).
- ``store_as`` (default ``float32``): storage-aware training. With ``int8`` or ``binary``, the
  triplet loss sees head 1 through the codec it will be stored with, straight through
  (the forward pass quantises, the backward pass is the identity): ``int8`` rounds each
  dimension to 256 levels between the batch's min and max, ``binary`` takes the sign of each
  dimension minus the batch median (dive's binary codec), scaled to unit norm.

Model selection and tuning are dive's (:mod:`dive.train`, :mod:`dive.experiments.tune`): the
held-out validation slice picks the kept epoch, the untrained (PCA) start included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dive import checks
from dive.data.sets import TrainSet
from dive.losses import HeadwiseNTXentLoss, SelfLimitingTripletLoss, SimilarityPreservationLoss
from dive.methods.base import Citation, TorchAdapter
from dive.methods.pca import principal_axes
from dive.train import Batch, TrainConfig

INITS = ("pca", "truncate", "random")
NORMS = ("layer", "batch")
STORAGE = ("float32", "int8", "binary")


@dataclass(frozen=True)
class DiveAnchoredConfig:
    """DIVE-anchored's settings.

    Defaults: DIVE's architecture widths (hidden 2048; SPEC "DIVE"), tau 0.1 and AdamW at lr 2e-4
    with model selection on validation; 10 neighbours for the similarity preservation, as
    Matryoshka-Adaptor (SPEC). One set of defaults for every dataset: margin 0.3, lambda 0.1,
    preserve 1, BatchNorm and 4 heads were chosen by the mean validation nDCG@10 over scifact and
    cranfield (fold 1), 128 dims, seed 0, in an 11-trial Optuna TPE search over margin {0.3, 0.5,
    0.7, 1.0}, lambda {0, 0.1, 0.3}, preserve {0.3, 1, 3}, norm {layer, batch}, heads {2, 4}
    (validation 0.7985 on scifact, 0.5090 on cranfield, against 0.7683 and 0.4636 for DIVE's
    own margin 0.7 with LayerNorm); no test query was scored.

    Attributes:
        dim: target dimension k.
        hidden: width h of the trunk's first layer; the second is h/2.
        heads: number of heads H (1: no contrastive loss).
        margin: hinge margin m of the self-limiting triplet loss.
        lambda_contrast: weight of the head-wise NT-Xent loss.
        temperature: NT-Xent temperature tau.
        preserve: weight mu of the corpus similarity-preservation loss (0: off).
        neighbours: in-batch neighbours of the top-k similarity term.
        init: where the linear path starts: ``pca``, ``truncate`` or ``random``.
        norm: the trunk's normalisation: ``layer`` or ``batch``.
        store_as: the storage head 1 is trained through: ``float32``, ``int8`` or ``binary``.
        train: optimisation settings.
    """

    dim: int = 128
    hidden: int = 2048
    heads: int = 4
    margin: float = 0.3
    lambda_contrast: float = 0.1
    temperature: float = 0.1
    preserve: float = 1.0
    neighbours: int = 10
    init: str = "pca"
    norm: str = "batch"
    store_as: str = "float32"
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        checks.whole_at_least("dim", self.dim, 1)
        checks.whole_at_least("hidden", self.hidden, 2)
        checks.whole_at_least("heads", self.heads, 1)
        checks.whole_at_least("neighbours", self.neighbours, 1)
        checks.finite("margin", self.margin)
        checks.at_least("lambda_contrast", self.lambda_contrast, 0)
        checks.above("temperature", self.temperature, 0)
        checks.at_least("preserve", self.preserve, 0)
        checks.one_of("init", self.init, INITS)
        checks.one_of("norm", self.norm, NORMS)
        checks.one_of("store_as", self.store_as, STORAGE)


class AnchoredMultiHead(nn.Module):
    """``y_j(x) = norm(A x + C_j trunk(x) + c_j)`` for heads j = 1..H, ``forward -> [B, H, k]``."""

    def __init__(self, input_dim: int, hidden: int, dim: int, heads: int, norm: str):
        super().__init__()
        self.dim, self.heads = dim, heads
        self.anchor = nn.Linear(input_dim, dim, bias=False)
        self.trunk = nn.Sequential(nn.Linear(input_dim, hidden), _norm(norm, hidden), nn.ReLU(),
                                   nn.Linear(hidden, hidden // 2), nn.ReLU())
        self.correction = nn.Linear(hidden // 2, heads * dim)
        for layer in (self.trunk[0], self.trunk[3]):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    @torch.no_grad()
    def start_at(self, anchor: torch.Tensor | None) -> None:
        """The untrained map: ``anchor`` (``[k, d]``) with no correction, or (None) DIVE's random start."""
        if anchor is None:
            nn.init.zeros_(self.anchor.weight)
            nn.init.xavier_uniform_(self.correction.weight)
        else:
            self.anchor.weight.copy_(anchor)
            nn.init.zeros_(self.correction.weight)
        nn.init.zeros_(self.correction.bias)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        corrections = self.correction(self.trunk(vectors)).view(-1, self.heads, self.dim)
        return F.normalize(self.anchor(vectors)[:, None, :] + corrections, dim=-1)


def _norm(kind: str, width: int) -> nn.Module:
    return nn.LayerNorm(width) if kind == "layer" else nn.BatchNorm1d(width)


def straight_through(vectors: torch.Tensor, store_as: str) -> torch.Tensor:
    """``vectors`` as the codec stores them in the forward pass, unchanged in the backward pass."""
    if store_as == "float32":
        return vectors
    if store_as == "int8":
        low, high = vectors.min(dim=0).values, vectors.max(dim=0).values
        step = (high - low).clamp_min(1e-12) / 255
        stored = torch.round((vectors - low) / step) * step + low
    else:
        signs = torch.where(vectors > vectors.median(dim=0).values, 1.0, -1.0)
        stored = signs / vectors.shape[1] ** 0.5
    return vectors + (stored - vectors).detach()


class DiveAnchored(TorchAdapter):
    name = "dive-anchored"
    summary = ("DIVE's losses on a multi-head adapter that starts at PCA and keeps the corpus geometry "
               "(similarity preservation), optionally trained through its storage codec; keeps head 1")
    citation = Citation("DIVE: Embedding Compression via Self-Limiting Gradient Updates", "Dongfang Zhao",
                        "preprint", "dive's variant: anchored start, corpus similarity preservation, "
                                    "storage-aware training (issue 21)")
    Config = DiveAnchoredConfig
    role = "main"
    search_space = {"margin": [0.3, 0.5, 0.7, 1.0], "lambda_contrast": [0.0, 0.1, 0.3],
                    "preserve": [0.3, 1.0, 3.0], "norm": ["layer", "batch"], "heads": [2, 4]}
    """The space its defaults were chosen in (see :class:`DiveAnchoredConfig`)."""

    def __init__(self, config: DiveAnchoredConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.triplet_loss = SelfLimitingTripletLoss(self.config.margin)
        self.contrast_loss = HeadwiseNTXentLoss(self.config.temperature)
        self.preservation_loss = SimilarityPreservationLoss(self.config.neighbours)
        self._start: torch.Tensor | None = None

    def _fit(self, train_set: TrainSet) -> None:
        self._start = start_map(self.config.init, train_set.doc_vectors, self.output_dim)
        super()._fit(train_set)

    def build(self, input_dim: int) -> AnchoredMultiHead:
        module = AnchoredMultiHead(input_dim, self.config.hidden, self.config.dim, self.config.heads,
                                   self.config.norm)
        module.start_at(self._start)
        return module

    def encode(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.module(vectors)[:, 0, :]

    def epoch_batches(self, train_set: TrainSet, rng: np.random.Generator) -> Iterator[Batch]:
        """``(q, p, n, corpus)``: the corpus batches feed the similarity preservation."""
        return self.triplets_with_corpus(train_set, rng)

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        queries, positives, negatives = (self.module(part) for part in batch[:3])
        head_1 = tuple(straight_through(part[:, 0], self.config.store_as) for part in (queries, positives, negatives))
        loss_triplet = self.triplet_loss(*head_1)
        parts = {"loss_triplet": loss_triplet, "n_active": self.triplet_loss.active(*head_1).sum()}
        parts["loss_contrast"] = loss_triplet.new_zeros(())
        if self.config.heads > 1 and self.config.lambda_contrast > 0:
            parts["loss_contrast"] = sum(self.contrast_loss(part) for part in (queries, positives, negatives)) / 3
        parts["loss_preserve"] = loss_triplet.new_zeros(())
        if self.config.preserve > 0:
            corpus = batch[3]
            parts["loss_preserve"] = sum(self.preservation_loss(self.encode(corpus), frozen=corpus))
        parts["loss"] = (loss_triplet + self.config.lambda_contrast * parts["loss_contrast"]
                         + self.config.preserve * parts["loss_preserve"])
        return parts


def start_map(init: str, doc_vectors: np.ndarray, dim: int) -> torch.Tensor | None:
    """The ``[k, d]`` linear map the anchored path starts at: PCA's axes, the first k coordinates, or None."""
    if init == "random":
        return None
    if init == "truncate":
        return torch.eye(doc_vectors.shape[1], dtype=torch.float32)[:dim]
    return torch.from_numpy(principal_axes(doc_vectors, dim, DiveAnchored.name)[0])
