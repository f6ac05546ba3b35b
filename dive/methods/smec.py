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
- Each stage is one call of :func:`dive.train.train_adapter`: a fresh AdamW per stage (moments
  reset when the trained width changes), seeded with ``train.seed + stage index``; early
  stopping, when on, applies within each stage. The memory persists across stages (it holds
  frozen inputs, which do not go stale).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dive.data.sets import TrainSet
from dive.errors import DiveError
from dive.evaluate import evaluate_method
from dive.losses import softplus_ranking_loss
from dive.methods.base import TorchAdapter
from dive.methods.residual import ResidualMLP, nested_dims
from dive.train import Batch, TrainConfig, train_adapter

DUPLICATE_SIMILARITY = 1 - 1e-6
"""Memory entries at least this similar to an anchor are copies of it and are not neighbours."""


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


class Memory:
    """S-XBM: a FIFO ring buffer of the last ``size`` frozen vectors (no gradient)."""

    def __init__(self, size: int):
        self.size = size
        self.vectors: torch.Tensor | None = None
        self.count = self.pointer = 0

    def contents(self) -> torch.Tensor | None:
        return None if self.vectors is None or self.count == 0 else self.vectors[:self.count]

    def state(self) -> dict[str, torch.Tensor]:
        """For training checkpoints: the buffer and its (count, pointer)."""
        if self.vectors is None:
            return {}
        return {"memory": self.vectors, "memory_position": torch.tensor([self.count, self.pointer])}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        if "memory" in state:
            self.vectors = state["memory"]
            self.count, self.pointer = (int(value) for value in state["memory_position"])

    @torch.no_grad()
    def add(self, vectors: torch.Tensor) -> None:
        vectors = vectors[-self.size:].detach()
        if self.vectors is None:
            self.vectors = vectors.new_zeros(self.size, vectors.shape[1])
        slots = (self.pointer + torch.arange(len(vectors), device=vectors.device)) % self.size
        self.vectors[slots] = vectors
        self.pointer = (self.pointer + len(vectors)) % self.size
        self.count = min(self.count + len(vectors), self.size)


class Smec(TorchAdapter):
    name = "smec"
    summary = ("residual MLP + adaptive dimension selection, sequential Matryoshka stages with a softplus "
               "ranking loss + cross-batch-memory similarity preservation")
    reference = "Zhang et al., SMEC, EMNLP 2025 (re-implemented as DIVE paper App. F.4 + SPEC)"
    Config = SmecConfig

    def __init__(self, config: SmecConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.width = self.output_dim
        self.memory = Memory(self.config.memory_size)

    def build(self, input_dim: int) -> SmecAdapter:
        return SmecAdapter(input_dim, self.config.hidden)

    def encode(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.module(vectors, self.output_dim)

    def inference_module(self) -> nn.Module:
        self.check_fitted("nothing to export")
        return SmecInference(self.module.residual, self.module.kept(self.output_dim)).eval()

    def _fit(self, train_set: TrainSet) -> None:
        """One :func:`train_adapter` call per SMRL stage; history records carry ``stage_width``."""
        seed = self.train_config.seed
        torch.manual_seed(seed)
        self.module = self.build(train_set.dim)
        self.memory = Memory(self.config.memory_size)
        validate = None
        if train_set.validation is not None and self.train_config.early_stopping_patience > 0:
            validate = lambda: evaluate_method(self, train_set.validation)["ndcg@10"]  # noqa: E731
        self.history = []
        schedule = stage_schedule(self.output_dim, train_set.dim, self.train_config.epochs)
        for stage, (width, epochs) in enumerate(schedule):
            self.width = width
            config = replace(self.train_config, epochs=epochs, seed=seed + stage)
            checkpoint = self.checkpointing(train_set, part=f"stage-{stage}")
            if checkpoint is not None:
                checkpoint.extra_state, checkpoint.restore_extra = self.memory.state, self.memory.restore
            records = train_adapter(self.module, self.step, lambda rng: self.epoch_batches(train_set, rng),
                                    config, validate, desc=f"train {self.name} {width}d", checkpoint=checkpoint)
            done = len(self.history)
            self.history += [{**record, "epoch": done + record["epoch"], "stage_width": width} for record in records]
        self.width = self.output_dim

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        queries, positives, negatives = (self.module(part, self.width) for part in batch)
        loss_rank = softplus_ranking_loss(queries, positives, negatives)
        loss_xbm = self._xbm_loss(batch[0], queries)
        self.memory.add(torch.cat(batch))
        return {"loss": loss_rank + self.config.alpha * loss_xbm, "loss_rank": loss_rank, "loss_xbm": loss_xbm}

    def _xbm_loss(self, anchors: torch.Tensor, reduced: torch.Tensor) -> torch.Tensor:
        """``mean |s_w(a, b) - s(a, b)|`` over each anchor's top neighbours ``b`` in the memory."""
        memory = self.memory.contents()
        if memory is None:
            return reduced.new_zeros(())
        similarity = anchors @ memory.T
        similarity = similarity.masked_fill(similarity > DUPLICATE_SIMILARITY, float("-inf"))
        top_similarity, top = similarity.topk(min(self.config.neighbours, len(memory)), dim=1)
        valid = torch.isfinite(top_similarity)
        batch, n_top = top.shape
        neighbours = self.module(memory[top.reshape(-1)], self.width).view(batch, n_top, -1)
        reduced_similarity = torch.einsum("bw,bnw->bn", reduced, neighbours)
        errors = (reduced_similarity - top_similarity.masked_fill(~valid, 0)).abs() * valid
        return errors.sum() / valid.sum().clamp(min=1)


