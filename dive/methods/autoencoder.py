"""Autoencoder (SPEC "Unsupervised and trivial baselines"; DIVE paper Appendix E, Table 9).

Encoder ``e = Linear(d,h) ReLU Linear(h,k)``, decoder ``Linear(k,h) ReLU Linear(h,d)``,
trained on corpus vectors only to minimise ``L = mean_{i,j} (dec(e(x))_ij - x_ij)^2`` (MSE).
The compressed vector is ``norm(e(x))``; the decoder, which reconstructs from the raw code
``e(x)``, is used only in training (and saved with the rest). Init: Xavier-uniform weights,
zero biases, as DIVE's adapter (neither SPEC nor the paper gives one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dive.data.sets import TrainSet
from dive.errors import DiveError
from dive.methods.base import Citation, LinearLayer, TorchAdapter
from dive.train import Batch, TrainConfig


@dataclass(frozen=True)
class AutoencoderConfig:
    """The autoencoder's settings.

    Defaults: ``dim`` 128 and ``hidden`` 2048 as DiveConfig (SPEC gives ``d -> h -> k`` without
    a value for h; DIVE App. F.1 uses 2048); ``train`` is the DIVE paper's common adapter budget
    (Section 4.1: AdamW, lr 2e-4, batch 128, 50 epochs), over corpus vectors.

    Attributes:
        dim: code size k.
        hidden: width h of the encoder's and decoder's hidden layers.
        train: optimisation settings.
    """

    dim: int = 128
    hidden: int = 2048
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.dim < 1 or self.hidden < 1:
            raise DiveError("dim and hidden must be positive")


class AutoencoderModule(nn.Module):
    """``forward(x) = (e(x), dec(e(x)))``: the raw code and the reconstruction."""

    def __init__(self, input_dim: int, hidden: int, dim: int):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.decoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, input_dim))
        for layer in (*self.encoder, *self.decoder):
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encoder(vectors)
        return code, self.decoder(code)


class Autoencoder(TorchAdapter):
    name = "autoencoder"
    summary = "MLP autoencoder trained to reconstruct corpus vectors; keeps the normalised k-dim code"
    citation = Citation("Reducing the Dimensionality of Data with Neural Networks", "Hinton & Salakhutdinov",
                        "Science 2006", "a baseline of the DIVE paper, App. E")
    Config = AutoencoderConfig
    supervised = False

    def build(self, input_dim: int) -> AutoencoderModule:
        return AutoencoderModule(input_dim, self.config.hidden, self.config.dim)

    def encode(self, vectors: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.module.encoder(vectors), dim=1)

    def linear_layers(self) -> list[LinearLayer]:
        first, _, second = self.module.encoder
        return [(first.weight.detach(), first.bias.detach(), True), (second.weight.detach(), second.bias.detach(), False)]

    def epoch_batches(self, train_set: TrainSet, rng: np.random.Generator) -> Iterator[Batch]:
        """Shuffled batches of corpus vectors, ``(docs,)``: the autoencoder never sees queries."""
        return self.corpus_batches(train_set, rng)

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        (docs,) = batch
        _, reconstruction = self.module(docs)
        loss = F.mse_loss(reconstruction, docs)
        return {"loss": loss, "loss_rec": loss}
