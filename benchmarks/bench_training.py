"""DIVE training on scifact (Table 8 settings, 384 -> 128): seconds per epoch, triplets/s, and
where an epoch's time goes (data, forward, loss, backward, optimizer), from timers around each
part of the same loop ``dive.train`` runs.

    python benchmarks/bench_training.py          # needs ../shared/data/beir/scifact (encoded once, cached)
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from common import matmul_flops_per_second, write_result
from dive.data import MiningConfig, TrainSet, load_beir, make_splits
from dive.encode import embed_dataset
from dive.methods import create_method

EPOCHS = 3
DATA_DIR = Path(os.environ.get("DIVE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "beir"))


def scifact_train_set() -> TrainSet:
    dataset = load_beir(DATA_DIR / "scifact")
    split = make_splits(dataset)[0]
    return TrainSet.from_split(embed_dataset(dataset), split, MiningConfig(), "scifact")


def timed_epochs(method, train_set: TrainSet, epochs: int) -> dict[str, float]:
    """Seconds per part, summed over ``epochs`` epochs of the training loop."""
    module = method.module
    optimizer = torch.optim.AdamW(module.parameters(), lr=method.train_config.lr,
                                  weight_decay=method.train_config.weight_decay)
    seconds: dict[str, float] = defaultdict(float)
    forward_started: list[float] = []
    module.register_forward_pre_hook(lambda *_: forward_started.append(time.perf_counter()))
    module.register_forward_hook(lambda *_: seconds.__setitem__(
        "forward", seconds["forward"] + time.perf_counter() - forward_started.pop()))
    rng = np.random.default_rng(0)
    module.train()
    for _ in range(epochs):
        started = time.perf_counter()
        batches = list(method.epoch_batches(train_set, rng))
        seconds["data"] += time.perf_counter() - started
        for batch in batches:
            started = time.perf_counter()
            forward_before = seconds["forward"]
            parts = method.step(batch)
            seconds["loss"] += time.perf_counter() - started - (seconds["forward"] - forward_before)
            optimizer.zero_grad(set_to_none=True)
            started = time.perf_counter()
            parts["loss"].backward()
            seconds["backward"] += time.perf_counter() - started
            started = time.perf_counter()
            optimizer.step()
            seconds["optimizer"] += time.perf_counter() - started
    return dict(seconds)


def main() -> None:
    roofline = matmul_flops_per_second()
    train_set = scifact_train_set()
    method = create_method("dive", "scifact", dim=128, train={"epochs": EPOCHS, "progress": False})
    started = time.perf_counter()
    method.fit(train_set)  # the real loop, timed as a whole
    seconds_per_epoch = (time.perf_counter() - started) / EPOCHS
    n_triplets = train_set.n_triplets
    flops_per_vector = sum(2 * layer.in_features * layer.out_features for layer in method.module.modules()
                           if isinstance(layer, torch.nn.Linear))
    # forward + backward of the three vectors of a triplet: about 3x the forward FLOPs each.
    training_flops_per_triplet = 3 * 3 * flops_per_vector
    profile_method = create_method("dive", "scifact", dim=128, train={"epochs": EPOCHS, "progress": False})
    torch.manual_seed(0)
    profile_method.module = profile_method.build(train_set.dim)
    parts = timed_epochs(profile_method, train_set, EPOCHS)
    total = sum(parts.values())
    result = {
        "dataset": "scifact", "config": "Table 8 (m 1.0, lambda 0.1, tau 0.2, H 4), hidden 2048, batch 128",
        "triplets_per_epoch": n_triplets, "seconds_per_epoch": seconds_per_epoch,
        "triplets_per_s": n_triplets / seconds_per_epoch,
        "training_roofline_fraction": n_triplets * training_flops_per_triplet / seconds_per_epoch / roofline,
        "matmul_flops_per_s": roofline,
        "profile_seconds_per_epoch": {name: value / EPOCHS for name, value in parts.items()},
        "profile_share": {name: value / total for name, value in parts.items()},
    }
    print(f"DIVE scifact: {seconds_per_epoch:.2f} s/epoch, {result['triplets_per_s']:,.0f} triplets/s, "
          f"{result['training_roofline_fraction']:.0%} of the fp32 matmul roofline")
    print("where an epoch goes: " + ", ".join(f"{name} {share:.0%}" for name, share in result["profile_share"].items()))
    write_result("training", result)


if __name__ == "__main__":
    main()
