"""Choose dive-anchored's one set of defaults on validation slices only (how its defaults were chosen).

Usage: python scripts/choose_anchored_defaults.py TRIALS STUDY.db

Objective: the mean over scifact and cranfield (fold 1) of validation nDCG@10, heldout split,
128 dims, seed 0, over ``DiveAnchored.search_space``. Optuna TPE (seed 0), DIVE's own settings
(margin 0.7, LayerNorm) tried first; the study lives in STUDY.db, so a rerun resumes it. Test
queries are never scored. Each trial is printed as one JSON line.
"""

import json
import sys
from dataclasses import replace
from pathlib import Path

import optuna

from dive.data import TrainSet, make_splits
from dive.evaluate import evaluate_method
from dive.experiments.run import ExperimentSpec, build_method, load_data
from dive.methods.dive_anchored import DiveAnchored

FIRST = {"margin": 0.7, "lambda_contrast": 0.1, "preserve": 1.0, "norm": "layer", "heads": 4}
"""DIVE's own loss settings (its Table 8 "other datasets" row) with the no-batch-statistics norm."""


def training_sets() -> dict[str, tuple[ExperimentSpec, str, TrainSet]]:
    sets = {}
    for name in ("scifact", "cranfield"):
        spec = ExperimentSpec(dataset=name, method=DiveAnchored.name, dim=128, overrides={"train": {"progress": False}})
        dataset, embeddings = load_data(spec)
        split = make_splits(dataset, "heldout", spec.split)[0]
        sets[name] = (spec, dataset.name, TrainSet.from_split(embeddings, split, spec.mining, dataset.name))
    return sets


def main(trials: int, storage: Path) -> None:
    sets = training_sets()

    def objective(trial: optuna.Trial) -> float:
        point = {name: trial.suggest_categorical(name, choices) for name, choices in DiveAnchored.search_space.items()}
        for name, (spec, dataset_name, train_set) in sets.items():
            method = build_method(replace(spec, overrides={**spec.overrides, **point}), dataset_name).fit(train_set)
            trial.set_user_attr(name, evaluate_method(method, train_set.validation)["ndcg@10"])
        print(json.dumps({"trial": trial.number, **point, **trial.user_attrs}), flush=True)
        return sum(trial.user_attrs.values()) / len(sets)

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0),
                                storage=f"sqlite:///{storage.resolve()}", study_name="anchored", load_if_exists=True)
    if not study.trials:
        study.enqueue_trial(FIRST)
    study.optimize(objective, n_trials=max(trials - len(study.trials), 0))
    print("best", json.dumps({**study.best_trial.params, "mean_val": study.best_value, **study.best_trial.user_attrs}))


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
