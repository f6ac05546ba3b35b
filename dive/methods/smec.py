"""SMEC (Zhang et al., EMNLP 2025), as SPEC "SMEC" and DIVE App. F.4 restate it.

Architecture: a residual MLP ``f(x) = x + g(x)`` (``g = Linear(d,h) ReLU Linear(h,d)``, torch's
default init, since App. F.4 states none) plus Adaptive Dimension Selection (ADS): one
learnable importance logit ``l_j`` per input dimension (initialised at 0). The width-w output
keeps the dims ``I_w`` of the w largest logits, sorted by index::

    y_w(x) = norm( (f(x) * gate)[I_w] ),   gate = sigmoid(l) + stopgrad(1 - sigmoid(l))

The straight-through gate is 1 in value (so inference, ``norm(f(x)[I_k])``, matches training)
but passes ``d/dl`` through ``sigmoid(l)``; it is applied only in training mode. Ties between
logits are broken towards the lower index, so the untrained selection is the first w dims
(SPEC/App. F.4 leave ties to ``torch.topk``, which does not define their order).

Training (SMRL) runs stages of decreasing width ``w``; each stage minimises::

    L = mean_i softplus(s_w(q_i, n_i) - s_w(q_i, p_i)) + alpha * L_xbm,   alpha = 0.1
    L_xbm = mean_{i, b in N10(q_i)} |s_w(q_i, b) - s(q_i, b)|              (S-XBM)

with ``s_w(a, b) = <y_w(a), y_w(b)>``, ``s`` the frozen cosine and ``N10(q)`` the 10 entries of
a FIFO memory of the last 5000 frozen vectors (every q, p, n of past batches) most similar
to ``q`` under ``s`` (entries with ``s > 1 - 1e-6``, i.e. copies of ``q``, are skipped).

Choices SPEC leaves open (documented here):

- Stage widths: ``[d, m, k]`` with ``m`` the largest ``k * 2^i`` below d, capped at 4k (fewer
  stages when there is no such m). This reproduces both of SPEC's examples, 384 -> 256 -> 128
  and 4096 -> 512 -> 128 (SPEC calls them "halving"; a strict halving chain would give six
  stages for 4096).
- Epochs: every stage but the last gets ``max(1, E // 5)`` epochs, the last the rest (E = 50
  gives App. F.4's 10, 10, 30); with fewer epochs than stages the first stages are dropped.
- ``s_k`` in SPEC's S-XBM loss is read as the similarity at the stage's width w (App. F.4's
  ``xbm.unsup_loss(a, a_c)`` with ``a_c`` the current stage's output); in the last, longest
  stage w = k. The anchors are the batch's queries (App. F.4's ``a``).
- The stages are :class:`dive.train.Stage` s (:meth:`Smec.stages`), run by
  :func:`dive.train.train_stages`: a fresh AdamW per stage (moments reset when the trained
  width changes), seeded with ``train.seed + stage index``, every parameter training in every
  stage; early stopping, when on, applies within each stage; stage i checkpoints under
  ``stage-<i>``. The memory (:class:`dive.losses.CrossBatchMemoryLoss`) persists across stages
  (it holds frozen inputs, which do not go stale).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dive.data.sets import TrainSet
from dive.errors import DiveError
from dive.losses import CrossBatchMemoryLoss, NeighbourSimilarityLoss, SoftplusRankingLoss
from dive.methods.base import Citation, TorchAdapter
from dive.methods.residual import ResidualMLP, nested_dims
from dive.train import Batch, Checkpointing, Stage, TrainConfig


@dataclass(frozen=True)
class SmecConfig:
    """SMEC's hyperparameters.

    Defaults: hidden 2048 from DIVE App. F.4; memory 5000, 10 neighbours and alpha 0.1 from
    SPEC "SMEC" / App. F.4; ``train`` is the DIVE paper's common budget (Section 4.1: AdamW,
    lr 2e-4, batch 128, 50 epochs in all, split across the SMRL stages as App. F.4's 10/10/30).

    Attributes:
        dim: target dimension k (the last stage's width).
        hidden: width h of the residual MLP's hidden layer.
        alpha: weight of the S-XBM similarity-preservation loss.
        memory_size: S-XBM FIFO queue length (frozen vectors).
        neighbours: memory entries per anchor in the S-XBM loss.
        train: optimisation settings; ``train.epochs`` is the total over all stages.
    """

    dim: int = 128
    hidden: int = 2048
    alpha: float = 0.1
    memory_size: int = 5000
    neighbours: int = 10
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if min(self.dim, self.hidden, self.memory_size, self.neighbours) < 1 or self.alpha < 0:
            raise DiveError("dim, hidden, memory_size and neighbours must be positive and alpha >= 0")


def stage_widths(dim: int, input_dim: int) -> list[int]:
    """SMRL widths ``[d, m, k]``, m = largest ``k * 2^i`` below d capped at 4k: 384/128 -> [384, 256, 128]."""
    if dim >= input_dim:
        return [input_dim]
    middle = nested_dims(dim, input_dim)[1:-1]
    return [input_dim, min(4 * dim, middle[-1]), dim] if middle else [input_dim, dim]


def stage_schedule(dim: int, input_dim: int, epochs: int) -> list[tuple[int, int]]:
    """``(width, epochs)`` per stage: ``max(1, E // 5)`` for each early stage, the rest for the last."""
    widths = stage_widths(dim, input_dim)
    early = max(1, epochs // 5)
    while len(widths) > 1 and epochs - early * (len(widths) - 1) < 1:
        widths = widths[1:]
    return [(width, early) for width in widths[:-1]] + [(widths[-1], epochs - early * (len(widths) - 1))]


class SmecAdapter(nn.Module):
    """Residual MLP + ADS importance logits; ``forward(x, w) = y_w(x)`` (unit rows of width w)."""

    def __init__(self, input_dim: int, hidden: int):
        super().__init__()
        self.residual = ResidualMLP(input_dim, hidden, init="torch")
        self.ads_logits = nn.Parameter(torch.zeros(input_dim))

    def kept(self, width: int) -> torch.Tensor:
        """``I_w``: indices of the w largest logits (ties -> lower index), sorted ascending."""
        order = torch.argsort(self.ads_logits.detach(), descending=True, stable=True)
        return order[:width].sort().values

    def forward(self, vectors: torch.Tensor, width: int) -> torch.Tensor:
        index = self.kept(width)
        kept = self.residual(vectors)[:, index]
        if self.training:
            gate = torch.sigmoid(self.ads_logits[index])
            kept = kept * (gate + (1 - gate).detach())
        return F.normalize(kept, dim=1)


class SmecInference(nn.Module):
    """Inference ``norm(f(x)[I_k])`` with the kept indices fixed (exportable: no sort in the graph)."""

    def __init__(self, residual: ResidualMLP, kept: torch.Tensor):
        super().__init__()
        self.residual = residual
        self.register_buffer("kept", kept)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.residual(vectors).index_select(1, self.kept), dim=1)


class Smec(TorchAdapter):
    name = "smec"
    summary = ("residual MLP + adaptive dimension selection, sequential Matryoshka stages with a softplus "
               "ranking loss + cross-batch-memory similarity preservation")
    citation = Citation("SMEC: Rethinking Matryoshka Representation Learning for Retrieval Embedding Compression",
                        "Zhang et al.", "EMNLP 2025", "re-implemented as the DIVE paper's App. F.4 describes it")
    Config = SmecConfig

    def __init__(self, config: SmecConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.ranking_loss = SoftplusRankingLoss()
        self.xbm_loss = CrossBatchMemoryLoss(NeighbourSimilarityLoss(), self.config.memory_size, self.config.neighbours)

    def build(self, input_dim: int) -> SmecAdapter:
        """A fresh adapter and, with it, an empty S-XBM memory."""
        self.xbm_loss.reset()
        return SmecAdapter(input_dim, self.config.hidden)

    def encode(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.module(vectors, self.output_dim)

    def inference_module(self) -> nn.Module:
        self.check_fitted("nothing to export")
        return SmecInference(self.module.residual, self.module.kept(self.output_dim)).eval()

    def stages(self, train_set: TrainSet) -> list[Stage]:
        """One stage per SMRL width, all parameters training; history records carry ``stage_width``."""
        schedule = stage_schedule(self.output_dim, train_set.dim, self.train_config.epochs)
        return [Stage(epochs=epochs, step=partial(self.step, width=width), name=f"stage-{index}", width=width,
                      seed_offset=index) for index, (width, epochs) in enumerate(schedule)]

    def checkpointing(self, train_set: TrainSet, part: str = "") -> Checkpointing | None:
        """As the base class, with the S-XBM memory saved and restored beside the weights."""
        checkpoint = super().checkpointing(train_set, part)
        if checkpoint is not None:
            checkpoint.extra_state, checkpoint.restore_extra = self.xbm_loss.state, self.xbm_loss.restore
        return checkpoint

    def step(self, batch: Batch, width: int | None = None) -> dict[str, torch.Tensor]:
        """The loss parts of a batch at ``width`` (a stage's width; default the target dim)."""
        width = self.output_dim if width is None else width
        queries, positives, negatives = (self.module(part, width) for part in batch)
        loss_rank = self.ranking_loss(queries, positives, negatives)
        loss_xbm = self.xbm_loss(batch[0], queries, encode=lambda vectors: self.module(vectors, width),
                                 enqueue=torch.cat(batch))
        return {"loss": loss_rank + self.config.alpha * loss_xbm, "loss_rank": loss_rank, "loss_xbm": loss_xbm}
