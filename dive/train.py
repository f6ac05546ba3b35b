"""One generic training loop for every torch adapter.

A method supplies a module, a ``step(batch) -> {"loss": ..., other parts}`` function and an
iterator of batches per epoch; this loop does the rest: AdamW, seeding, device placement, a
progress bar, per-epoch records of every loss part (and, when a step reports ``n_active``,
the active triplet ratio of DIVE's Section 5.2), and optional early stopping.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from dive.errors import DiveError

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, ...]
StepFn = Callable[[Batch], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every torch adapter.

    Defaults are the DIVE paper's common budget for all adapters (Section 4.1: "50 epochs with
    AdamW (lr=2e-4, batch size=128)"); weight decay is torch's AdamW default (0.01), which the
    paper does not change.

    Attributes:
        early_stopping_patience: stop after this many epochs without a better validation
            nDCG@10 and keep the best weights; 0 (default) trains all epochs, as the paper.
    """

    epochs: int = 50
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.01
    seed: int = 0
    device: str = "cpu"
    early_stopping_patience: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise DiveError("epochs must be >= 1 and batch_size >= 2")
        if self.lr <= 0:
            raise DiveError("lr must be positive")


def resolve_device(device: str) -> torch.device:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DiveError("device 'cuda' asked for, but torch sees no CUDA GPU")
    return torch.device(device)


def batch_slices(n_items: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled index batches; a trailing batch of one is dropped (BatchNorm cannot train on it)."""
    order = rng.permutation(n_items)
    for start in range(0, n_items, batch_size):
        chunk = order[start:start + batch_size]
        if len(chunk) > 1:
            yield chunk


def train_adapter(module: torch.nn.Module, step: StepFn,
                  epoch_batches: Callable[[np.random.Generator], Iterable[Batch]],
                  config: TrainConfig, validate: Callable[[], float] | None = None,
                  desc: str = "train") -> list[dict[str, float]]:
    """Train ``module`` in place; return one record per epoch.

    Each record holds ``epoch``, ``seconds``, the batch-size-weighted mean of every loss part
    the step returned, ``active_ratio`` when the step counts active triplets, and
    ``val_ndcg@10`` when ``validate`` is given.
    """
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    module.to(device)
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict[str, float]] = []
    best_score, best_state, epochs_without_gain = -np.inf, None, 0
    bar = tqdm(range(1, config.epochs + 1), desc=desc, disable=not config.progress, unit="epoch")
    for epoch in bar:
        started = time.perf_counter()
        module.train()
        record = _run_epoch(module, step, epoch_batches(rng), optimizer, device)
        record = {"epoch": epoch, **record}
        if validate is not None:
            module.eval()
            record["val_ndcg@10"] = float(validate())
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k in ("loss", "active_ratio", "val_ndcg@10")})
        if validate is None or config.early_stopping_patience <= 0:
            continue
        if record["val_ndcg@10"] > best_score:
            best_score, best_state, epochs_without_gain = record["val_ndcg@10"], copy.deepcopy(module.state_dict()), 0
        else:
            epochs_without_gain += 1
            if epochs_without_gain >= config.early_stopping_patience:
                log.info("early stopping at epoch %d (best val nDCG@10 %.4f)", epoch, best_score)
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return history


def _run_epoch(module: torch.nn.Module, step: StepFn, batches: Iterable[Batch],
               optimizer: torch.optim.Optimizer, device: torch.device) -> dict[str, float]:
    sums: dict[str, float] = defaultdict(float)
    n_samples = 0
    for batch in batches:
        batch = tuple(tensor.to(device, non_blocking=True) for tensor in batch)
        parts = step(batch)
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimizer.step()
        size = batch[0].shape[0]
        n_samples += size
        for name, value in parts.items():
            # n_active is a count; every other part is a batch mean, weighted by batch size here.
            sums[name] += float(value.detach()) * (1 if name == "n_active" else size)
    if n_samples == 0:
        raise DiveError("an epoch had no training batch: the training set is empty or smaller than 2")
    record = {name: total / n_samples for name, total in sums.items() if name != "n_active"}
    if "n_active" in sums:
        record["active_ratio"] = sums["n_active"] / n_samples
    return record
