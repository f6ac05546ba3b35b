"""Evaluation layer: score any :class:`~dive.search.Searcher` with IR metrics (pytrec_eval, as BEIR).

:func:`evaluate_searcher` is the one scorer: the searcher ranks the corpus for the queries, a
document whose id equals the query id is removed from that query's ranking (BEIR's
``ignore_identical_ids``), and metrics are the mean over the evaluated queries. Queries and
documents go through the same compressor (:func:`evaluate_method`); "retention" is compressed /
frozen on the same queries.

This module sits below methods, codecs and pipelines (it imports only data, search, checks and errors),
so each of them can use it: a method is anything with ``transform`` (:class:`Transformer`).
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import pytrec_eval

from dive import checks
from dive.data.beir import Qrels
from dive.data.sets import EvalSet
from dive.errors import DiveError
from dive.search import FlatSearch, Searcher


DEFAULT_KS: tuple[int, ...] = (10,)
_MEASURES = {"ndcg": "ndcg_cut", "recall": "recall"}

Run = dict[str, dict[str, float]]


class Transformer(Protocol):
    """What :func:`evaluate_method` needs of a method: ``transform(vectors) -> vectors``."""

    def transform(self, vectors: np.ndarray) -> np.ndarray: ...


def check_cutoffs(ks: Sequence[int]) -> None:
    """Refuse a cutoff below 1 (pytrec_eval aborts the process on ``@0`` and raises on ``@-3``)."""
    if isinstance(ks, (str, bytes)) or not len(ks):
        raise checks.InvalidSetting("ks", "must be a non-empty list of cutoffs", ks)
    for k in ks:
        checks.whole_at_least("k", k, 1)


def metric_names(ks: Sequence[int] = DEFAULT_KS) -> list[str]:
    check_cutoffs(ks)
    return [f"{name}@{k}" for name in _MEASURES for k in sorted(set(ks))]


def retrieve(query_vectors: np.ndarray, query_ids: list[str], doc_vectors: np.ndarray,
             doc_ids: list[str], depth: int) -> Run:
    """Top-``depth`` documents per query by exact inner product, identical ids removed."""
    return search_run(FlatSearch.from_vectors(doc_vectors), query_vectors, query_ids, doc_ids, depth)


def search_run(searcher: Searcher, query_vectors: np.ndarray, query_ids: list[str], doc_ids: list[str],
               depth: int) -> Run:
    """Top-``depth`` documents per query from ``searcher`` (row i = ``doc_ids[i]``), identical ids removed.

    One more than ``depth`` is asked for, so that ``depth`` remain after the removal.
    """
    scores, rows = searcher.search(query_vectors, depth + 1)
    return rankings_to_run(query_ids, doc_ids, scores, rows, depth)


def rankings_to_run(query_ids: list[str], doc_ids: list[str], scores: np.ndarray, rows: np.ndarray,
                    depth: int) -> Run:
    """A pytrec_eval run from ``[n_queries, >= depth + 1]`` ranked rows (best first): the top
    ``depth`` documents per query after removing the one whose id equals the query id."""
    run: Run = {}
    for query_id, query_scores, query_rows in zip(query_ids, scores, rows):
        ranking = {doc_ids[row]: float(score) for score, row in zip(query_scores, query_rows)
                   if row >= 0 and doc_ids[row] != query_id}
        run[query_id] = dict(list(ranking.items())[:depth])
    return run


def score_run(run: Run, qrels: Qrels, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean nDCG@k and Recall@k over the queries of ``qrels``, computed by pytrec_eval."""
    if not qrels:
        raise DiveError("no queries to evaluate")
    check_cutoffs(ks)
    measures = {f"{measure}.{k}" for measure in _MEASURES.values() for k in ks}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    metrics = {}
    for name in metric_names(ks):
        measure, k = name.split("@")
        key = f"{_MEASURES[measure]}_{k}"
        # A query with no retrieved document is absent from pytrec_eval's output: it scores 0.
        metrics[name] = float(sum(per_query.get(q, {}).get(key, 0.0) for q in qrels) / len(qrels))
    return metrics


def per_query_scores(run: Run, qrels: Qrels, metric: str = "ndcg@10") -> dict[str, float]:
    """``metric`` (e.g. ``ndcg@10``) of every query of ``qrels`` by pytrec_eval, 0 for a query with no
    retrieved document: the values whose mean :func:`score_run` reports (paired tests use them)."""
    if not qrels:
        raise DiveError("no queries to evaluate")
    measure, _, k = metric.partition("@")
    if measure not in _MEASURES or not k.isdigit():
        raise DiveError(f"unknown metric {metric!r}; expected one of {', '.join(_MEASURES)} with @k, e.g. ndcg@10")
    check_cutoffs([int(k)])
    key = f"{_MEASURES[measure]}_{k}"
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {f"{_MEASURES[measure]}.{k}"}).evaluate(run)
    return {query_id: float(per_query.get(query_id, {}).get(key, 0.0)) for query_id in qrels}


def evaluate_searcher(searcher: Searcher, query_vectors: np.ndarray, eval_set: EvalSet,
                      ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """nDCG@k / Recall@k of ``searcher``'s rankings for ``query_vectors`` (aligned with
    ``eval_set.query_ids``, in the searcher's query space), its rows being ``eval_set.doc_ids``."""
    run = search_run(searcher, query_vectors, eval_set.query_ids, eval_set.doc_ids, max(ks))
    return score_run(run, eval_set.qrels, ks)


def evaluate_vectors(query_vectors: np.ndarray, doc_vectors: np.ndarray, eval_set: EvalSet,
                     ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Metrics of already-compressed ``query_vectors`` (aligned with ``eval_set.query_ids``)."""
    if query_vectors.shape[1] != doc_vectors.shape[1]:
        raise DiveError(f"query dimension {query_vectors.shape[1]} != document dimension {doc_vectors.shape[1]}")
    return evaluate_searcher(FlatSearch.from_vectors(doc_vectors), query_vectors, eval_set, ks)


def evaluate_method(method: Transformer | None, eval_set: EvalSet, ks: Sequence[int] = DEFAULT_KS,
                    doc_vectors: np.ndarray | None = None) -> dict[str, float]:
    """Metrics after passing queries and documents through ``method`` (``None`` = frozen): any
    object with ``transform``, e.g. a fitted :class:`~dive.methods.base.Method`.

    ``doc_vectors`` may carry the already-transformed corpus to avoid transforming it again.
    """
    if method is None:
        return evaluate_vectors(eval_set.query_vectors, eval_set.doc_vectors, eval_set, ks)
    if doc_vectors is None:
        doc_vectors = method.transform(eval_set.doc_vectors)
    return evaluate_vectors(method.transform(eval_set.query_vectors), doc_vectors, eval_set, ks)


def retention(metrics: dict[str, float], frozen_metrics: dict[str, float]) -> dict[str, float]:
    """Compressed metric / frozen full-dimension metric, per metric (NaN where frozen is 0)."""
    return {name: (metrics[name] / frozen_metrics[name]) if frozen_metrics.get(name) else float("nan")
            for name in metrics}
