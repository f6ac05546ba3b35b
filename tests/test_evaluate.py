import math

import numpy as np
import pytest

from dive.data import EvalSet, make_splits
from dive.errors import DiveError
from dive.evaluate import evaluate_method, evaluate_vectors, retention, retrieve, score_run
from dive.methods import create_method


def test_score_run_matches_hand_computed_ndcg_and_recall():
    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"c": 2}}
    run = {"q1": {"x": 3.0, "a": 2.0, "y": 1.0}, "q2": {"c": 1.0}}
    metrics = score_run(run, qrels, ks=(10,))
    ideal = 1 + 1 / math.log2(3)
    expected_q1 = (1 / math.log2(3)) / ideal
    assert metrics["ndcg@10"] == pytest.approx((expected_q1 + 1.0) / 2)
    assert metrics["recall@10"] == pytest.approx((0.5 + 1.0) / 2)


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
