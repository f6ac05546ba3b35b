"""Tiny synthetic datasets for fast tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np


def write_beir(folder: Path, n_docs: int = 30, n_queries: int = 12, splits=("train", "test"),
               gz: bool = False) -> Path:
    """A small, valid BEIR folder: query i is relevant to doc i (and doc i+1 for even i)."""
    folder.mkdir(parents=True, exist_ok=True)
    opener = (lambda p: gzip.open(str(p) + ".gz", "wt")) if gz else (lambda p: open(p, "w"))
    with opener(folder / "corpus.jsonl") as handle:
        for i in range(n_docs):
            handle.write(json.dumps({"_id": f"d{i}", "title": f"title {i}", "text": f"text of doc {i}"}) + "\n")
    with opener(folder / "queries.jsonl") as handle:
        for i in range(n_queries):
            handle.write(json.dumps({"_id": f"q{i}", "text": f"query {i}"}) + "\n")
    (folder / "qrels").mkdir(exist_ok=True)
    per_split = np.array_split(np.arange(n_queries), len(splits))
    for split, query_rows in zip(splits, per_split):
        lines = ["query-id\tcorpus-id\tscore"]
        for i in query_rows:
            lines.append(f"q{i}\td{i}\t1")
            if i % 2 == 0:
                lines.append(f"q{i}\td{i + 1}\t2")
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def random_unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def synthetic_embeddings(n_docs: int = 30, n_queries: int = 12, dim: int = 16, seed: int = 0):
    """Embeddings aligned with :func:`write_beir`: query i lies near doc i."""
    from dive.data import Embeddings

    docs = random_unit(n_docs, dim, seed)
    noise = random_unit(n_queries, dim, seed + 1)
    queries = docs[:n_queries] + 0.3 * noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return Embeddings([f"d{i}" for i in range(n_docs)], docs, [f"q{i}" for i in range(n_queries)], queries)


def toy_train_set(n_docs: int = 60, n_queries: int = 40, dim: int = 16):
    """A small supervised TrainSet: query i is relevant to doc i, hard negatives from the top 10."""
    from dive.data import MiningConfig, TrainSet, build_sampler

    embeddings = synthetic_embeddings(n_docs, n_queries, dim)
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(n_queries)}
    sampler = build_sampler(embeddings.query_ids, embeddings.query_vectors, embeddings.doc_ids,
                            embeddings.doc_vectors, qrels, MiningConfig(hard_top_k=10))
    return TrainSet(embeddings.query_vectors, embeddings.doc_vectors, sampler, dataset="toy")
