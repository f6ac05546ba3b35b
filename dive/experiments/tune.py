"""``dive tune``: choose DIVE's loss hyperparameters on the validation slice, never on test queries.

Random search (seeded, without replacement) over SPEC's search space, always starting from the
Table 8 defaults. Each trial fits DIVE on the heldout split's training queries and scores
nDCG@10 on its validation slice (carved from the training queries). The winner is written as a
JSON settings file that ``dive train --config`` and ``dive reproduce --tune`` reuse.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from dive.data import Embeddings, TrainSet, make_splits
from dive.data.beir import BeirDataset
from dive.errors import DiveError
from dive.evaluate import evaluate_method
from dive.experiments.run import RUNS_DIR, ExperimentSpec, build_method
from dive.utils import write_json

log = logging.getLogger(__name__)

SEARCH_SPACE: dict[str, list[Any]] = {
    "margin": [0.5, 0.7, 1.0, 1.3, 1.5],
    "lambda_contrast": [0.05, 0.1, 0.2, 0.3, 0.5],
    "temperature": [0.05, 0.1, 0.2],
    "heads": [2, 4, 8],
}
"""SPEC "DIVE": m in {0.5..1.5}, lambda in {0.05..0.5}, tau in {0.05, 0.1, 0.2}, H in {2, 4, 8}."""

DEFAULT_TRIALS = 10
"""Settings tried by default (the Table 8 one and nine random points)."""


def default_tuned_path(spec: ExperimentSpec) -> str:
    """Where ``dive tune`` writes the best settings without ``--out``: ``runs/tuned-<dataset>-<dim>.json``."""
    return f"{RUNS_DIR}/tuned-{spec.dataset_label}-{spec.dim}.json"


def candidates(spec: ExperimentSpec, dataset_name: str, trials: int, seed: int) -> list[dict[str, Any]]:
    """The dataset's Table 8 setting first, then ``trials - 1`` distinct random points of the space."""
    default = build_method(spec, dataset_name).config
    first = {name: getattr(default, name) for name in SEARCH_SPACE}
    grid = [dict(zip(SEARCH_SPACE, values)) for values in itertools.product(*SEARCH_SPACE.values())]
    grid = [point for point in grid if point != first]
    order = np.random.default_rng(seed).permutation(len(grid))[: max(trials - 1, 0)]
    return [first] + [grid[i] for i in order]


def tune_dive(spec: ExperimentSpec, data: tuple[BeirDataset, Embeddings], trials: int = DEFAULT_TRIALS,
              out: str | Path | None = None) -> dict[str, Any]:
    """Search, report every trial, write the best settings to ``out``; returns the best settings."""
    dataset, embeddings = data
    split = make_splits(dataset, "heldout", spec.split)[0]
    if not split.validation:
        raise DiveError("tuning needs a validation slice: set validation_fraction > 0")
    train_set = TrainSet.from_split(embeddings, split, spec.mining, dataset.name)
    trial_log = []
    for number, point in enumerate(candidates(spec, dataset.name, trials, spec.seed), start=1):
        method = build_method(replace(spec, method="dive", overrides={**spec.overrides, **point}), dataset.name)
        score = evaluate_method(method.fit(train_set), train_set.validation)["ndcg@10"]
        log.info("trial %d/%d %s: validation nDCG@10 %.4f", number, trials, point, score)
        trial_log.append({**point, "val_ndcg@10": score})
    best = max(trial_log, key=lambda trial: trial["val_ndcg@10"])
    settings = {name: best[name] for name in SEARCH_SPACE}
    if out is not None:
        out = Path(out)
        write_json(out, settings)
        write_json(out.with_suffix(".trials.json"), {
            "dataset": dataset.name, "dim": spec.dim, "seed": spec.seed, "split": split.name,
            "n_validation_queries": len(split.validation), "objective": "validation nDCG@10",
            "trials": trial_log})
    return settings
