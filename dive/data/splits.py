"""Evaluation protocols (SPEC "Protocols"): which qrels train, which validate, which test.

* ``heldout`` (default, honest): train on the train queries, test on queries never seen.
  Datasets with a train split use it; test-only datasets use K-fold cross-validation over the
  test queries (same folds for every method, fixed by ``split_seed``). A validation slice is
  carved from the train queries for early stopping and tuning.
* ``paper`` (the DIVE paper's Section 4.1): training triplets come from every qrels split, the
  test queries included. Transductive: results must be labelled so wherever they are printed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dive import checks
from dive.data.beir import BeirDataset, Qrels
from dive.errors import DiveError

PROTOCOLS = ("heldout", "paper")
TRANSDUCTIVE_LABEL = "paper protocol (transductive: test queries were used in training)"


@dataclass(frozen=True)
class SplitConfig:
    """How queries are partitioned.

    Attributes:
        n_folds: folds for test-only datasets (SPEC: K=5).
        validation_fraction: share of train queries held out for validation (heldout only);
            dive's choice, 10%, so early stopping and tuning never see test queries. 0 holds
            none out; below 1, so some queries train.
        split_seed: fixes folds and the validation slice; independent of the training seed so
            every method and seed sees the same partition.
    """

    n_folds: int = 5
    validation_fraction: float = 0.1
    split_seed: int = 0

    def __post_init__(self) -> None:
        checks.whole_at_least("n_folds", self.n_folds, 2)
        checks.finite("validation_fraction", self.validation_fraction)
        if not 0 <= self.validation_fraction < 1:
            raise checks.InvalidSetting("validation_fraction", "must be between 0 and 1 (0: no validation slice)",
                                        self.validation_fraction)
        checks.whole_at_least("split_seed", self.split_seed, 0)


@dataclass(frozen=True)
class Split:
    """One train/validation/test partition of a dataset's qrels."""

    name: str
    protocol: str
    train: Qrels
    validation: Qrels
    test: Qrels

    @property
    def transductive(self) -> bool:
        return self.protocol == "paper"


def positive_only(qrels: Qrels) -> Qrels:
    """Keep judgements with score > 0 (SPEC: a relevant document has qrels score > 0)."""
    kept = {qid: {did: s for did, s in docs.items() if s > 0} for qid, docs in qrels.items()}
    return {qid: docs for qid, docs in kept.items() if docs}


def _merge(*parts: Qrels) -> Qrels:
    merged: Qrels = {}
    for part in parts:
        for query_id, docs in part.items():
            merged.setdefault(query_id, {}).update(docs)
    return merged


def _carve_validation(train: Qrels, fraction: float, rng: np.random.Generator) -> tuple[Qrels, Qrels]:
    query_ids = sorted(train)
    n_validation = int(round(len(query_ids) * fraction))
    if n_validation == 0 or n_validation >= len(query_ids):
        return train, {}
    chosen = set(rng.permutation(query_ids)[:n_validation].tolist())
    kept = {q: d for q, d in train.items() if q not in chosen}
    return kept, {q: d for q, d in train.items() if q in chosen}


def _test_split(dataset: BeirDataset) -> Qrels:
    if "test" not in dataset.qrels:
        raise DiveError(f"{dataset.name}: no qrels/test.tsv (splits found: {', '.join(dataset.splits)})")
    return dataset.qrels["test"]


def make_splits(dataset: BeirDataset, protocol: str = "heldout",
                config: SplitConfig = SplitConfig()) -> list[Split]:
    """Partition ``dataset``'s qrels under ``protocol``; K-fold yields K splits, else one."""
    if protocol not in PROTOCOLS:
        raise DiveError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    test = _test_split(dataset)
    if protocol == "paper":
        everything = positive_only(_merge(*dataset.qrels.values()))
        return [Split("all-qrels", protocol, train=everything, validation={}, test=test)]
    rng = np.random.default_rng(config.split_seed)
    if "train" in dataset.qrels:
        train = {q: d for q, d in positive_only(dataset.qrels["train"]).items() if q not in test}
        if not train:
            raise DiveError(f"{dataset.name}: the train split has no query with a relevant document")
        train, validation = _carve_validation(train, config.validation_fraction, rng)
        return [Split("official", protocol, train=train, validation=validation, test=test)]
    return _kfold(test, config, rng)


def _kfold(test: Qrels, config: SplitConfig, rng: np.random.Generator) -> list[Split]:
    query_ids = sorted(positive_only(test))
    if len(query_ids) < config.n_folds:
        raise DiveError(f"only {len(query_ids)} test queries with a relevant document: "
                        f"too few for {config.n_folds}-fold cross-validation")
    folds = np.array_split(rng.permutation(query_ids), config.n_folds)
    splits = []
    for index, fold in enumerate(folds):
        held = set(fold.tolist())
        train = positive_only({q: d for q, d in test.items() if q not in held})
        train, validation = _carve_validation(train, config.validation_fraction, rng)
        fold_test = {q: d for q, d in test.items() if q in held}
        splits.append(Split(f"fold-{index + 1}", "heldout", train=train, validation=validation, test=fold_test))
    return splits
