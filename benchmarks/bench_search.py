"""Exact search throughput over a compressed corpus vs the frozen 384-d one, per dim and codec.

Two regimes, both exact search over 200,000 random unit vectors (speed does not depend on the
values), through the search dive uses (``dive search``, evaluation):

* one query at a time (online serving): every stored byte is read once per query, so the
  memory-bandwidth bound is ``bandwidth / (n_docs * bytes_per_vector)`` queries/s. Float storage
  goes through :class:`dive.search.FlatSearch` (a multi-threaded BLAS scan); codecs through
  their faiss index;
* batches of 256 queries (offline throughput): faiss spreads the queries over the cores.

For float storage the benchmark also times faiss's own one-query scan (``IndexFlatIP.search``
with one query, which runs on one thread) as the reference the BLAS scan replaces.

    python benchmarks/bench_search.py
"""

from __future__ import annotations

import faiss
import numpy as np

from common import best_seconds, memory_bytes_per_second, unit_rows, write_result
from dive.quantize import create_codec
from dive.search import FlatSearch

N_DOCS = 200_000
N_SINGLE = 64
BATCH = 256
K = 10
CELLS = [(384, None), (256, None), (128, None), (64, None), (384, "int8"), (128, "int8"),
         (384, "binary"), (128, "binary"), (128, "pq")]


def unit_prefix(vectors: np.ndarray, dim: int) -> np.ndarray:
    """The first ``dim`` columns, re-normalised (what a compressor's output looks like to search)."""
    prefix = np.ascontiguousarray(vectors[:, :dim])
    return prefix / np.linalg.norm(prefix, axis=1, keepdims=True)


def build(dim: int, codec_name: str | None, docs: np.ndarray):
    """(searcher, queries transform, bytes per vector) for ``docs`` stored with the codec."""
    if codec_name is None:
        return FlatSearch.from_vectors(docs), lambda queries: queries, 4 * dim
    codec = create_codec(codec_name, **({"m": 16} if codec_name == "pq" else {})).fit(docs[:20_000])
    return codec.faiss_index(codec.encode(docs)), codec.faiss_queries, codec.bytes_per_vector


def main() -> None:
    bandwidth = memory_bytes_per_second()
    print(f"memory read bandwidth: {bandwidth / 1e9:.1f} GB/s")
    corpus = unit_rows(N_DOCS, 384)
    queries = unit_rows(BATCH, 384, seed=1)
    rows = []
    for dim, codec_name in CELLS:
        docs = unit_prefix(corpus, dim)
        index, prepare, bytes_per_vector = build(dim, codec_name, docs)
        prepared = prepare(unit_prefix(queries, dim))
        single = [prepared[i:i + 1] for i in range(N_SINGLE)]
        single_seconds = best_seconds(lambda: [index.search(query, K) for query in single], repeats=5)
        batch_seconds = best_seconds(lambda: index.search(prepared, K), repeats=3)
        bound = bandwidth / (N_DOCS * bytes_per_vector)
        row = {"dim": dim, "codec": codec_name or "float32", "bytes_per_vector": float(bytes_per_vector),
               "single_query_per_s": N_SINGLE / single_seconds, "bandwidth_bound_queries_per_s": bound,
               "bandwidth_fraction": N_SINGLE / single_seconds / bound, "batch_queries_per_s": BATCH / batch_seconds}
        if codec_name is None:
            faiss_seconds = best_seconds(lambda: [index.index.search(query, K) for query in single], repeats=5)
            row["faiss_single_query_per_s"] = N_SINGLE / faiss_seconds
            row["faiss_bandwidth_fraction"] = N_SINGLE / faiss_seconds / bound
        rows.append(row)
    for row in rows:
        row["single_speedup_vs_frozen_384"] = row["single_query_per_s"] / rows[0]["single_query_per_s"]
        row["batch_speedup_vs_frozen_384"] = row["batch_queries_per_s"] / rows[0]["batch_queries_per_s"]
        if "faiss_single_query_per_s" in row:
            row["faiss_speedup_vs_frozen_384"] = row["faiss_single_query_per_s"] / rows[0]["faiss_single_query_per_s"]
        print(f"{row['dim']:>4}d {row['codec']:<8} {row['bytes_per_vector']:>5.0f} B/vec | one at a time "
              f"{row['single_query_per_s']:>8.1f} q/s x{row['single_speedup_vs_frozen_384']:5.2f} vs 384-d float, "
              f"{row['bandwidth_fraction']:>4.0%} of the bandwidth bound | batch {BATCH} "
              f"{row['batch_queries_per_s']:>8.1f} q/s x{row['batch_speedup_vs_frozen_384']:5.2f}"
              + (f" | faiss one-thread scan {row['faiss_single_query_per_s']:>7.1f} q/s "
                 f"x{row['faiss_speedup_vs_frozen_384']:5.2f}, {row['faiss_bandwidth_fraction']:>4.0%} of the bound"
                 if "faiss_single_query_per_s" in row else ""))
    write_result("search", {"n_docs": N_DOCS, "single_queries": N_SINGLE, "batch": BATCH, "k": K,
                            "memory_bytes_per_s": bandwidth, "cells": rows})


if __name__ == "__main__":
    main()
