"""Exact inner-product search with faiss (``IndexFlatIP``): the one search used everywhere."""

from __future__ import annotations

import faiss
import numpy as np


def exact_search(query_vectors: np.ndarray, doc_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(scores, doc_rows)``, each ``[n_queries, k]``, best first (k capped at the corpus size)."""
    k = min(k, doc_vectors.shape[0])
    index = faiss.IndexFlatIP(doc_vectors.shape[1])
    index.add(np.ascontiguousarray(doc_vectors, dtype=np.float32))
    scores, rows = index.search(np.ascontiguousarray(query_vectors, dtype=np.float32), k)
    return scores, rows
