"""The containers that flow between layers: frozen embeddings, training sets, evaluation sets."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from dive.data.beir import Qrels
from dive.data.splits import Split
from dive.data.triplets import MiningConfig, TripletSampler, build_sampler
from dive.errors import DiveError
from dive.identity import ModelIdentity


def check_vectors(vectors: np.ndarray, what: str, dim: int | None = None, n_rows: int | None = None) -> np.ndarray:
    """Validate a ``[n, d]`` float matrix and return it as contiguous float32.

    Raises DiveError naming ``what`` for a wrong shape or dimension, NaN/inf, or all-zero rows.
    """
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise DiveError(f"{what}: expected a 2-D array [n, dim], got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise DiveError(f"{what}: expected floating-point vectors, got dtype {array.dtype}")
    if dim is not None and array.shape[1] != dim:
        raise DiveError(f"{what}: dimension {array.shape[1]} does not match the expected {dim}")
    if n_rows is not None and array.shape[0] != n_rows:
        raise DiveError(f"{what}: {array.shape[0]} vectors but {n_rows} ids")
    array = np.ascontiguousarray(array, dtype=np.float32)
    bad_rows = ~np.isfinite(array).all(axis=1)
    if bad_rows.any():
        raise DiveError(f"{what}: row {int(np.argmax(bad_rows))} contains NaN or inf "
                        f"({int(bad_rows.sum())} such rows)")
    zero_rows = ~array.any(axis=1)
    if zero_rows.any():
        raise DiveError(f"{what}: row {int(np.argmax(zero_rows))} is an all-zero vector")
    return array


@dataclass(frozen=True)
class Embeddings:
    """Frozen, L2-normalised embeddings of a dataset's documents and queries, with their ids."""

    doc_ids: list[str]
    doc_vectors: np.ndarray
    query_ids: list[str]
    query_vectors: np.ndarray
    model: ModelIdentity | None = None
    """What made the vectors (None: a user's vectors folder without ``model.json``)."""

    def __post_init__(self) -> None:
        doc_vectors = check_vectors(self.doc_vectors, "document vectors", n_rows=len(self.doc_ids))
        query_vectors = check_vectors(self.query_vectors, "query vectors", dim=doc_vectors.shape[1],
                                      n_rows=len(self.query_ids))
        object.__setattr__(self, "doc_vectors", doc_vectors)
        object.__setattr__(self, "query_vectors", query_vectors)
        for what, ids in (("document", self.doc_ids), ("query", self.query_ids)):
            if len(set(ids)) != len(ids):
                seen: set[str] = set()
                duplicate = next(identifier for identifier in ids if identifier in seen or seen.add(identifier))
                raise DiveError(f"{what} id {duplicate!r} appears twice in the embeddings")

    @property
    def dim(self) -> int:
        return self.doc_vectors.shape[1]

    def queries(self, query_ids: list[str]) -> np.ndarray:
        """Vectors of ``query_ids``, in that order."""
        row = {query_id: index for index, query_id in enumerate(self.query_ids)}
        missing = [query_id for query_id in query_ids if query_id not in row]
        if missing:
            raise DiveError(f"query id {missing[0]!r} has no vector ({len(missing)} missing)")
        return self.query_vectors[[row[query_id] for query_id in query_ids]]

    def eval_set(self, qrels: Qrels) -> "EvalSet":
        query_ids = sorted(qrels)
        return EvalSet(query_ids, self.queries(query_ids), qrels, self.doc_ids, self.doc_vectors)


@dataclass(frozen=True)
class EvalSet:
    """Queries with judgements, searched against the whole corpus."""

    query_ids: list[str]
    query_vectors: np.ndarray
    qrels: Qrels
    doc_ids: list[str]
    doc_vectors: np.ndarray


@dataclass(frozen=True)
class TrainSet:
    """What ``method.fit`` receives.

    Supervised methods draw triplets of row indices with :meth:`triplets` (fresh negatives
    each call) into ``query_vectors`` and ``doc_vectors``; unsupervised methods fit on
    ``doc_vectors`` (the whole corpus) alone.
    """

    query_vectors: np.ndarray
    doc_vectors: np.ndarray
    sampler: TripletSampler | None
    validation: EvalSet | None = None
    dataset: str = ""

    @property
    def dim(self) -> int:
        return self.doc_vectors.shape[1]

    @property
    def n_triplets(self) -> int:
        return 0 if self.sampler is None else len(self.sampler)

    def fingerprint(self) -> str:
        """SHA-256 of the vectors and the labelled pairs: what a training checkpoint must match."""
        digest = hashlib.sha256()
        for array in (self.query_vectors, self.doc_vectors):
            digest.update(np.ascontiguousarray(array).tobytes())
        if self.sampler is not None:
            for array in (self.sampler.positive_pairs, self.sampler.candidate_rows, self.sampler.grades):
                if array is not None:
                    digest.update(np.ascontiguousarray(array).tobytes())
            digest.update(str(self.sampler.negatives_per_positive).encode())
        return digest.hexdigest()

    def triplets(self, rng: np.random.Generator) -> np.ndarray:
        """``[n, 3]`` rows (query row, positive doc row, negative doc row), negatives re-drawn."""
        if self.sampler is None:
            raise DiveError("this training set has no labelled pairs; the method needs query-document pairs")
        return self.sampler.sample(rng)

    def graded_pairs(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows (query row, higher-graded doc row, lower-graded doc row), weights ``y_hi - y_lo`` and
        grades ``y_hi`` (see :meth:`~dive.data.triplets.TripletSampler.graded_pairs`), negatives re-drawn."""
        if self.sampler is None:
            raise DiveError("this training set has no labelled pairs; the method needs query-document pairs")
        return self.sampler.graded_pairs(rng)

    @classmethod
    def from_split(cls, embeddings: Embeddings, split: Split, mining: MiningConfig = MiningConfig(),
                   dataset: str = "") -> "TrainSet":
        """Training set of ``split.train`` with hard negatives mined from the frozen embeddings."""
        if not split.train:
            raise DiveError(f"split {split.name!r} has no training queries")
        query_ids = sorted(split.train)
        query_vectors = embeddings.queries(query_ids)
        sampler = build_sampler(query_ids, query_vectors, embeddings.doc_ids, embeddings.doc_vectors,
                                split.train, mining)
        validation = embeddings.eval_set(split.validation) if split.validation else None
        return cls(query_vectors, embeddings.doc_vectors, sampler, validation, dataset)

    @classmethod
    def unsupervised(cls, doc_vectors: np.ndarray, dataset: str = "") -> "TrainSet":
        """A training set of corpus vectors only, for PCA, autoencoders and similar."""
        return cls(np.empty((0, doc_vectors.shape[1]), np.float32), check_vectors(doc_vectors, "document vectors"),
                   None, None, dataset)
