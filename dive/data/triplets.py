"""Training triplets ``(query, relevant doc, non-relevant doc)`` per SPEC "Training data".

Negatives are re-drawn every epoch. ``hard`` negatives come from the frozen model's top-K
documents for the query that are not relevant; ``random`` ones from the whole corpus. A
document whose id equals the query id is never a negative (ArguAna, Quora).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from dive.errors import DiveError
from dive.search import exact_search


@dataclass(frozen=True)
class MiningConfig:
    """Negative sampling.

    Attributes:
        negatives: ``hard`` (SPEC default) or ``random``.
        hard_top_k: depth of the frozen ranking negatives are drawn from (SPEC: K=50).
        negatives_per_positive: triplets per relevant pair per epoch (SPEC default 4).
    """

    negatives: Literal["hard", "random"] = "hard"
    hard_top_k: int = 50
    negatives_per_positive: int = 4

    def __post_init__(self) -> None:
        if self.negatives not in ("hard", "random"):
            raise DiveError(f"negatives must be 'hard' or 'random', not {self.negatives!r}")
        if self.negatives_per_positive < 1 or self.hard_top_k < 1:
            raise DiveError("negatives_per_positive and hard_top_k must be at least 1")


class TripletSampler:
    """Draws a fresh set of triplets (as row indices) each epoch, fully vectorised.

    Args:
        positive_pairs: ``[n_pairs, 2]`` rows of (query row, relevant doc row).
        forbidden_keys: sorted ``query_row * n_docs + doc_row`` keys of the pairs that must
            never form a triplet (relevant documents and the document sharing the query's id).
        candidate_rows: ``[n_queries, K]`` hard-negative candidates per query, -1 padded,
            or ``None`` to sample the whole corpus.
        n_docs: corpus size.
        grades: ``[n_pairs]`` qrels score of each positive pair (default 1: binary labels).
    """

    def __init__(self, positive_pairs: np.ndarray, forbidden_keys: np.ndarray,
                 candidate_rows: np.ndarray | None, n_docs: int, negatives_per_positive: int,
                 grades: np.ndarray | None = None):
        self.positive_pairs = positive_pairs
        self.grades = np.ones(len(positive_pairs), np.float32) if grades is None else grades
        self.forbidden_keys = forbidden_keys
        self.candidate_rows = candidate_rows
        self.candidate_counts = None if candidate_rows is None else (candidate_rows >= 0).sum(axis=1)
        self.n_docs = n_docs
        self.negatives_per_positive = negatives_per_positive

    def __len__(self) -> int:
        return len(self.positive_pairs) * self.negatives_per_positive

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """Return ``[len(self), 3]`` int64 rows: (query row, positive doc row, negative doc row)."""
        pairs = np.repeat(self.positive_pairs, self.negatives_per_positive, axis=0)
        query_rows = pairs[:, 0]
        if self.candidate_rows is None:
            negatives = rng.integers(0, self.n_docs, size=len(pairs))
        else:
            counts = self.candidate_counts[query_rows]
            picks = np.floor(rng.random(len(pairs)) * np.maximum(counts, 1)).astype(np.int64)
            negatives = self.candidate_rows[query_rows, picks]
            empty = counts == 0
            negatives[empty] = rng.integers(0, self.n_docs, size=int(empty.sum()))
        self._resample_forbidden(query_rows, negatives, rng)
        return np.stack([query_rows, pairs[:, 1], negatives], axis=1).astype(np.int64)

    def graded_pairs(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every ordered pair of a query's candidate list, for graded list-wise losses.

        Returns ``[n, 3]`` rows (query row, higher-graded doc row, lower-graded doc row), their
        weights ``y_higher - y_lower`` and the grades ``y_higher``: each triplet of :meth:`sample`
        (a negative is graded 0) with its positive's grade, then every pair of the same query's
        relevant documents whose grades differ.
        """
        triplets = self.sample(rng)
        positive_grades = np.repeat(self.grades, self.negatives_per_positive)
        above, below = self._pairs_by_grade
        rows = np.stack([self.positive_pairs[above, 0], self.positive_pairs[above, 1],
                         self.positive_pairs[below, 1]], axis=1)
        higher = np.concatenate([positive_grades, self.grades[above]]).astype(np.float32)
        lower = np.concatenate([np.zeros_like(positive_grades), self.grades[below]]).astype(np.float32)
        return np.concatenate([triplets, rows]).astype(np.int64), higher - lower, higher

    @cached_property
    def _pairs_by_grade(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices ``(i, j)`` of positive pairs of the same query with ``grade_i > grade_j`` (fixed: built once)."""
        order = np.argsort(self.positive_pairs[:, 0], kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(self.positive_pairs[order, 0]) != 0])
        above, below = [], []
        for members in np.split(order, starts[1:]):
            grades = self.grades[members]
            higher, lower = np.nonzero(grades[:, None] > grades[None, :])
            above.append(members[higher])
            below.append(members[lower])
        return np.concatenate(above), np.concatenate(below)

    def _resample_forbidden(self, query_rows: np.ndarray, negatives: np.ndarray, rng: np.random.Generator) -> None:
        # Hard candidates are pre-filtered, so this only redraws random negatives that hit a
        # relevant or identical-id document.
        for _ in range(100):
            bad = np.isin(query_rows * self.n_docs + negatives, self.forbidden_keys)
            if not bad.any():
                return
            negatives[bad] = rng.integers(0, self.n_docs, size=int(bad.sum()))
        raise DiveError("could not draw a non-relevant negative: nearly every document is relevant")


def build_sampler(query_ids: list[str], query_vectors: np.ndarray, doc_ids: list[str],
                  doc_vectors: np.ndarray, qrels: dict[str, dict[str, int]],
                  config: MiningConfig = MiningConfig()) -> TripletSampler:
    """Index the positives of ``qrels`` (scores > 0) and mine hard-negative candidates.

    ``query_ids``/``query_vectors`` are the training queries, aligned row by row.
    """
    doc_row = {doc_id: row for row, doc_id in enumerate(doc_ids)}
    query_row = {query_id: row for row, query_id in enumerate(query_ids)}
    n_docs = len(doc_ids)
    pairs, grades, forbidden = [], [], []
    for query_id, docs in qrels.items():
        if query_id not in query_row:
            raise DiveError(f"training qrels name query {query_id!r}, which has no vector")
        q = query_row[query_id]
        for doc_id, score in docs.items():
            if doc_id not in doc_row:
                raise DiveError(f"training qrels name document {doc_id!r}, which is not in the corpus")
            forbidden.append(q * n_docs + doc_row[doc_id])
            if score > 0:
                pairs.append((q, doc_row[doc_id]))
                grades.append(score)
    if not pairs:
        raise DiveError("the training set is empty: no query has a relevant document")
    forbidden += [q * n_docs + doc_row[query_id] for query_id, q in query_row.items() if query_id in doc_row]
    forbidden_keys = np.unique(np.asarray(forbidden, dtype=np.int64))
    candidates = None
    if config.negatives == "hard":
        candidates = _hard_candidates(query_vectors, doc_vectors, forbidden_keys, config.hard_top_k)
    return TripletSampler(np.asarray(pairs, dtype=np.int64), forbidden_keys, candidates,
                          n_docs, config.negatives_per_positive, np.asarray(grades, dtype=np.float32))


def _hard_candidates(query_vectors: np.ndarray, doc_vectors: np.ndarray,
                     forbidden_keys: np.ndarray, top_k: int) -> np.ndarray:
    """Top-K frozen documents per query minus the forbidden ones, left-packed, -1 padded."""
    _, ranked = exact_search(query_vectors, doc_vectors, top_k)
    query_rows = np.arange(len(ranked))[:, None]
    forbidden = np.isin(query_rows * len(doc_vectors) + ranked, forbidden_keys) | (ranked < 0)
    order = np.argsort(forbidden, axis=1, kind="stable")
    packed = np.take_along_axis(ranked, order, axis=1)
    packed[np.take_along_axis(forbidden, order, axis=1)] = -1
    return packed
