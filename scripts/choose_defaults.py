"""Choose a method's one set of defaults on validation slices only (how dive-anchored's and SMEC's were chosen).

Usage: python scripts/choose_defaults.py METHOD TRIALS STUDY.db [--all-folds] [--first JSON]

Objective: the mean over scifact and cranfield of validation nDCG@10 on the heldout split, 128
dims, seed 0, over the method's ``search_space``. Cranfield has no train split, so it is scored on
its first fold, or with ``--all-folds`` on the mean of its five folds' validation slices (250
queries instead of 50: less noise, five times the cost). When the whole space fits in TRIALS,
every point is tried (Optuna's grid sampler); otherwise Optuna TPE (seed 0) with ``--first``
(default: the method's current defaults) tried first. The study lives in STUDY.db, so a rerun
resumes it. Test queries are never scored. Each trial is printed as one JSON line.

Recorded runs:

- dive-anchored: ``python scripts/choose_defaults.py dive-anchored 24 anchored.db --first
  '{"margin": 0.7, "lambda_contrast": 0.1, "preserve": 1.0, "norm": "layer", "heads": 4}'``
  (DIVE's own loss settings with the no-batch-statistics norm tried first).
- SMEC's alpha: ``python scripts/choose_defaults.py smec 5 smec.db --all-folds``.
"""

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

import optuna

from dive.data import TrainSet, make_splits
from dive.evaluate import evaluate_method
from dive.experiments.run import ExperimentSpec, build_method, load_data
from dive.methods import method_class

DATASETS = ("scifact", "cranfield")


def training_sets(method: str, all_folds: bool) -> dict[str, list[tuple[ExperimentSpec, str, TrainSet]]]:
    """Per dataset, the (spec, dataset name, train set) of each split that is scored."""
    sets = {}
    for name in DATASETS:
        spec = ExperimentSpec(dataset=name, method=method, dim=128, overrides={"train": {"progress": False}})
        dataset, embeddings = load_data(spec)
        splits = make_splits(dataset, "heldout", spec.split)
        sets[name] = [(spec, dataset.name, TrainSet.from_split(embeddings, split, spec.mining, dataset.name))
                      for split in (splits if all_folds else splits[:1])]
    return sets


def sampler(space: dict[str, list], trials: int) -> optuna.samplers.BaseSampler:
    if math.prod(len(choices) for choices in space.values()) <= trials:
        return optuna.samplers.GridSampler(space, seed=0)
    return optuna.samplers.TPESampler(seed=0)


def main(method: str, trials: int, storage: Path, all_folds: bool, first: dict | None) -> None:
    space = method_class(method).search_space
    sets = training_sets(method, all_folds)

    def validation_score(point: dict, spec: ExperimentSpec, dataset_name: str, train_set: TrainSet) -> float:
        fitted = build_method(replace(spec, overrides={**spec.overrides, **point}), dataset_name).fit(train_set)
        return evaluate_method(fitted, train_set.validation)["ndcg@10"]

    def objective(trial: optuna.Trial) -> float:
        point = {name: trial.suggest_categorical(name, choices) for name, choices in space.items()}
        for name, splits in sets.items():
            scores = [validation_score(point, *split) for split in splits]
            trial.set_user_attr(name, sum(scores) / len(scores))
        print(json.dumps({"trial": trial.number, **point, **trial.user_attrs}), flush=True)
        return sum(trial.user_attrs.values()) / len(sets)

    study = optuna.create_study(direction="maximize", sampler=sampler(space, trials),
                                storage=f"sqlite:///{storage.resolve()}", study_name=method, load_if_exists=True)
    if not study.trials and not isinstance(study.sampler, optuna.samplers.GridSampler):
        defaults = build_method(ExperimentSpec(dataset="scifact", method=method, dim=128), "scifact").config
        study.enqueue_trial(first or {name: getattr(defaults, name) for name in space})
    study.optimize(objective, n_trials=max(trials - len(study.trials), 0))
    print("best", json.dumps({**study.best_trial.params, "mean_val": study.best_value, **study.best_trial.user_attrs}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method")
    parser.add_argument("trials", type=int)
    parser.add_argument("storage", type=Path)
    parser.add_argument("--all-folds", action="store_true", help="score cranfield on all five folds")
    parser.add_argument("--first", type=json.loads, default=None, help="settings tried first (TPE only)")
    args = parser.parse_args()
    main(args.method, args.trials, args.storage, args.all_folds, args.first)
