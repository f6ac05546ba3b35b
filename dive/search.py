"""Exact inner-product search over float32 rows: the one search used everywhere.

Rows live in a faiss ``IndexFlatIP``. faiss spreads a batch of queries over the cores, one
query per thread, so a single query (online serving) is scanned by one core at about one core's
bandwidth. :class:`FlatSearch` scans a single query with one multi-threaded BLAS matrix-vector
product instead and picks the top k with ``torch.topk``, so its cost follows the corpus's bytes;
two or more queries go to faiss, which measured faster there (``benchmarks/bench_search.py``).
"""

from __future__ import annotations

import faiss
import numpy as np
import torch


class FlatSearch:
    """Exact top-k inner-product search over the rows of a faiss ``IndexFlatIP``.

    The scan reads the index's storage in place, so the index must not grow once wrapped.
    """

    def __init__(self, index: faiss.IndexFlatIP) -> None:
        self.index = index
        # A view of the index's own storage: no second copy of the corpus.
        self.doc_vectors = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)

    @classmethod
    def from_vectors(cls, doc_vectors: np.ndarray) -> "FlatSearch":
        index = faiss.IndexFlatIP(doc_vectors.shape[1])
        index.add(np.ascontiguousarray(doc_vectors, dtype=np.float32))
        return cls(index)

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)``, each ``[n_queries, k]``, best first (k capped at the corpus size)."""
        query_vectors = np.ascontiguousarray(query_vectors, dtype=np.float32)
        k = min(k, self.index.ntotal)
        if len(query_vectors) != 1:
            return self.index.search(query_vectors, k)
        top_scores, top_rows = torch.topk(torch.from_numpy(self.doc_vectors @ query_vectors[0]), k)
        return top_scores.numpy()[None], top_rows.numpy()[None]


def exact_search(query_vectors: np.ndarray, doc_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(scores, doc_rows)``, each ``[n_queries, k]``, best first (k capped at the corpus size)."""
    return FlatSearch.from_vectors(doc_vectors).search(query_vectors, k)
