"""``dive tune``: choose a method's settings on the validation slice, never on test queries.

Every method that trains on labels declares a search space (:attr:`dive.methods.Method.search_space`);
each gets the same number of trials, so no method is compared at a tuning budget the others did
not have. Optuna's TPE sampler (seeded) proposes the settings, always starting from the
method's defaults; each trial fits the method on the heldout split's training queries (the
first fold for K-fold datasets) with its model selection, and scores nDCG@10 on that split's
validation slice, carved from the training queries. The study lives in a SQLite file beside
the settings, so an interrupted tune resumes where it stopped. The winner is written as a JSON
settings file that ``dive train --config`` and ``dive reproduce --tune`` reuse.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna

from dive.data import Embeddings, TrainSet, make_splits
from dive.data.beir import BeirDataset
from dive.errors import DiveError
from dive.evaluate import evaluate_method
from dive.experiments.run import RUNS_DIR, ExperimentSpec, build_method
from dive.methods import method_class
from dive.utils import write_json

log = logging.getLogger(__name__)

DEFAULT_TRIALS = 10
"""Trials per method by default: the defaults, then nine TPE proposals."""


def default_tuned_path(spec: ExperimentSpec) -> str:
    """Where ``dive tune`` writes the best settings without ``--out``: ``runs/tuned-<dataset>-<method>-<dim>.json``."""
    return f"{RUNS_DIR}/tuned-{spec.dataset_label}-{spec.method}-{spec.dim}.json"


def tune(spec: ExperimentSpec, data: tuple[BeirDataset, Embeddings], trials: int = DEFAULT_TRIALS,
         out: str | Path | None = None) -> dict[str, Any]:
    """Search ``spec.method``'s space for ``trials`` trials in all (a resumed study counts the trials it
    already has); write the best settings to ``out`` and every trial beside it; return the best settings."""
    space = method_class(spec.method).search_space
    if not space:
        raise DiveError(f"{spec.method} has no settings to tune (methods with a search space: see `dive methods`)")
    dataset, embeddings = data
    split = make_splits(dataset, "heldout", spec.split)[0]
    if not split.validation:
        raise DiveError("tuning needs a validation slice: set validation_fraction > 0")
    train_set = TrainSet.from_split(embeddings, split, spec.mining, dataset.name)
    study = _study(spec, dataset.name, out)

    def objective(trial: optuna.Trial) -> float:
        point = {name: trial.suggest_categorical(name, choices) for name, choices in space.items()}
        method = build_method(replace(spec, overrides={**spec.overrides, **point}), dataset.name)
        score = evaluate_method(method.fit(train_set), train_set.validation)["ndcg@10"]
        log.info("%s trial %d/%d %s: validation nDCG@10 %.4f", spec.method, trial.number + 1, trials, point, score)
        return score

    remaining = trials - len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE])
    if remaining > 0:
        study.optimize(objective, n_trials=remaining)
    settings = dict(study.best_trial.params)
    if out is not None:
        _write(Path(out), settings, study, spec, dataset.name, split.name, len(split.validation))
    return settings


def _study(spec: ExperimentSpec, dataset_name: str, out: str | Path | None) -> optuna.Study:
    """The seeded TPE study, stored beside ``out`` (``<out>.optuna.db``) when given; the defaults first."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = None
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{Path(out).with_suffix('.optuna.db').resolve()}"
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=spec.seed),
                                storage=storage, study_name=f"{dataset_name}-{spec.method}-{spec.dim}",
                                load_if_exists=True)
    if not study.trials:
        defaults = build_method(spec, dataset_name).config
        study.enqueue_trial({name: getattr(defaults, name) for name in method_class(spec.method).search_space})
    return study


def _write(out: Path, settings: dict[str, Any], study: optuna.Study, spec: ExperimentSpec, dataset_name: str,
           split_name: str, n_validation: int) -> None:
    write_json(out, settings)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    write_json(out.with_suffix(".trials.json"), {
        "dataset": dataset_name, "method": spec.method, "dim": spec.dim, "seed": spec.seed, "split": split_name,
        "n_validation_queries": n_validation, "objective": "validation nDCG@10", "sampler": "optuna TPE",
        "optuna": optuna.__version__,
        "trials": [{**trial.params, "val_ndcg@10": trial.value} for trial in finished]})
