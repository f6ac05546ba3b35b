"""Engines on real data: scifact's corpus through LanceDB, Qdrant (local mode) and faiss.

A PCA pipeline (fitted on the corpus, no labels) with each codec is indexed by every engine
that takes it; each index is scored on scifact's held-out test queries through the engine's
own search (:func:`dive.index.evaluate_index`) beside dive's exact evaluation of the same
pipeline, with build time, size on disk and the time of one batch of all test queries.

    cd benchmarks && OMP_NUM_THREADS=1 ../.venv/bin/python bench_engines.py   # writes results/engines.json
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from common import write_result
from dive.data import TrainSet, load_beir, make_splits
from dive.encode import embed_dataset
from dive.engines import EngineConfig
from dive.index import build_index, evaluate_index, load_index
from dive.methods import create_method
from dive.pipeline import Pipeline
from dive.quantize import create_codec

DATASET = "scifact"
DIM = 128
CODECS = [None, ("int8", {}), ("pq", {"m": 16}), ("binary", {}), ("binary", {"rescore": 100})]
ENGINES = [EngineConfig(engine="lancedb"), EngineConfig(engine="qdrant"), EngineConfig(engine="faiss"),
           EngineConfig(engine="faiss", factory="HNSW32"),
           EngineConfig(engine="faiss", factory="HNSW32", search_params="efSearch=128"),
           EngineConfig(engine="faiss", factory="IVF64,Flat"),
           EngineConfig(engine="faiss", factory="IVF64,Flat", search_params="nprobe=16")]


def main() -> None:
    import os

    dataset = load_beir(Path(os.environ.get("DIVE_DATA_DIR", "../shared/data/beir")) / DATASET)
    embeddings = embed_dataset(dataset)
    eval_set = embeddings.eval_set(make_splits(dataset)[0].test)
    method = create_method("pca", dim=DIM).fit(TrainSet.unsupervised(embeddings.doc_vectors))
    cells: list[dict] = []
    print(f"{DATASET}: {len(embeddings.doc_ids)} documents, {len(eval_set.query_ids)} test queries, pca-{DIM}")
    print(f"{'codec':<10} {'engine':<32} {'exact':<6} {'ndcg@10':>8} {'dive':>8} {'diff':>9} {'build s':>8} "
          f"{'search s':>9} {'MB':>6}")
    with tempfile.TemporaryDirectory() as scratch:
        for codec in CODECS:
            pipeline = Pipeline(method)
            if codec:
                pipeline = Pipeline(method).fit_codec(create_codec(codec[0], **codec[1]), embeddings.doc_vectors)
            folder = Path(scratch) / f"pipeline-{codec[0] if codec else 'none'}"
            pipeline.save(folder)
            for config in ENGINES:
                if (config.factory and codec) or (codec and codec[1].get("rescore") and config.engine != "qdrant"):
                    continue  # a factory is its own storage; only Qdrant rescores binary candidates
                cells.append(run_cell(pipeline, folder, embeddings, eval_set, config, Path(scratch) / "index.faiss"
                                      if config.engine == "faiss" else Path(scratch) / "index"))
                shutil.rmtree(Path(scratch) / "index", ignore_errors=True)
    write_result("engines", {"dataset": DATASET, "method": f"pca-{DIM}", "n_docs": len(embeddings.doc_ids),
                             "n_test_queries": len(eval_set.query_ids), "cells": cells})


def run_cell(pipeline, folder, embeddings, eval_set, config, out) -> dict:
    started = time.perf_counter()
    summary = build_index(pipeline, folder, embeddings.doc_ids, embeddings.doc_vectors, out, config=config)
    built = time.perf_counter() - started
    index = load_index(out)
    try:
        started = time.perf_counter()
        index.search_vectors(eval_set.query_vectors, 11)
        searched = time.perf_counter() - started
        report = evaluate_index(index, eval_set, (10,))
    finally:
        index.close()
    name = config.engine + (f" {config.factory}" if config.factory else "") + (f" {config.search_params}"
                                                                               if config.search_params else "")
    codec = summary["codec"]["name"] if summary["codec"] else "none"
    codec += f"/{summary['codec']['config']['rescore']}" if codec == "binary" else ""
    print(f"{codec:<10} {name:<32} {str(report['exact']):<6} {report['metrics']['ndcg@10']:>8.4f} "
          f"{report['dive_metrics']['ndcg@10']:>8.4f} {report['difference']['ndcg@10']:>+9.1e} {built:>8.2f} "
          f"{searched:>9.3f} {summary['index_bytes'] / 1e6:>6.1f}")
    return {"codec": codec, "engine": name, "exact": report["exact"], "ndcg@10": report["metrics"]["ndcg@10"],
            "dive_ndcg@10": report["dive_metrics"]["ndcg@10"], "build_seconds": built, "search_seconds": searched,
            "index_bytes": summary["index_bytes"]}


if __name__ == "__main__":
    main()
