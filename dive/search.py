"""Exact inner-product search over float32 rows: the one search used everywhere.

Rows live in a faiss ``IndexFlatIP``. For a batch of queries faiss's blocked BLAS matmul is the
fast way; for a handful of queries (online serving) faiss scans on one thread, which reads the
corpus at about a single core's bandwidth. :class:`FlatSearch` then reads the same rows with one
multi-threaded BLAS matrix-vector product per call and picks the top k with ``torch.topk``, so a
query's cost follows the corpus's bytes (``benchmarks/bench_search.py`` measures both).
"""

from __future__ import annotations

import faiss
import numpy as np
import torch

FEW_QUERIES = 20
"""Below this many queries faiss scans one query per thread instead of using BLAS (its default
``distance_compute_blas_threshold``), so :class:`FlatSearch` uses its own BLAS scan."""


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
        if len(query_vectors) >= FEW_QUERIES:
            return self.index.search(query_vectors, k)
        scores = torch.from_numpy(self.doc_vectors @ query_vectors.T)
        top_scores, top_rows = torch.topk(scores, k, dim=0)
        return top_scores.T.contiguous().numpy(), top_rows.T.contiguous().numpy()


def exact_search(query_vectors: np.ndarray, doc_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(scores, doc_rows)``, each ``[n_queries, k]``, best first (k capped at the corpus size)."""
    return FlatSearch.from_vectors(doc_vectors).search(query_vectors, k)
