"""Exact search: the one-query BLAS scan returns what faiss returns, in the same order."""

import faiss
import numpy as np
import pytest

from dive.search import FlatSearch, Searcher, TransformedSearch, exact_search
from helpers import random_unit as unit_rows


@pytest.fixture(scope="module")
def corpus():
    return unit_rows(5000, 64, seed=0)


@pytest.mark.parametrize("n_queries", [1, 2, 7, 50])
def test_flat_search_matches_faiss(corpus, n_queries):
    queries = unit_rows(n_queries, 64, seed=1)
    reference = faiss.IndexFlatIP(64)
    reference.add(corpus)
    expected_scores, expected_rows = reference.search(queries, 10)
    scores, rows = FlatSearch.from_vectors(corpus).search(queries, 10)
    assert rows.shape == scores.shape == (n_queries, 10)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all(), "best first"


def test_one_query_at_a_time_equals_the_batch(corpus):
    queries = unit_rows(64, 64, seed=2)
    searcher = FlatSearch.from_vectors(corpus)
    batch_scores, batch_rows = searcher.search(queries, 10)
    for query, scores, rows in zip(queries, batch_scores, batch_rows):
        single_scores, single_rows = searcher.search(query[None], 10)
        np.testing.assert_array_equal(single_rows[0], rows)
        np.testing.assert_allclose(single_scores[0], scores, atol=1e-5)


def test_scan_reads_the_index_storage_without_a_copy(corpus):
    searcher = FlatSearch.from_vectors(corpus)
    np.testing.assert_array_equal(searcher.doc_vectors, corpus)
    assert not np.shares_memory(searcher.doc_vectors, corpus)
    searcher.doc_vectors[0] = 0  # writes land in the faiss index: the scan and faiss see the same rows
    assert not faiss.vector_to_array(searcher.index.codes).view(np.float32)[:64].any()


@pytest.mark.parametrize("n_queries", [1, 30])
def test_k_is_capped_at_the_corpus_size(n_queries):
    corpus = unit_rows(4, 8, seed=3)
    scores, rows = exact_search(unit_rows(n_queries, 8, seed=4), corpus, 10)
    assert rows.shape == (n_queries, 4)
    assert sorted(rows[0]) == [0, 1, 2, 3]


def test_flat_search_and_a_transformed_search_are_searchers(corpus):
    queries = unit_rows(5, 64, seed=5)
    flat = FlatSearch.from_vectors(corpus)
    halved = TransformedSearch(lambda vectors: vectors * 0.5, flat)
    assert isinstance(flat, Searcher) and isinstance(halved, Searcher)
    scores, rows = halved.search(queries, 10)
    expected_scores, expected_rows = flat.search(queries * 0.5, 10)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_array_equal(scores, expected_scores)
    assert scores.dtype == np.float32 and rows.dtype == np.int64
