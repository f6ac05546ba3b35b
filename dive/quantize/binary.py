"""binary: one bit per dimension, ``x > threshold`` (per-dimension corpus medians, or zero).

``threshold`` decides where a dimension's bit flips:

* ``"median"`` (default, what every dive result before this setting used): the corpus median
  of each dimension, fitted, so every bit splits the corpus in half (the most information per
  bit for an off-centre dimension).
* ``"zero"``: the sign, ``x > 0``, as Qdrant's binary quantization, pgvector's
  ``binary_quantize`` and sentence-transformers' ``quantize_embeddings(precision="ubinary")``
  compute it. With ``zero`` the codes equal those systems' bit for bit (packed most significant
  bit first, as ``np.packbits``), so dive's numbers predict what they return.

Search ranks documents by Hamming distance to the query's bits (faiss ``IndexBinaryFlat``).
Rescoring re-ranks the Hamming candidates by the inner product of the *float* query with a
float version of each candidate document. How many candidates: ``oversampling = F > 0`` takes
``ceil(F * k)`` (Qdrant's ``oversampling``, sentence-transformers' ``rescore_multiplier``: a
multiple of the results asked for), ``rescore = N > 0`` the absolute ``max(N, k)``; setting
both is refused. Which float version is the ``rescore_with`` setting, and it decides the bytes
stored:

* ``"bits"`` (default): the 1-bit reconstruction ``decode(codes)``. Each bit decodes to the
  mean of the corpus values on its side of the threshold in that dimension (two floats per
  dimension, fitted once, part of the codec, not per vector). Nothing extra is stored per
  vector: ``bytes_per_vector = ceil(dim / 8)``. This is the asymmetric-rescoring recipe of
  sentence-transformers' "Embedding Quantization" (float query x binary document), with
  centred, calibrated levels instead of {-1, +1}.
* ``"int8"``: an int8 code (per-dimension min/max, :class:`~dive.quantize.int8.Int8`) is
  stored beside the bits, as a vector database keeps an int8 copy on disk and reads only the
  candidates'. Those bytes are counted: ``bytes_per_vector = ceil(dim / 8) + dim``, and each
  code row is ``[packed bits | int8 code]``.

The uncompressed float32 documents are never used: their bytes would not be counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import faiss
import numpy as np

from dive.errors import DiveError
from dive.quantize.base import Codec, require_state
from dive.quantize.int8 import Int8

RESCORE_WITH = ("bits", "int8")
THRESHOLDS = ("median", "zero")
RESCORE_BLOCK = 1 << 22
"""Floats of gathered candidate documents held at a time while rescoring (16 MB)."""


@dataclass(frozen=True)
class BinaryConfig:
    """Binary quantisation with optional float rescoring.

    Attributes:
        rescore: re-rank the top ``max(rescore, k)`` Hamming candidates by float inner product
            (an absolute candidate count); 0 = off. Off by default so ``binary`` alone is the
            1-bit baseline; SPEC's table uses 100.
        oversampling: re-rank the top ``ceil(oversampling * k)`` Hamming candidates (a multiple
            of the results asked for, as Qdrant's ``oversampling`` and sentence-transformers'
            ``rescore_multiplier``, whose default is 4); 0 = off. Exclusive with ``rescore``.
        rescore_with: float documents used to rescore: ``"bits"`` (1-bit reconstruction, no
            extra bytes) or ``"int8"`` (int8 copy stored beside the bits, counted). Default
            ``"bits"`` keeps the codec at 1 bit per dimension.
        threshold: ``"median"`` (per-dimension corpus median) or ``"zero"`` (the sign, as
            Qdrant, pgvector and sentence-transformers binarise). Default ``"median"``: the
            setting every earlier dive record and saved codec used (a saved codec without this
            field loads as median); choose ``"zero"`` to predict those systems.
    """

    rescore: int = 0
    rescore_with: str = "bits"
    oversampling: float = 0.0
    threshold: str = "median"


class Binary(Codec):
    """Bits above a per-dimension threshold, Hamming search, optional rescoring (see module docstring)."""

    name = "binary"
    summary = "1 bit per dimension (x > corpus median, or x > 0), Hamming search, optional float rescoring"
    reference = ("SPEC 'Post-hoc compression'; Shakir, Aarsen & Lee, 'Embedding Quantization' "
                 "(Hugging Face blog, 2024): binary search with rescoring")
    Config = BinaryConfig

    def _check_config(self) -> None:
        rescore, rescore_with = self.config.rescore, self.config.rescore_with
        if isinstance(rescore, bool) or not isinstance(rescore, int) or rescore < 0:
            raise DiveError(f"{self.name}: rescore must be an integer >= 0, got {rescore!r}")
        if rescore_with not in RESCORE_WITH:
            raise DiveError(f"{self.name}: rescore_with must be one of {', '.join(RESCORE_WITH)}, got {rescore_with!r}")
        oversampling = self.config.oversampling
        if (isinstance(oversampling, bool) or not isinstance(oversampling, (int, float))
                or not math.isfinite(oversampling) or oversampling < 0):
            raise DiveError(f"{self.name}: oversampling must be a finite number >= 0, got {oversampling!r}")
        if oversampling > 0 and rescore > 0:
            raise DiveError(f"{self.name}: set rescore (absolute candidates) or oversampling (a multiple of k), "
                            "not both")
        if self.config.threshold not in THRESHOLDS:
            raise DiveError(f"{self.name}: threshold must be one of {', '.join(THRESHOLDS)}, "
                            f"got {self.config.threshold!r}")

    @property
    def rescores(self) -> bool:
        """True when Hamming candidates are re-ranked by float score (``rescore`` or ``oversampling``)."""
        return self.config.rescore > 0 or self.config.oversampling > 0

    def n_candidates(self, k: int, n_docs: int) -> int:
        """Hamming candidates fetched for ``k`` results: ``k``, ``max(rescore, k)`` or ``ceil(oversampling * k)``."""
        if self.config.oversampling > 0:
            wanted = math.ceil(self.config.oversampling * k)
        else:
            wanted = self.config.rescore
        return min(max(wanted, k), n_docs)

    @property
    def stores_int8(self) -> bool:
        return self.rescores and self.config.rescore_with == "int8"

    @property
    def bit_bytes(self) -> int:
        return (int(self.dim) + 7) // 8

    @property
    def code_width(self) -> int:
        return self.bit_bytes + (int(self.dim) if self.stores_int8 else 0)

    def _fit(self, vectors: np.ndarray) -> None:
        if self.config.threshold == "zero":
            threshold = np.zeros(vectors.shape[1], dtype=np.float32)
        else:
            threshold = np.median(vectors, axis=0).astype(np.float32)
        above = vectors > threshold
        n_above = above.sum(axis=0)
        n_below = len(vectors) - n_above
        sum_above = np.where(above, vectors, 0).sum(axis=0, dtype=np.float64)
        sum_below = vectors.sum(axis=0, dtype=np.float64) - sum_above
        self._set_levels(threshold,
                         np.where(n_below > 0, sum_below / np.maximum(n_below, 1), threshold).astype(np.float32),
                         np.where(n_above > 0, sum_above / np.maximum(n_above, 1), threshold).astype(np.float32))
        self.int8 = Int8().fit(vectors) if self.stores_int8 else None

    def _set_levels(self, threshold: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
        self.threshold, self.low, self.high = threshold, low, high

    def bits(self, vectors: np.ndarray) -> np.ndarray:
        """Packed ``x > threshold`` bits, ``[n, ceil(dim / 8)]`` uint8, most significant bit first, zero
        padding bits (with ``threshold="zero"``: sentence-transformers' ``ubinary`` codes)."""
        return np.packbits(vectors > self.threshold, axis=1)

    def _encode(self, vectors: np.ndarray) -> np.ndarray:
        packed = self.bits(vectors)
        if self.int8 is None:
            return packed
        return np.concatenate([packed, self.int8.encode(vectors)], axis=1)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        """The 1-bit reconstruction: per dimension, the corpus mean on the bit's side of the threshold."""
        bits = np.unpackbits(codes[:, :self.bit_bytes], axis=1, count=self.dim).astype(bool)
        return np.where(bits, self.high, self.low).astype(np.float32)

    def _search(self, queries: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n_candidates = self.n_candidates(k, len(codes)) if self.rescores else k
        distances, rows = self._bit_index(codes).search(self.bits(queries), n_candidates)
        if not self.rescores:
            return self.faiss_scores(distances), rows
        return self._rescore(queries, codes, rows, k)

    def _bit_index(self, codes: np.ndarray) -> faiss.IndexBinaryFlat:
        index = faiss.IndexBinaryFlat(8 * self.bit_bytes)
        index.add(np.ascontiguousarray(codes[:, :self.bit_bytes]))
        return index

    def faiss_index(self, codes: np.ndarray) -> faiss.IndexBinaryFlat:
        """``IndexBinaryFlat`` (Hamming) of the bits; rescoring needs the float query and stays in :meth:`search`."""
        if self.rescores:
            raise DiveError(f"{self.name}: rescoring is not part of a faiss index; index binary without rescore, "
                            "or use int8")
        return self._bit_index(self._check_codes(codes))

    def faiss_queries(self, query_vectors: np.ndarray) -> np.ndarray:
        return self.bits(query_vectors)

    def faiss_scores(self, raw_scores: np.ndarray) -> np.ndarray:
        """Agreement of the +-1 sign vectors: dim - 2 * Hamming (padding bits always agree)."""
        return (self.dim - 2 * raw_scores).astype(np.float32)

    def _rescore(self, queries: np.ndarray, codes: np.ndarray, candidates: np.ndarray,
                 k: int) -> tuple[np.ndarray, np.ndarray]:
        scores_out = np.empty((len(queries), k), np.float32)
        rows_out = np.empty((len(queries), k), np.int64)
        per_chunk = max(1, RESCORE_BLOCK // (candidates.shape[1] * self.dim))
        for start in range(0, len(queries), per_chunk):
            chunk = candidates[start:start + per_chunk]
            flat = chunk.reshape(-1)
            if self.int8 is not None:
                docs = self.int8.decode(np.ascontiguousarray(codes[flat, self.bit_bytes:]))
            else:
                docs = self._decode(codes[flat])
            docs = docs.reshape(*chunk.shape, self.dim)
            scores = np.einsum("qd,qnd->qn", queries[start:start + per_chunk], docs)
            # Stable sort on -score: ties keep their Hamming order.
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            scores_out[start:start + len(chunk)] = np.take_along_axis(scores, order, axis=1)
            rows_out[start:start + len(chunk)] = np.take_along_axis(chunk, order, axis=1)
        return scores_out, rows_out

    def state(self) -> dict[str, np.ndarray]:
        # The thresholds keep the state name "median" so codecs saved before ``threshold`` load unchanged.
        state = {"median": self.threshold, "low": self.low, "high": self.high}
        if self.int8 is not None:
            state.update({f"int8.{name}": array for name, array in self.int8.state().items()})
        return state

    def load_state(self, state, extra) -> None:
        arrays = [require_state(self, state, name, (self.dim,)) for name in ("median", "low", "high")]
        if not all(np.isfinite(array).all() for array in arrays):
            raise DiveError(f"{self.name}: saved thresholds or levels are not finite")
        if self.config.threshold == "zero" and np.any(arrays[0] != 0):
            raise DiveError(f"{self.name}: saved thresholds are not zero, but its config says threshold=zero")
        self._set_levels(*arrays)
        self.int8 = None
        if self.stores_int8:
            self.int8 = Int8()
            self.int8.dim = self.dim
            self.int8.load_state({name[len("int8."):]: array for name, array in state.items()
                                  if name.startswith("int8.")}, {})
