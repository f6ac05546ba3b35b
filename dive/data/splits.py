"""Evaluation protocols (SPEC "Protocols"): which qrels train, which validate, which test.

* ``heldout`` (default, honest): train on the train queries, test on queries never seen.
  Datasets with a train split use it; test-only datasets use K-fold cross-validation over the
  test queries (same folds for every method, fixed by ``split_seed``). A validation slice is
  carved from the train queries for early stopping and tuning.
  Its strict view (:func:`without_near_duplicates`) also scores each fit on the test queries
  that have no near-duplicate train query (frozen cosine above
  ``SplitConfig.near_duplicate_threshold``), so a reader sees how much of an adapter's gain
  comes from memorised near-copies (scifact splits claims and their negations across train
  and test).
* ``paper`` (the DIVE paper's Section 4.1): training triplets come from every qrels split, the
  test queries included. Transductive: results must be labelled so wherever they are printed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from dive import checks
from dive.data.beir import BeirDataset, Qrels
from dive.errors import DiveError

PROTOCOLS = ("heldout", "paper")
TRANSDUCTIVE_LABEL = "paper protocol (transductive: test queries were used in training)"
PROTOCOL_LABELS = {
    "heldout": "heldout (test queries never seen in training)",
    "paper": TRANSDUCTIVE_LABEL,
}
"""How each protocol is named beside every number it produced."""


@dataclass(frozen=True)
class SplitConfig:
    """How queries are partitioned.

    Attributes:
        n_folds: folds for test-only datasets (SPEC: K=5).
        validation_fraction: share of train queries held out for validation (heldout only): model
            selection and tuning use it, never test queries. 20%, the 80/20 split of
            Search-Adaptor's and Matryoshka-Adaptor's public re-implementations; 0 holds none out
            (then every epoch trains and the last is kept); below 1, so some queries train.
        min_validation_queries: floor on the validation slice, so that it can rank checkpoints on
            small datasets (cranfield has about 180 train queries per fold: 20% would be 36,
            whose nDCG@10 moves by several points with one query; SPEC asks for a floor).
        max_validation_fraction: the floor never takes more than this share of the train queries
            (35%), so training keeps most of its labels.
        split_seed: fixes folds and the validation slice; independent of the training seed so
            every method and seed sees the same partition.
        near_duplicate_threshold: the strict held-out view leaves out test queries whose frozen
            cosine to some train or validation query exceeds this (0.9: SPEC "Protocols", strict
            view); None turns the view off.
    """

    n_folds: int = 5
    validation_fraction: float = 0.2
    min_validation_queries: int = 50
    max_validation_fraction: float = 0.35
    split_seed: int = 0
    near_duplicate_threshold: float | None = 0.9

    def validation_size(self, n_train_queries: int) -> int:
        """Validation queries carved from ``n_train_queries``: the fraction, raised to the floor, capped."""
        if self.validation_fraction <= 0:
            return 0
        wanted = max(round(n_train_queries * self.validation_fraction), self.min_validation_queries)
        cap = int(n_train_queries * max(self.max_validation_fraction, self.validation_fraction))
        return min(wanted, cap)

    def __post_init__(self) -> None:
        checks.whole_at_least("n_folds", self.n_folds, 2)
        checks.finite("validation_fraction", self.validation_fraction)
        if not 0 <= self.validation_fraction < 1:
            raise checks.InvalidSetting("validation_fraction", "must be between 0 and 1 (0: no validation slice)",
                                        self.validation_fraction)
        checks.whole_at_least("split_seed", self.split_seed, 0)
        checks.whole_at_least("min_validation_queries", self.min_validation_queries, 0)
        checks.finite("max_validation_fraction", self.max_validation_fraction)
        if not 0 <= self.max_validation_fraction < 1:
            raise checks.InvalidSetting("max_validation_fraction", "must be between 0 and 1",
                                        self.max_validation_fraction)
        if self.near_duplicate_threshold is not None:
            checks.finite("near_duplicate_threshold", self.near_duplicate_threshold)


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


def _carve_validation(train: Qrels, config: SplitConfig, rng: np.random.Generator) -> tuple[Qrels, Qrels]:
    query_ids = sorted(train)
    n_validation = config.validation_size(len(query_ids))
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
        train, validation = _carve_validation(train, config, rng)
        return [Split("official", protocol, train=train, validation=validation, test=test)]
    return _kfold(test, config, rng, protocol)


def _kfold(test: Qrels, config: SplitConfig, rng: np.random.Generator, protocol: str) -> list[Split]:
    query_ids = sorted(positive_only(test))
    if len(query_ids) < config.n_folds:
        raise DiveError(f"only {len(query_ids)} test queries with a relevant document: "
                        f"too few for {config.n_folds}-fold cross-validation")
    folds = np.array_split(rng.permutation(query_ids), config.n_folds)
    splits = []
    for index, fold in enumerate(folds):
        held = set(fold.tolist())
        train = positive_only({q: d for q, d in test.items() if q not in held})
        train, validation = _carve_validation(train, config, rng)
        fold_test = {q: d for q, d in test.items() if q in held}
        splits.append(Split(f"fold-{index + 1}", protocol, train=train, validation=validation, test=fold_test))
    return splits


def without_near_duplicates(split: Split, query_ids: list[str], query_vectors: np.ndarray,
                            threshold: float) -> tuple[Split, int]:
    """``split`` without the test queries that have a train or validation query with frozen cosine
    above ``threshold`` (``query_vectors`` are the frozen unit vectors of ``query_ids``); and how
    many were dropped."""
    row = {query_id: index for index, query_id in enumerate(query_ids)}
    seen = [row[q] for q in (*split.train, *split.validation) if q in row]
    tested = sorted(q for q in split.test if q in row)
    if not seen or not tested:
        return split, 0
    closest = (query_vectors[[row[q] for q in tested]] @ query_vectors[seen].T).max(axis=1)
    dropped = {q for q, similarity in zip(tested, closest) if similarity > threshold}
    if len(dropped) == len(split.test):
        raise DiveError(f"split {split.name}: every test query has a near-duplicate train query "
                        f"(cosine > {threshold}); raise near_duplicate_threshold")
    kept = {q: docs for q, docs in split.test.items() if q not in dropped}
    return replace(split, test=kept), len(dropped)
