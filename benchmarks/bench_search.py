"""Exact search throughput over a compressed corpus vs the frozen 384-d one, per dim and codec,
against the memory-bandwidth bound (queries/s if every stored byte is read once per query).

Queries run in batches of 16, below faiss's BLAS threshold (20), so each query scans the stored
codes: the regime where bytes per vector decide speed. Corpus: 200,000 random unit vectors
(speed does not depend on the values).

    python benchmarks/bench_search.py
"""

from __future__ import annotations

import faiss
import numpy as np

from common import best_seconds, memory_bytes_per_second, unit_rows, write_result
from dive.quantize import create_codec

N_DOCS = 200_000
N_QUERIES = 16
K = 10
CELLS = [(384, None), (256, None), (128, None), (64, None), (384, "int8"), (128, "int8"),
         (384, "binary"), (128, "binary"), (128, "pq")]


def build(dim: int, codec_name: str | None, corpus: np.ndarray):
    """(faiss index, queries transform, bytes per vector) for ``corpus[:, :dim]`` stored with the codec."""
    docs = np.ascontiguousarray(corpus[:, :dim])
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    if codec_name is None:
        index = faiss.IndexFlatIP(dim)
        index.add(docs)
        return index, lambda queries: queries, 4 * dim
    codec = create_codec(codec_name, **({"m": 16} if codec_name == "pq" else {})).fit(docs[:20_000])
    return codec.faiss_index(codec.encode(docs)), codec.faiss_queries, codec.bytes_per_vector


def main() -> None:
    bandwidth = memory_bytes_per_second()
    print(f"memory read bandwidth: {bandwidth / 1e9:.1f} GB/s")
    corpus = unit_rows(N_DOCS, 384)
    queries = unit_rows(N_QUERIES, 384, seed=1)
    rows = []
    for dim, codec_name in CELLS:
        index, prepare, bytes_per_vector = build(dim, codec_name, corpus)
        query_part = np.ascontiguousarray(queries[:, :dim])
        query_part /= np.linalg.norm(query_part, axis=1, keepdims=True)
        prepared = prepare(query_part)
        seconds = best_seconds(lambda: index.search(prepared, K), repeats=5)
        queries_per_s = N_QUERIES / seconds
        bound = bandwidth / (N_DOCS * bytes_per_vector)
        rows.append({"dim": dim, "codec": codec_name or "float32", "bytes_per_vector": float(bytes_per_vector),
                     "queries_per_s": queries_per_s, "bandwidth_bound_queries_per_s": bound,
                     "bandwidth_fraction": queries_per_s / bound})
    frozen = rows[0]["queries_per_s"]
    for row in rows:
        row["speedup_vs_frozen_384"] = row["queries_per_s"] / frozen
        print(f"{row['dim']:>4}d {row['codec']:<8} {row['bytes_per_vector']:>6.0f} B/vec  "
              f"{row['queries_per_s']:>8.1f} q/s  x{row['speedup_vs_frozen_384']:.2f} vs 384-d float  "
              f"{row['bandwidth_fraction']:.0%} of the bandwidth bound")
    write_result("search", {"n_docs": N_DOCS, "query_batch": N_QUERIES, "k": K,
                            "memory_bytes_per_s": bandwidth, "cells": rows})


if __name__ == "__main__":
    main()
