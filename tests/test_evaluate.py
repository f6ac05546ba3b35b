import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dive.data import EvalSet, make_splits
from dive.errors import DiveError
from dive.evaluate import (evaluate_method, evaluate_searcher, evaluate_vectors, rankings_to_run, retention, retrieve,
                           score_run)
from dive.methods import create_method
from dive.search import FlatSearch, Searcher, exact_search


def test_score_run_matches_hand_computed_ndcg_and_recall():
    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"c": 2}}
    run = {"q1": {"x": 3.0, "a": 2.0, "y": 1.0}, "q2": {"c": 1.0}}
    metrics = score_run(run, qrels, ks=(10,))
    ideal = 1 + 1 / math.log2(3)
    expected_q1 = (1 / math.log2(3)) / ideal
    assert metrics["ndcg@10"] == pytest.approx((expected_q1 + 1.0) / 2)
    assert metrics["recall@10"] == pytest.approx((0.5 + 1.0) / 2)


@pytest.mark.parametrize("ks", [(0,), (-3,), (10, 0), ()])
def test_a_cutoff_below_1_is_refused_before_pytrec_eval_can_abort(ks):
    with pytest.raises(DiveError, match="k must be at least 1|ks must be a non-empty list"):
        score_run({"q1": {"a": 1.0}}, {"q1": {"a": 1}}, ks=ks)


def test_queries_without_results_count_as_zero():
    metrics = score_run({"q1": {"a": 1.0}}, {"q1": {"a": 1}, "q2": {"b": 1}})
    assert metrics["ndcg@10"] == pytest.approx(0.5)


def test_identical_ids_are_removed_from_the_ranking():
    doc_vectors = np.eye(3, dtype=np.float32)
    query = np.array([[1.0, 0.2, 0.0]], dtype=np.float32)
    run = retrieve(query, ["d0"], doc_vectors, ["d0", "d1", "d2"], depth=2)
    assert list(run["d0"]) == ["d1", "d2"]


def test_dimension_mismatch_and_empty_queries_fail_clearly():
    eval_set = EvalSet(["q"], np.ones((1, 4), np.float32), {"q": {"d": 1}}, ["d"], np.ones((1, 4), np.float32))
    with pytest.raises(DiveError, match="query dimension 2 != document dimension 4"):
        evaluate_vectors(np.ones((1, 2), np.float32), eval_set.doc_vectors, eval_set)
    with pytest.raises(DiveError, match="no queries"):
        score_run({}, {})


def test_retention_is_the_ratio_to_frozen():
    assert retention({"ndcg@10": 0.5}, {"ndcg@10": 0.625}) == {"ndcg@10": 0.8}


def test_frozen_minilm_on_scifact_test_matches_the_published_ndcg(scifact):
    """all-MiniLM-L6-v2 on BEIR scifact: nDCG@10 0.645 (sentence-transformers / MTEB)."""
    dataset, embeddings = scifact
    (split,) = make_splits(dataset, "heldout")
    metrics = evaluate_method(None, embeddings.eval_set(split.test), ks=(10, 100))
    assert len(split.test) == 300
    assert metrics["ndcg@10"] == pytest.approx(0.645, abs=0.01)
    assert metrics["recall@100"] > metrics["recall@10"]


def test_truncation_to_full_dim_keeps_frozen_metrics_and_smaller_dims_lose(scifact):
    dataset, embeddings = scifact
    (split,) = make_splits(dataset, "heldout")
    eval_set = embeddings.eval_set(split.test)
    frozen = evaluate_method(None, eval_set)
    full = create_method("truncate", dim=embeddings.dim)
    full.input_dim = embeddings.dim
    assert evaluate_method(full, eval_set)["ndcg@10"] == pytest.approx(frozen["ndcg@10"], abs=1e-6)
    short = create_method("truncate", dim=64)
    short.input_dim = embeddings.dim
    assert evaluate_method(short, eval_set)["ndcg@10"] < frozen["ndcg@10"]


def synthetic_eval_set(n_docs: int = 200, n_queries: int = 30, dim: int = 16) -> EvalSet:
    """Query i lies near doc i and is relevant to it; doc 0 carries query 0's id (removed from its ranking)."""
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((n_docs, dim)).astype(np.float32)
    queries = docs[:n_queries] + 0.5 * rng.standard_normal((n_queries, dim)).astype(np.float32)
    query_ids = [f"q{i}" for i in range(n_queries)]
    doc_ids = ["q0"] + [f"d{i}" for i in range(1, n_docs)]
    qrels = {f"q{i}": {doc_ids[i]: 1, f"d{i + 1}": 1} for i in range(n_queries)}
    return EvalSet(query_ids, queries, qrels, doc_ids, docs)


def test_evaluate_searcher_on_flat_search_equals_evaluate_vectors_and_the_ranking_scored_by_hand():
    eval_set = synthetic_eval_set()
    ks = (1, 10, 100)
    by_searcher = evaluate_searcher(FlatSearch.from_vectors(eval_set.doc_vectors), eval_set.query_vectors, eval_set, ks)
    scores, rows = exact_search(eval_set.query_vectors, eval_set.doc_vectors, max(ks) + 1)
    run = rankings_to_run(eval_set.query_ids, eval_set.doc_ids, scores, rows, max(ks))
    by_hand = score_run(run, eval_set.qrels, ks)
    assert by_searcher == by_hand
    assert by_searcher == evaluate_vectors(eval_set.query_vectors, eval_set.doc_vectors, eval_set, ks)
    assert by_searcher == evaluate_method(None, eval_set, ks)


def test_any_object_with_search_is_scored_and_identical_ids_are_removed():
    class Fixed:
        """Ranks every document in order, scores falling; -1 pads a missing result."""

        def search(self, query_vectors, k):
            rows = np.tile(np.arange(k), (len(query_vectors), 1))
            rows[:, -1] = -1
            return -rows.astype(np.float32), rows

    eval_set = EvalSet(["d0"], np.ones((1, 2), np.float32), {"d0": {"d1": 1}}, ["d0", "d1", "d2"],
                       np.ones((3, 2), np.float32))
    assert isinstance(Fixed(), Searcher)
    # d0 is the query's own id: dropped, so d1 ranks first.
    assert evaluate_searcher(Fixed(), eval_set.query_vectors, eval_set, ks=(2,)) == {"ndcg@2": 1.0, "recall@2": 1.0}


def test_evaluate_method_takes_any_object_with_transform():
    eval_set = synthetic_eval_set()

    class FirstEight:
        def transform(self, vectors):
            return np.ascontiguousarray(vectors[:, :8])

    expected = evaluate_vectors(eval_set.query_vectors[:, :8].copy(), eval_set.doc_vectors[:, :8].copy(), eval_set)
    assert evaluate_method(FirstEight(), eval_set) == expected


def test_importing_evaluate_does_not_import_methods_codecs_or_pipelines():
    code = ("import sys, dive.evaluate; "
            "print(sorted(m for m in sys.modules if m.startswith(('dive.methods', 'dive.quantize', 'dive.pipeline', "
            "'dive.train', 'dive.experiments'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == "[]"
