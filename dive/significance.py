"""Is a difference in retrieval quality more than noise? Intervals and paired tests over test queries.

* :func:`t_interval`: the mean of per-query scores with its Student-t confidence interval
  (mean +- t(1 - alpha/2, n - 1) * sd / sqrt(n)), the interval the issue asks beside a test result.
* :func:`paired_test`: one paired significance test between two runs on the same queries, by ranx
  (``student``: paired t-test; ``fisher``: Fisher's randomisation test), with ranx's own mean of
  each run so callers can cross-check it against pytrec_eval's (:mod:`dive.evaluate`), which stays
  the reference for metric values.

Both take per-query values on the same queries; neither ever chooses anything, so they are only
called once a choice is made (``dive fit``) or on a cell's test result (``dive reproduce`` marks).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from dive import checks
from dive.data.beir import Qrels
from dive.errors import DiveError
from dive.evaluate import Run

STAT_TESTS = ("student", "fisher")
"""ranx's paired tests: ``student`` (paired t-test) and ``fisher`` (Fisher's randomisation test)."""

DEFAULT_STAT_TEST = "student"
"""The paired t-test: ranx's default, and the test Sakai (SIGIR 2014 'Statistical reform in IR?') recommends
reporting with effect sizes and intervals."""

CONFIDENCE = 0.95
"""Two-sided 95% intervals and p < 0.05 significance: the IR convention (Sakai, 2014; ranx's docs)."""

SIGNIFICANCE_METRIC = "ndcg@10"
"""The metric cells are tested on against frozen (the reports' headline metric)."""

PERMUTATIONS = 1000
"""Fisher's randomisation test: ranx's default number of permutations."""


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` queries with its two-sided ``confidence`` interval [low, high]."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float
    method: str = "Student t-interval over queries"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean of ``values`` with its Student-t interval (a single value has a zero-width interval)."""
    from scipy import stats

    checks.finite("confidence", confidence)
    if not 0 < confidence < 1:
        raise checks.InvalidSetting("confidence", "must be between 0 and 1", confidence)
    scores = np.asarray(values, dtype=np.float64)
    if scores.size == 0:
        raise DiveError("no per-query scores to summarise")
    mean = float(scores.mean())
    if scores.size == 1:
        return Interval(mean, mean, mean, 1, confidence)
    half = float(stats.t.ppf(0.5 + confidence / 2, scores.size - 1) * scores.std(ddof=1) / math.sqrt(scores.size))
    return Interval(mean, mean - half, mean + half, int(scores.size), confidence)


def paired_test(qrels: Qrels, run_a: Run, run_b: Run, metric: str = "ndcg@10", stat_test: str = DEFAULT_STAT_TEST,
                seed: int = 0, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """ranx's paired ``stat_test`` of ``run_a`` against ``run_b`` on ``metric`` over the queries of ``qrels``.

    Returns the test, its p-value, whether p < 1 - ``confidence``, ranx's mean of each run, and the
    queries where a wins, ties and loses.
    """
    checks.one_of("stat_test", stat_test, STAT_TESTS)
    from ranx import Qrels as RanxQrels
    from ranx import Run as RanxRun
    from ranx import compare

    judged = RanxQrels(_plain(qrels, int))
    runs = [RanxRun(trec_order({query: run.get(query, {}) for query in qrels}), name=name)
            for name, run in (("a", run_a), ("b", run_b))]
    alpha = 1 - confidence
    with warnings.catch_warnings():  # numba's cast warnings inside ranx say nothing about the result
        warnings.simplefilter("ignore")
        report = compare(judged, runs, metrics=[metric], stat_test=stat_test, max_p=alpha,
                         n_permutations=PERMUTATIONS, random_seed=seed).to_dict()
    p_value = float(report["a"]["comparisons"]["b"][metric])
    if math.isnan(p_value):  # every query scored the same by both: no difference to test
        p_value = 1.0
    record = report["a"]["win_tie_loss"]["b"][metric]
    return {"test": stat_test, "metric": metric, "p": p_value, "significant": p_value < alpha, "alpha": alpha,
            "ranx_mean_a": float(report["a"]["scores"][metric]), "ranx_mean_b": float(report["b"]["scores"][metric]),
            "wins": int(record["W"]), "ties": int(record["T"]), "losses": int(record["L"])}


def trec_order(run: Run) -> Run:
    """``run`` with strictly decreasing scores in trec_eval's order: by score, ties by document id descending.

    pytrec_eval breaks score ties that way; ranx breaks them otherwise. Quantised codes (binary, pq) tie
    often, so without this the two tools would score different rankings of the same run.
    """
    ordered = {}
    for query, ranking in run.items():
        docs = sorted(ranking.items(), key=lambda item: (float(item[1]), str(item[0])), reverse=True)
        ordered[str(query)] = {str(doc): float(len(docs) - rank) for rank, (doc, _) in enumerate(docs)}
    return ordered


def _plain(nested: Mapping[str, Mapping[str, Any]], kind: type) -> dict[str, dict[str, Any]]:
    """A copy with plain str keys and ``kind`` values (ranx's numba structures take nothing else)."""
    return {str(query): {str(doc): kind(score) for doc, score in docs.items()} for query, docs in nested.items()}
