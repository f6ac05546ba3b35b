"""Search: the :class:`Searcher` protocol every index implements, and exact float32 search.

A searcher ranks a stored corpus for query vectors; evaluation (:mod:`dive.evaluate`) and ``dive
search`` (:mod:`dive.index`) take any searcher. :class:`FlatSearch` is the exact one over float32
rows; every codec returns one for its stored codes (``codec.searcher(codes)``), a pipeline one over
a corpus (``pipeline.searcher(corpus_vectors)``), and vector databases plug in the same way.

Rows live in a faiss ``IndexFlatIP``. faiss spreads a batch of queries over the cores, one
query per thread, so a single query (online serving) is scanned by one core at about one core's
bandwidth. :class:`FlatSearch` scans a single query with one multi-threaded BLAS matrix-vector
product instead and picks the top k with ``torch.topk``, so its cost follows the corpus's bytes;
two or more queries go to faiss, which measured faster there (``benchmarks/bench_search.py``).
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import faiss
import numpy as np
import torch


@runtime_checkable
class Searcher(Protocol):
    """Top-``k`` search over a stored corpus.

    ``search(query_vectors, k)`` returns ``(scores, rows)``, float32 and int64, each
    ``[n_queries, k]`` (or fewer columns: :class:`FlatSearch` caps ``k`` at the corpus size),
    best first (higher score = better); ``rows`` are corpus row numbers, ``-1`` where a query
    has fewer results (as faiss pads them).

    Query space: ``query_vectors`` are ``[n_queries, dim]`` float vectors in the space of the
    vectors the searcher was built from. :class:`FlatSearch` and a codec's searcher take vectors
    like the ones they store (a method's float output: queries stay float, the asymmetric search
    of the codecs); a pipeline's searcher was built from frozen corpus vectors and takes frozen
    query vectors (it passes them through the method, :class:`TransformedSearch`).
    """

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


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


class TransformedSearch:
    """A :class:`Searcher` whose queries pass through ``transform`` before ``searcher`` ranks them
    (e.g. a pipeline's method in front of the stored, compressed corpus)."""

    def __init__(self, transform: Callable[[np.ndarray], np.ndarray], searcher: Searcher) -> None:
        self.transform = transform
        self.searcher = searcher

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.searcher.search(self.transform(query_vectors), k)
