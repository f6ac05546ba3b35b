"""The interface every index engine implements (faiss, LanceDB, Qdrant), and what they share.

An engine stores a compressed corpus where a team searches it, and reads it back as a
:class:`~dive.search.Searcher` over the pipeline's float output (the method's unit vectors,
inner product = cosine), so dive's evaluation (:func:`dive.evaluate.evaluate_searcher`) scores
any index through the engine's own search.

What is stored, per codec (:func:`stored_vectors`): the pipeline's float output without a
codec; with a codec whose search is "float query x decoded documents" (float16, int8, pq,
lossless) its reconstruction ``codec.decode(codes)``, so an exhaustive search of the database
ranks exactly as dive's evaluation of that pipeline. On top of that each engine configures its
own storage for the codec where it has one (Qdrant scalar int8, binary, product quantisation;
LanceDB IVF-PQ), which is approximate; :class:`EngineConfig` says which search is used.

An engine writes into a folder it is given (a temp folder that :mod:`dive.index` renames into
place once complete, so nothing half-written is left) and returns the fields it needs to open
it again; they go into the index manifest, with paths relative to the index.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from dive import checks
from dive.errors import DiveError
from dive.pipeline import Pipeline
from dive.search import Searcher

DEFAULT_COLLECTION = "dive"
"""Name of the LanceDB table / Qdrant collection holding the corpus."""
ROW_FIELD = "row"
"""The column (LanceDB) or point id (Qdrant) holding the corpus row number: ids of results map back through it."""
DOC_ID_FIELD = "doc_id"
"""The column (LanceDB) or payload key (Qdrant) holding the document id."""
VECTOR_FIELD = "vector"
"""The LanceDB column holding the stored vectors."""
DECODED_CODECS = ("float16", "int8", "pq", "lossless")
"""Codecs whose search is the float query's inner product with the decoded documents: storing the
reconstruction and searching it exhaustively reproduces dive's evaluation."""


@dataclass(frozen=True)
class EngineConfig:
    """How ``dive index`` stores and searches a compressed corpus.

    Attributes:
        engine: ``lancedb`` (default: embedded, a folder, no server), ``qdrant`` (local mode in the
            index folder, or the server at ``url``) or ``faiss`` (one index file).
        url: Qdrant only: a server or cluster, e.g. ``http://localhost:6333``; None = local mode
            (``QdrantClient(path=...)`` inside the index folder: tests and laptops).
        factory: faiss only: an ``index_factory`` string (``HNSW32``, ``IVF64,PQ16``) applied to the
            stored float vectors instead of the exact index dive picks per codec.
        search_params: faiss ``--factory`` only: search-time parameters in faiss's ``ParameterSpace``
            syntax (``nprobe=16``, ``efSearch=128``, ``nprobe=16,ht=...``), stored and applied on every
            load. None = faiss's defaults (``nprobe=1``, ``efSearch=16``: fast, low recall).
        collection: the LanceDB table / Qdrant collection name.
        exact: search every stored vector (Qdrant ``exact=True``, no LanceDB ANN index): ranks as
            dive's evaluation. None = exact unless the codec maps to the database's own
            approximate storage (LanceDB IVF-PQ for pq; Qdrant quantisation for int8, pq, binary).
        rescore: Qdrant quantised search: re-rank candidates by the stored float vectors (dive's
            reconstruction), which is what matches dive's evaluation; False ranks by Qdrant's own codes.
        oversampling: Qdrant quantised search: candidates fetched per result before rescoring. Default
            4.0: sentence-transformers' ``rescore_multiplier`` and Qdrant's documented example range.
        nprobes: LanceDB IVF-PQ: partitions scanned per query. Default 20: LanceDB's own default.
        refine_factor: LanceDB IVF-PQ: re-rank ``refine_factor * k`` candidates by the stored floats;
            0 = rank by the PQ codes alone. Default 10: LanceDB's documented example.
    """

    engine: str = "lancedb"
    url: str | None = None
    factory: str | None = None
    search_params: str | None = None
    collection: str = DEFAULT_COLLECTION
    exact: bool | None = None
    rescore: bool = True
    oversampling: float = 4.0
    nprobes: int = 20
    refine_factor: int = 10

    def __post_init__(self) -> None:
        if not isinstance(self.collection, str) or not self.collection.strip():
            raise checks.InvalidSetting("collection", "must be a non-empty name", self.collection)
        checks.at_least("oversampling", self.oversampling, 1)
        checks.whole_at_least("nprobes", self.nprobes, 1)
        checks.whole_at_least("refine_factor", self.refine_factor, 0)


@dataclass
class Corpus:
    """What an engine stores: one row per document.

    Attributes:
        doc_ids: document ids, row ``i`` = ``doc_ids[i]``.
        output: ``[n, dim]`` float32, the pipeline's float output (``pipeline.transform``) of the documents.
        columns: other columns of the input (a pyarrow Table of ``n`` rows) carried with the vectors, or None.
    """

    doc_ids: list[str]
    output: np.ndarray
    columns: Any = None


def stored_vectors(pipeline: Pipeline, output: np.ndarray) -> np.ndarray:
    """The float32 vectors a database stores for the pipeline's ``output`` (see the module docstring):
    binary's reconstruction is centred on the codec's thresholds, so a database's sign bits are dive's bits."""
    codec = pipeline.codec
    if codec is None:
        return output
    if codec.name in DECODED_CODECS:
        return np.ascontiguousarray(codec.decode(codec.encode(output)), dtype=np.float32)
    if codec.name == "binary":
        return np.ascontiguousarray(codec.decode(codec.encode(output)) - codec.threshold, dtype=np.float32)
    raise DiveError(f"{codec.name}: has no database form")


class Engine(ABC):
    """One storage engine. Subclasses set ``name`` and implement :meth:`write` and :meth:`open`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    layout: ClassVar[str] = "folder"
    """``folder``: the index is a folder holding the manifest, the pipeline and the data; ``file``: one
    index file with its manifest beside it (faiss)."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.check_config(config)

    def check_config(self, config: EngineConfig) -> None:
        """Refuse settings this engine does not take (one line)."""
        if config.factory is not None or config.search_params is not None:
            raise DiveError(f"--factory and --search-params are for --engine faiss, not {self.name}")
        if config.url is not None:
            raise DiveError(f"--url is for --engine qdrant, not {self.name}")

    def exact(self, pipeline: Pipeline) -> bool:
        """Whether this engine's search of ``pipeline``'s corpus is exhaustive (ranks as dive's evaluation)."""
        if self.config.exact is not None:
            return self.config.exact
        return not self.approximate_codec(pipeline)

    def approximate_codec(self, pipeline: Pipeline) -> bool:
        """True when ``pipeline``'s codec maps to this engine's own approximate storage."""
        return False

    @abstractmethod
    def write(self, pipeline: Pipeline, corpus: Corpus, target: Path) -> dict[str, Any]:
        """Store ``corpus`` at ``target`` (an empty folder of the index, or the index file for the ``file``
        layout); return the manifest fields :meth:`open` needs (JSON, paths relative to ``target``)."""

    @abstractmethod
    def open(self, target: Path, fields: dict[str, Any], pipeline: Pipeline, n_docs: int) -> Searcher:
        """A :class:`~dive.search.Searcher` over the stored corpus taking the pipeline's float output
        (the rows it returns are corpus rows; ``-1`` pads a short result)."""


def score_offset(pipeline: Pipeline) -> np.ndarray | None:
    """What :func:`stored_vectors` subtracted from every stored vector (binary's per-dimension thresholds), or None: a
    searcher adds ``query . offset`` back, so scores are the inner product with the reconstruction."""
    codec = pipeline.codec
    return codec.threshold if codec is not None and codec.name == "binary" else None


def pad_results(hits: list[list[tuple[float, int]]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, rows)`` ``[n_queries, k]`` from per-query ``(score, row)`` lists (best first), padded
    with ``-inf`` / ``-1`` as faiss pads them."""
    scores = np.full((len(hits), k), -np.inf, dtype=np.float32)
    rows = np.full((len(hits), k), -1, dtype=np.int64)
    for query, query_hits in enumerate(hits):
        for rank, (score, row) in enumerate(query_hits[:k]):
            scores[query, rank], rows[query, rank] = score, row
    return scores, rows
