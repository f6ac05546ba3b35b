"""SMEC (Zhang et al., EMNLP 2025): its own sequential recipe by default, the DIVE paper's as a switch.

``recipe = "original"`` (default; SPEC "SMEC", checked against the paper's figures and method
description as public sources quote them, since its full text and code are not public):

- **SMRL, sequential stages.** Widths ``w_0 = d > w_1 > ... > w_S = k`` (:func:`stage_widths`:
  d, then ``k * 2^i`` below d, e.g. 384 -> 256 -> 128). Stage i adds one fully connected layer
  ``z_i = W_i z_{i-1} + b_i`` (``z_{-1} = x``; ``W_0`` is d x d) and trains only it (and its
  ADS scores), earlier stages frozen, with ``L(w_i) + L(w_{i+1})``: the loss at the stage's
  width and at the next one (``k // 2`` after the last stage), the paper's "current width and
  its half". Each stage starts where the previous one ended: ``W_0`` is the identity and
  ``W_i`` selects the ``w_i`` dims that stage i-1's ADS kept (with their ADS logits), so a
  stage starts exactly where the previous one ended and the untrained model is truncation, a
  candidate for model selection. Each stage selects its best epoch on the
  validation slice (scored at k dims) and stops after ``train.patience`` epochs without gain.
- **ADS.** Per stage, a learnable importance logit per output dim (initialised at 0). Width
  w keeps the dims ``I_w`` of the w largest logits (ties to the lower index, sorted by
  index); in training they pass a straight-through sigmoid gate, ``sigmoid(l) +
  stopgrad(1 - sigmoid(l))`` (1 in value, so training and inference agree; SPEC accepts it
  in place of the paper's Gumbel-Softmax).
- **Loss** at width w: ``L(w) = mean_i softplus(s_w(q_i,n_i) - s_w(q_i,p_i)) + alpha * L_xbm``
  with S-XBM ``L_xbm = mean_{i, b in N10(q_i)} |s_w(q_i, b) - s(q_i, b)|`` over a FIFO memory
  of the last 5000 frozen vectors (every q, p, n of past batches), ``N10(q)`` the 10 entries
  most similar to q under the frozen cosine ``s``. alpha = 1 by default: at the DIVE
  appendix's 0.1 the similarity error grew from 0.04 to 0.46 on scifact (issue 19), and on
  validation only (``python scripts/choose_defaults.py smec 5 smec.db --all-folds``: scifact's
  slice, cranfield's five folds' slices; 128 dims, seed 0) alpha 0.1 / 0.3 / 1 / 3 / 10 scored
  scifact 0.7135 / 0.7154 / 0.7171 / 0.7003 / 0.6288 and cranfield 0.3693 / 0.3749 / 0.3823 /
  0.3739 / 0.3766: 1 is best on both; ``dive tune --method smec`` searches it per dataset.
- **Optimiser:** Adam (weight decay 0), batch 128, at most ``train.epochs`` per stage. The
  paper's learning rate is not public; 3e-4 was chosen among {1e-4, 3e-4, 1e-3} on the
  validation slices of scifact and cranfield (128 dims, seed 0; mean validation nDCG@10 of the
  kept weights: scifact 0.7024 / 0.7171 / 0.7086, cranfield 0.3811 / 0.3823 / 0.3651), one
  value for every dataset; test queries played no part.
- After training the chain is linear, so inference and export are one ``Linear(d, k)``.

``recipe = "dive-appendix"`` (what the ``paper`` protocol uses, to reproduce the DIVE paper's
tables; DIVE App. F.4): a residual MLP ``f(x) = x + g(x)`` (torch's default init) plus ADS
logits over its d outputs, ``y_w(x) = norm((f(x) * gate)[I_w])``; stages ``[d, m, k]`` with
``max(1, E // 5)`` epochs for each early stage and the rest for the last (10/10/30 for E = 50),
every parameter training in every stage; loss ``softplus + 0.1 * L_xbm`` at the stage's width;
AdamW 2e-4. The memory persists across stages in both recipes (it holds frozen inputs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from dive.data.sets import TrainSet
from dive.errors import DiveError
from dive.losses import CrossBatchMemoryLoss, NeighbourSimilarityLoss, SoftplusRankingLoss
from dive.methods.base import Citation, LinearLayer, TorchAdapter
from dive.methods.residual import ResidualMLP, appendix_settings, check_recipe, nested_dims
from dive.train import Batch, Checkpointing, Stage, TrainConfig


@dataclass(frozen=True)
class SmecConfig:
    """SMEC's hyperparameters.

    Defaults (``original``): memory 5000 and 10 neighbours from SPEC "SMEC"; alpha 1 (see the
    module docstring); hidden 2048 (the ``dive-appendix`` residual MLP, DIVE App. F.4); ``train``:
    Adam (weight decay 0), lr 3e-4 (chosen on validation, see the module docstring), batch 128,
    at most 50 epochs per stage, model selection on validation per stage.

    Attributes:
        dim: target dimension k (the last stage's width).
        hidden: width h of the ``dive-appendix`` residual MLP's hidden layer (unused by ``original``).
        recipe: ``original`` or ``dive-appendix`` (see the module docstring).
        alpha: weight of the S-XBM similarity-preservation loss.
        memory_size: S-XBM FIFO queue length (frozen vectors).
        neighbours: memory entries per anchor in the S-XBM loss.
        train: optimisation settings; ``train.epochs`` is per stage (``original``) or the
            total over all stages (``dive-appendix``).
    """

    dim: int = 128
    hidden: int = 2048
    recipe: str = "original"
    alpha: float = 1.0
    memory_size: int = 5000
    neighbours: int = 10
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=3e-4, weight_decay=0.0))

    def __post_init__(self) -> None:
        if min(self.dim, self.hidden, self.memory_size, self.neighbours) < 1 or self.alpha < 0:
            raise DiveError("dim, hidden, memory_size and neighbours must be positive and alpha >= 0")
        check_recipe(self.recipe)


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
    """``dive-appendix``: residual MLP + ADS importance logits; ``forward(x, w) = y_w(x)`` (unit rows of width w)."""

    def __init__(self, input_dim: int, hidden: int):
        super().__init__()
        self.residual = ResidualMLP(input_dim, hidden, init="torch")
        self.ads_logits = nn.Parameter(torch.zeros(input_dim))

    def kept(self, width: int) -> torch.Tensor:
        """``I_w``: indices of the w largest logits (ties -> lower index), sorted ascending."""
        return top_indices(self.ads_logits, width)

    def forward(self, vectors: torch.Tensor, width: int) -> torch.Tensor:
        index = self.kept(width)
        return F.normalize(gated(self.residual(vectors)[:, index], self.ads_logits[index], self.training), dim=1)


class SmecInference(nn.Module):
    """Inference ``norm(f(x)[I_k])`` with the kept indices fixed (exportable: no sort in the graph)."""

    def __init__(self, residual: ResidualMLP, kept: torch.Tensor):
        super().__init__()
        self.residual = residual
        self.register_buffer("kept", kept)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.residual(vectors).index_select(1, self.kept), dim=1)


def top_indices(logits: torch.Tensor, width: int) -> torch.Tensor:
    """``I_w``: indices of the w largest logits (ties -> lower index), sorted ascending."""
    order = torch.argsort(logits.detach(), descending=True, stable=True)
    return order[:width].sort().values


def gated(kept: torch.Tensor, logits: torch.Tensor, training: bool) -> torch.Tensor:
    """ADS's straight-through gate on the kept values: 1 in value, ``d/dl`` through ``sigmoid(l)``."""
    if not training:
        return kept
    gate = torch.sigmoid(logits)
    return kept * (gate + (1 - gate).detach())


class SmrlStage(nn.Module):
    """One SMRL stage: a fully connected layer to the stage's width and its ADS importance logits."""

    def __init__(self, input_width: int, width: int):
        super().__init__()
        self.linear = nn.Linear(input_width, width)
        self.ads_logits = nn.Parameter(torch.zeros(width))
        self.select(torch.arange(width))

    @torch.no_grad()
    def select(self, kept: torch.Tensor) -> None:
        """Set the layer to pass the input dims ``kept`` through unchanged (its starting point)."""
        self.linear.weight.zero_()
        self.linear.weight[torch.arange(len(kept)), kept] = 1.0
        self.linear.bias.zero_()


class SmrlChain(nn.Module):
    """The sequential stages; ``forward(x, upto, width)`` = ``norm(gated(z_upto)[I_width])``."""

    def __init__(self, input_dim: int, widths: list[int]):
        super().__init__()
        self.stages = nn.ModuleList(SmrlStage(previous, width)
                                    for previous, width in zip([input_dim, *widths[:-1]], widths))

    def forward(self, vectors: torch.Tensor, upto: int, width: int) -> torch.Tensor:
        for stage in self.stages[:upto + 1]:
            vectors = stage.linear(vectors)
        logits = self.stages[upto].ads_logits
        index = top_indices(logits, width)
        return F.normalize(gated(vectors[:, index], logits[index], self.training), dim=1)

    def composed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole chain as one affine map ``x @ weight.T + bias`` (the stages are linear)."""
        weight, bias = self.stages[0].linear.weight, self.stages[0].linear.bias
        for stage in self.stages[1:]:
            weight, bias = stage.linear.weight @ weight, stage.linear.weight @ bias + stage.linear.bias
        return weight.detach(), bias.detach()


class Smec(TorchAdapter):
    name = "smec"
    summary = ("sequential Matryoshka stages (one new layer per halved width, earlier ones frozen), adaptive "
               "dimension selection, softplus ranking + cross-batch-memory similarity preservation")
    citation = Citation("SMEC: Rethinking Matryoshka Representation Learning for Retrieval Embedding Compression",
                        "Zhang et al.", "EMNLP 2025", "the paper's recipe; the DIVE paper's App. F.4 version for its protocol")
    Config = SmecConfig
    search_space = {"alpha": [0.1, 0.3, 1.0, 3.0, 10.0]}
    """The S-XBM weight (SPEC "SMEC": pick it on validation); the paper's own values are not public."""

    def __init__(self, config: SmecConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.ranking_loss = SoftplusRankingLoss()
        self.xbm_loss = CrossBatchMemoryLoss(NeighbourSimilarityLoss(), self.config.memory_size, self.config.neighbours)
        self.active_stage: int | None = None
        """The SMRL stage being trained (``original``); None once trained: the whole chain."""

    @property
    def appendix(self) -> bool:
        return self.config.recipe == "dive-appendix"

    @classmethod
    def protocol_settings(cls, protocol: str) -> dict[str, Any]:
        """``paper``: the DIVE paper's App. F.4 version with its common budget (AdamW, lr 2e-4), fixed epochs."""
        return appendix_settings(protocol, alpha=0.1)

    def build(self, input_dim: int) -> SmecAdapter | SmrlChain:
        """A fresh adapter and, with it, an empty S-XBM memory."""
        self.xbm_loss.reset()
        self.active_stage = None
        if self.appendix:
            return SmecAdapter(input_dim, self.config.hidden)
        return SmrlChain(input_dim, stage_widths(self.output_dim, input_dim))

    def _fit(self, train_set: TrainSet) -> None:
        super()._fit(train_set)
        self.active_stage = None

    def encode(self, vectors: torch.Tensor) -> torch.Tensor:
        if self.appendix:
            return self.module(vectors, self.output_dim)
        upto = len(self.module.stages) - 1 if self.active_stage is None else self.active_stage
        return self.module(vectors, upto, self.output_dim)

    def linear_layers(self) -> list[LinearLayer] | None:
        """``original``: the trained chain as one linear layer; ``dive-appendix``: None (residual MLP)."""
        if self.appendix or self.active_stage is not None:
            return None
        return [(*self.module.composed(), False)]

    def inference_module(self) -> nn.Module:
        self.check_fitted("nothing to export")
        if self.appendix:
            return SmecInference(self.module.residual, self.module.kept(self.output_dim)).eval()
        return super().inference_module()

    def stages(self, train_set: TrainSet) -> list[Stage]:
        """One stage per SMRL width; history records carry ``stage_width``."""
        if self.appendix:
            schedule = stage_schedule(self.output_dim, train_set.dim, self.train_config.epochs)
            return [Stage(epochs=epochs, step=partial(self.step, width=width), name=f"stage-{index}", width=width,
                          seed_offset=index) for index, (width, epochs) in enumerate(schedule)]
        widths = stage_widths(self.output_dim, train_set.dim)
        return [Stage(epochs=self.train_config.epochs, step=partial(self.smrl_step, stage=index),
                      trains=partial(_in_stage, index), name=f"stage-{index}", width=width, seed_offset=index,
                      start=partial(self._start_stage, index, width)) for index, width in enumerate(widths)]

    def _start_stage(self, index: int, width: int) -> None:
        """Train stage ``index`` next, starting where the previous one ended: its layer passes on the dims
        the previous stage's ADS kept, with their importance logits (so its top-k dims are the same)."""
        self.active_stage = index
        if index > 0:
            previous = self.module.stages[index - 1].ads_logits
            kept = top_indices(previous, width)
            self.module.stages[index].select(kept)
            with torch.no_grad():
                self.module.stages[index].ads_logits.copy_(previous[kept])

    def checkpointing(self, train_set: TrainSet, part: str = "") -> Checkpointing | None:
        """As the base class, with the S-XBM memory saved and restored beside the weights."""
        checkpoint = super().checkpointing(train_set, part)
        if checkpoint is not None:
            checkpoint.extra_state, checkpoint.restore_extra = self.xbm_loss.state, self.xbm_loss.restore
        return checkpoint

    def smrl_step(self, batch: Batch, stage: int) -> dict[str, torch.Tensor]:
        """``original``: the loss parts of a batch in SMRL stage ``stage``, ``L(w) + L(w_next)``."""
        widths = [len(layer.ads_logits) for layer in self.module.stages]
        next_width = widths[stage + 1] if stage + 1 < len(widths) else max(1, widths[stage] // 2)
        parts = [self._width_loss(batch, partial(self.module, upto=stage, width=width))
                 for width in (widths[stage], next_width)]
        self.xbm_loss.memory.add(torch.cat(batch))
        return {name: parts[0][name] + parts[1][name] for name in parts[0]}

    def step(self, batch: Batch, width: int | None = None) -> dict[str, torch.Tensor]:
        """``dive-appendix``: the loss parts of a batch at ``width`` (a stage's width; default the target dim)."""
        parts = self._width_loss(batch, partial(self.module, width=self.output_dim if width is None else width))
        self.xbm_loss.memory.add(torch.cat(batch))
        return parts

    def _width_loss(self, batch: Batch, encode: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
        """``L(w)``: ranking + alpha * S-XBM of the vectors ``encode`` gives at one width, against the memory
        before this batch (the caller enqueues the batch once)."""
        queries, positives, negatives = (encode(part) for part in batch)
        loss_rank = self.ranking_loss(queries, positives, negatives)
        loss_xbm = self.xbm_loss.against_memory(batch[0], queries, encode)
        return {"loss": loss_rank + self.config.alpha * loss_xbm, "loss_rank": loss_rank, "loss_xbm": loss_xbm}

def _in_stage(index: int, name: str) -> bool:
    return name.startswith(f"stages.{index}.")
