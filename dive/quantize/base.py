"""The one interface every post-hoc codec implements (SPEC "Post-hoc compression").

A codec compresses vectors that already exist (frozen or adapter outputs) without retraining:

* ``fit(corpus_vectors) -> self``: calibrate on the corpus (ranges, medians, codebooks).
* ``encode(vectors) -> codes``: a numpy array of codes (one row per vector, except for the
  ``lossless`` codec, whose codes are one entropy-coded byte blob for the whole matrix).
* ``decode(codes) -> float32 vectors``: the reconstruction, where the codec has one.
* ``search(query_vectors, codes, k) -> (scores, rows)``: rank the stored codes for float
  queries, best first (higher score = better), each ``[n_queries, min(k, n_docs)]``;
  ``searcher(codes)`` is the same search as a :class:`~dive.search.Searcher` over the codes.
* ``bytes_per_vector``: storage per corpus vector, the number SPEC asks next to every metric.
* ``save(dir)`` / ``load(dir)``: ``config.json`` (codec name, dive version, typed config, dim,
  SHA-256 of the state) + ``state.safetensors`` (numpy arrays). Loading never runs code (no pickle).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import faiss
import numpy as np
from safetensors.numpy import load as load_arrays_bytes

from dive.config import from_dict, to_dict
from dive.data.sets import EvalSet, check_vectors
from dive.errors import DiveError, short_repr
from dive.evaluate import DEFAULT_KS, Run, evaluate_searcher, search_run
from dive.search import exact_search
from dive.saved import CONFIG_FILE, numpy_payload, read_saved, write_saved

FORMAT = "dive-codec/1"
STATE_FILE = "state.safetensors"
SEARCH_BLOCK = 1 << 16
"""Corpus rows decoded at a time when searching: bounds memory to ~25 MB of float32 at 384-d."""


class Codec(ABC):
    """Base class of all codecs. Subclasses set the class attributes and ``Config``.

    Subclasses implement ``_fit`` and ``_encode``; they override ``code_width`` when a code row
    is not one ``code_dtype`` element per dimension (``bytes_per_vector`` follows from it),
    ``_decode`` where a reconstruction exists, and ``_search`` when ranking is not "inner
    product of the float query with the decoded documents".
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    reference: ClassVar[str]
    Config: ClassVar[type]
    code_dtype: ClassVar[type] = np.uint8
    exact_float32_input: ClassVar[bool] = False
    """True for codecs that promise bit-exact round trips: inputs must already be float32."""

    def __init__(self, config: Any | None = None, **overrides: Any):
        base = config if config is not None else self.Config()
        if not isinstance(base, self.Config):
            raise DiveError(f"{self.name}: config must be a {self.Config.__name__}, got {type(base).__name__}")
        self.config = from_dict(self.Config, overrides, base) if overrides else base
        self._check_config()
        self.dim: int | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config}, dim={self.dim})"

    # ----- public interface -------------------------------------------------------------------

    @property
    def is_fitted(self) -> bool:
        return self.dim is not None

    def fit(self, corpus_vectors: np.ndarray) -> "Codec":
        """Calibrate on ``[n, dim]`` corpus vectors; returns ``self``."""
        vectors = self._check_vectors(corpus_vectors, "corpus vectors", None)
        if len(vectors) == 0:
            raise DiveError(f"{self.name}: no corpus vectors to fit on")
        self._check_dim(vectors.shape[1], len(vectors))
        self._fit(vectors)
        self.dim = int(vectors.shape[1])
        return self

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """Codes of ``[n, dim]`` float vectors."""
        self._require_fitted("encode")
        vectors = self._check_vectors(vectors, "vectors to encode", self.dim)
        if len(vectors) == 0:
            raise DiveError(f"{self.name}: no vectors to encode")
        return self._encode(vectors)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """``[n, dim]`` float32 reconstruction of ``codes``."""
        self._require_fitted("decode")
        return self._decode(self._check_codes(codes))

    def search(self, query_vectors: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` stored codes per float query: ``(scores float32, rows int64)``, best first.

        ``k`` is capped at the number of stored vectors.
        """
        self._require_fitted("search")
        queries = self._check_vectors(query_vectors, "query vectors", self.dim, exact=False)
        codes = self._check_codes(codes)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise DiveError(f"{self.name}: k must be a positive integer, got {k!r}")
        n_docs = self.n_codes(codes)
        if n_docs == 0:
            raise DiveError(f"{self.name}: no stored codes to search")
        scores, rows = self._search(queries, codes, min(int(k), n_docs))
        return np.ascontiguousarray(scores, dtype=np.float32), np.ascontiguousarray(rows, dtype=np.int64)

    def searcher(self, codes: np.ndarray) -> "CodesSearch":
        """A :class:`~dive.search.Searcher` over stored ``codes``: :meth:`search` with the codes bound."""
        self._require_fitted("search")
        return CodesSearch(self, self._check_codes(codes))

    @property
    def bytes_per_vector(self) -> float:
        """Bytes stored per corpus vector: for fixed-size codes, the code row's size in bytes."""
        self._require_fitted("bytes_per_vector")
        return self.code_width * np.dtype(self.code_dtype).itemsize

    def bytes_per_vector_at(self, dim: int, n_rows: int | None = None) -> float:
        """What :attr:`bytes_per_vector` will be once fitted on ``n_rows`` (when known) ``dim``-d vectors,
        known before fitting (``dive fit`` checks a storage budget with it). DiveError when this codec
        cannot fit them (pq: ``m`` must divide ``dim``, ``2**nbits`` centroids need as many rows) or its
        size is only measured after encoding (lossless)."""
        self._check_dim(dim, n_rows)
        probe = copy.copy(self)
        probe.dim = int(dim)
        return float(probe.bytes_per_vector)

    @property
    def code_width(self) -> int:
        """Elements of ``code_dtype`` per code row (default: one per dimension)."""
        return int(self.dim)

    def n_codes(self, codes: np.ndarray) -> int:
        """Number of vectors held by (already checked) ``codes``."""
        return int(codes.shape[0])

    # ----- hooks --------------------------------------------------------------------------------

    def _check_config(self) -> None:
        """Raise DiveError for settings that are invalid whatever the data."""

    def _check_dim(self, dim: int, n_rows: int | None) -> None:
        """Raise DiveError when the corpus (its dim, or its size when known) cannot be fitted."""

    @abstractmethod
    def _fit(self, vectors: np.ndarray) -> None: ...

    @abstractmethod
    def _encode(self, vectors: np.ndarray) -> np.ndarray: ...

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        raise DiveError(f"{self.name}: codes cannot be decoded back to float vectors")

    def _search(self, queries: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Default: inner product of the float queries with the decoded codes, decoded in blocks."""
        return blocked_search(queries, self.n_codes(codes), lambda start, stop: self._decode(codes[start:stop]), k)

    def faiss_index(self, codes: np.ndarray) -> Any:
        """A faiss index holding ``codes`` that ranks queries like :meth:`search` (``dive index``).

        Searched with :meth:`faiss_queries`. Codecs without a plain faiss equivalent raise.
        """
        raise DiveError(f"{self.name}: has no faiss index form; `dive index` supports no codec, float16, int8, "
                        "pq and binary without rescoring")

    def faiss_queries(self, query_vectors: np.ndarray) -> np.ndarray:
        """Queries as :meth:`faiss_index`'s index expects them (float32 by default)."""
        return np.ascontiguousarray(query_vectors, dtype=np.float32)

    def faiss_scores(self, raw_scores: np.ndarray) -> np.ndarray:
        """:meth:`faiss_index`'s search output as scores, higher = better (as :meth:`search` returns)."""
        return raw_scores

    def faiss_searcher(self, index: Any) -> "FaissCodesSearch":
        """:meth:`faiss_index`'s ``index`` as a :class:`~dive.search.Searcher` taking float queries."""
        return FaissCodesSearch(self, index)

    def state(self) -> dict[str, np.ndarray]:
        """Fitted arrays to save (empty for stateless codecs)."""
        return {}

    def load_state(self, state: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        """Restore the fitted state from :meth:`state` and :meth:`extra`."""

    def extra(self) -> dict[str, Any]:
        """Small JSON-able fitted facts saved in ``config.json`` (e.g. measured sizes)."""
        return {}

    # ----- validation ---------------------------------------------------------------------------

    def _require_fitted(self, action: str) -> None:
        if not self.is_fitted:
            raise DiveError(f"{self.name}: call fit() (or load a fitted codec) before {action}()")

    def _check_vectors(self, vectors: np.ndarray, what: str, dim: int | None, exact: bool = True) -> np.ndarray:
        if exact and self.exact_float32_input:
            dtype = getattr(vectors, "dtype", None)
            if dtype != np.float32:
                raise DiveError(f"{self.name}: {what} must be float32 for a bit-exact round trip, got {dtype}")
        return check_vectors(vectors, f"{self.name}: {what}", dim=dim)

    def _check_codes(self, codes: np.ndarray) -> np.ndarray:
        if not isinstance(codes, np.ndarray):
            raise DiveError(f"{self.name}: codes must be a numpy array, got {type(codes).__name__}")
        if codes.dtype != self.code_dtype:
            raise DiveError(f"{self.name}: codes must have dtype {np.dtype(self.code_dtype)}, got {codes.dtype}")
        if codes.ndim != 2 or codes.shape[1] != self.code_width:
            raise DiveError(f"{self.name}: codes must have shape [n, {self.code_width}], got {codes.shape}")
        return np.ascontiguousarray(codes)

    # ----- persistence --------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``state.safetensors`` into ``directory``, each atomically."""
        self._require_fitted("save")
        state = {name: np.ascontiguousarray(array) for name, array in self.state().items()}
        payload = numpy_payload(state, metadata={"format": FORMAT, "codec": self.name})
        return write_saved(directory, FORMAT, STATE_FILE, payload,
                           {"codec": self.name, "dim": self.dim, "config": to_dict(self.config),
                            "extra": self.extra()})

    @classmethod
    def load(cls, directory: str | Path) -> "Codec":
        """Load a codec of this class saved with :meth:`save` (any codec: :func:`dive.quantize.load_codec`)."""
        if cls is Codec:
            raise DiveError("Codec.load needs a codec class; dive.quantize.load_codec loads any codec")
        record, state = read_codec_folder(directory)
        return cls.from_saved(directory, record, state)

    @classmethod
    def from_saved(cls, directory: str | Path, record: dict[str, Any], state: dict[str, np.ndarray]) -> "Codec":
        """The codec held by a verified saved folder (``record`` and ``state`` from :func:`read_codec_folder`).

        Every field is type-checked before use and float state must be finite; a refusal is one
        DiveError naming the folder's ``config.json``.
        """
        where = Path(directory) / CONFIG_FILE
        if record.get("codec") != cls.name:
            raise DiveError(f"{directory}: holds a {short_repr(record.get('codec'))} codec, not {cls.name!r}")
        try:
            codec = cls(from_dict(cls.Config, record.get("config")))
        except DiveError as error:
            raise DiveError(f"{where}: {error}") from None
        dim = record.get("dim")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise DiveError(f"{where}: has an invalid dim {short_repr(dim)}")
        try:
            codec._check_dim(dim, None)
        except DiveError as error:
            raise DiveError(f"{where}: {error}") from None
        codec.dim = dim
        extra = record.get("extra", {})
        if not isinstance(extra, dict):
            raise DiveError(f"{where}: 'extra' must be a mapping, got {short_repr(extra)}")
        bad = next((name for name, array in state.items() if array.dtype.kind == "f" and not np.isfinite(array).all()),
                   None)
        if bad is not None:
            raise DiveError(f"{Path(directory) / STATE_FILE}: state {bad!r} holds NaN or infinite values; refused")
        try:
            codec.load_state(state, extra)
        except (KeyError, ValueError, TypeError) as error:
            if isinstance(error, DiveError):
                raise
            raise DiveError(f"{directory}: saved state does not fit the saved config ({error})") from None
        return codec


def read_codec_folder(directory: str | Path, config_sha256: str | None = None, config_mismatch: str = ""
                      ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and verify a saved codec folder (see :mod:`dive.saved`); with ``config_sha256``, its
    ``config.json`` must have that checksum (refused with ``config_mismatch`` otherwise)."""
    return read_saved(directory, FORMAT, STATE_FILE, load_arrays_bytes, config_sha256, config_mismatch)


def require_state(codec: Codec, state: dict[str, np.ndarray], name: str, shape: tuple[int, ...],
                  dtype: type = np.float32) -> np.ndarray:
    """``state[name]`` checked for shape and dtype, or a DiveError naming what is wrong."""
    if name not in state:
        raise DiveError(f"{codec.name}: saved state lacks {name!r}")
    array = state[name]
    if array.shape != shape or array.dtype != dtype:
        raise DiveError(f"{codec.name}: saved {name!r} is {array.dtype}{list(array.shape)}, "
                        f"expected {np.dtype(dtype)}{list(shape)}")
    return array


def blocked_search(queries: np.ndarray, n_docs: int, decode_block: Callable[[int, int], np.ndarray],
                   k: int, block: int = SEARCH_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-``k`` over documents decoded ``block`` rows at a time."""
    if n_docs <= block:
        return exact_search(queries, decode_block(0, n_docs), k)
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    for start in range(0, n_docs, block):
        stop = min(start + block, n_docs)
        scores, rows = exact_search(queries, decode_block(start, stop), k)
        heap.add_result(scores, np.where(rows >= 0, rows + start, -1))
    heap.finalize()
    return heap.D, heap.I


class CodesSearch:
    """A codec's stored codes as a :class:`~dive.search.Searcher`: float queries in the codec's
    input space, ranked by :meth:`Codec.search` (made by :meth:`Codec.searcher`)."""

    def __init__(self, codec: Codec, codes: np.ndarray) -> None:
        self.codec = codec
        self.codes = codes

    def __len__(self) -> int:
        return self.codec.n_codes(self.codes)

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.codec.search(query_vectors, self.codes, k)


class FaissCodesSearch:
    """A faiss index of codes (:meth:`Codec.faiss_index`) as a :class:`~dive.search.Searcher`: float
    queries go in through :meth:`Codec.faiss_queries`, scores come out through :meth:`Codec.faiss_scores`."""

    def __init__(self, codec: Codec, index: Any) -> None:
        self.codec = codec
        self.index = index

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raw_scores, rows = self.index.search(self.codec.faiss_queries(query_vectors), min(k, self.index.ntotal))
        return self.codec.faiss_scores(raw_scores), rows


def searcher_of_documents(codec: Codec, codes: np.ndarray, doc_ids: list[str]) -> CodesSearch:
    """``codec.searcher(codes)``, checked to hold one stored vector per document id."""
    searcher = codec.searcher(codes)
    if len(searcher) != len(doc_ids):
        raise DiveError(f"{codec.name}: {len(searcher)} stored vectors but {len(doc_ids)} document ids")
    return searcher


def retrieve_codes(codec: Codec, codes: np.ndarray, query_vectors: np.ndarray, query_ids: list[str],
                   doc_ids: list[str], depth: int) -> Run:
    """Like :func:`dive.evaluate.retrieve`, ranking ``codes`` with ``codec.search`` (identical ids removed)."""
    return search_run(searcher_of_documents(codec, codes, doc_ids), query_vectors, query_ids, doc_ids, depth)


def evaluate_codec(codec: Codec, eval_set: EvalSet, ks: Sequence[int] | None = None,
                   codes: np.ndarray | None = None) -> dict[str, float]:
    """nDCG@k / Recall@k of a fitted codec on ``eval_set`` (documents encoded unless ``codes`` given).

    Queries stay float (asymmetric search); report ``codec.bytes_per_vector`` beside the result.
    """
    ks = tuple(ks) if ks is not None else DEFAULT_KS
    if codes is None:
        codes = codec.encode(eval_set.doc_vectors)
    searcher = searcher_of_documents(codec, codes, eval_set.doc_ids)
    return evaluate_searcher(searcher, eval_set.query_vectors, eval_set, ks)
