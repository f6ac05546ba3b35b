"""LanceDB: the default engine, embedded (a folder, no server), one table per index.

The table holds one row per document: ``row`` (corpus row number), ``doc_id``, ``vector`` (float32,
see :func:`dive.engines.base.stored_vectors`) and any other column of the input. LanceDB has no
int8 vector storage, so float16 and int8 are stored as their float reconstruction and searched
flat (brute force, metric ``dot``): exact, as dive's evaluation. A pq codec maps to LanceDB's own
IVF-PQ index (``num_sub_vectors = m``, ``num_bits = nbits``, trained by LanceDB on the stored
vectors), searched with ``nprobes`` and ``refine_factor``: approximate. Binary maps to LanceDB's
binary vectors: the packed ``x > median`` bits (``uint8``) searched by Hamming distance, as dive
ranks binary without rescoring; binary with rescoring is refused (LanceDB has no float rescoring
of Hamming candidates: use Qdrant).

LanceDB reports ``_distance = 1 - dot`` for the ``dot`` metric, scores are ``1 - _distance``; for
``hamming`` the distance is the number of differing bits, scores are ``dim - 2 * distance`` (the
agreement of the +-1 sign vectors, as dive's binary search reports them).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dive.engines.base import (DOC_ID_FIELD, ROW_FIELD, VECTOR_FIELD, Corpus, Engine, EngineConfig, pad_results,
                               stored_vectors)
from dive.errors import DiveError
from dive.pipeline import Pipeline
from dive.search import Searcher
from dive.utils import require

FOLDER = "lancedb"
"""The LanceDB database folder inside the index folder."""
METRIC = "dot"
HAMMING = "hamming"
INDEX_TYPE = "IVF_PQ"
DISTANCE = "_distance"
QUERY_INDEX = "query_index"
RESERVED = (ROW_FIELD, DOC_ID_FIELD, VECTOR_FIELD)
LOG_VARIABLE, LOG_LEVEL = "LANCEDB_LOG", "error"
"""LanceDB's Rust core logs warnings (e.g. "dataset too small" while training IVF-PQ) to stderr unless told."""


def _lancedb() -> Any:
    os.environ.setdefault(LOG_VARIABLE, LOG_LEVEL)
    return require("lancedb", "db")


class LanceDBEngine(Engine):
    """An embedded LanceDB table: flat (exact) for float, float16 and int8; IVF-PQ for pq."""

    name = "lancedb"
    summary = "embedded LanceDB table (a folder, no server): flat exact search, or IVF-PQ for --codec pq"

    def approximate_codec(self, pipeline: Pipeline) -> bool:
        return pipeline.codec is not None and pipeline.codec.name == "pq"

    def write(self, pipeline: Pipeline, corpus: Corpus, target: Path) -> dict[str, Any]:
        binary = _is_binary(pipeline)
        if binary and pipeline.codec.config.rescore > 0:
            raise DiveError("lancedb: ranks binary codes by Hamming distance alone, without rescoring; index binary "
                            "without --rescore, or use --engine qdrant (binary quantisation with rescoring)")
        vectors = pipeline.codec.bits(corpus.output) if binary else stored_vectors(pipeline, corpus.output)
        database = _lancedb().connect(str(target / FOLDER))
        table = database.create_table(self.config.collection, data=_arrow_table(corpus, vectors))
        indexed = self._index(table, pipeline) if not self.exact(pipeline) else None
        return {"path": FOLDER, "table": self.config.collection, "metric": HAMMING if binary else METRIC,
                "ann_index": indexed, "nprobes": self.config.nprobes, "refine_factor": self.config.refine_factor}

    def _index(self, table: Any, pipeline: Pipeline) -> str:
        """Build LanceDB's IVF-PQ index with the pq codec's sub-vectors and bits (or refuse in one line)."""
        config = pipeline.codec.config
        ivf_pq = require("lancedb.index", "db").IvfPq
        try:
            table.create_index(VECTOR_FIELD,  # the new API takes the column first
                               config=ivf_pq(distance_type=METRIC, num_sub_vectors=config.m, num_bits=config.nbits))
        except (RuntimeError, ValueError, OSError) as error:
            raise DiveError(f"lancedb: cannot build its IVF-PQ index ({str(error).splitlines()[0][:200]})") from None
        return INDEX_TYPE

    def open(self, target: Path, fields: dict[str, Any], pipeline: Pipeline, n_docs: int) -> Searcher:
        folder = target / fields["path"]
        if not folder.is_dir():
            raise DiveError(f"{target}: its LanceDB folder {fields['path']!r} is missing")
        try:
            table = _lancedb().connect(str(folder)).open_table(fields["table"])
        except (ValueError, RuntimeError, OSError, FileNotFoundError) as error:
            raise DiveError(f"{folder}: cannot open LanceDB table {fields['table']!r} "
                            f"({str(error).splitlines()[0][:160]})") from None
        if table.count_rows() != n_docs:
            raise DiveError(f"{folder}: table {fields['table']!r} holds {table.count_rows()} rows, its manifest "
                            f"{n_docs} document ids (not the table `dive index` wrote)")
        metric = fields.get("metric", METRIC)
        if metric != (HAMMING if _is_binary(pipeline) else METRIC):
            raise DiveError(f"{folder}: its metric {metric!r} does not fit the pipeline's codec "
                            "(not the table `dive index` wrote)")
        return LanceDBSearch(table, fields, pipeline.codec if _is_binary(pipeline) else None)


def _is_binary(pipeline: Pipeline) -> bool:
    return pipeline.codec is not None and pipeline.codec.name == "binary"


def _arrow_table(corpus: Corpus, vectors: np.ndarray) -> Any:
    """The table's rows: ``row``, ``doc_id``, ``vector`` (float32, or packed bits as uint8) and the input's
    other columns."""
    import pyarrow as pa

    values = pa.array(np.ascontiguousarray(vectors).ravel(), pa.uint8() if vectors.dtype == np.uint8 else pa.float32())
    columns = {ROW_FIELD: pa.array(np.arange(len(vectors)), pa.int64()),
               DOC_ID_FIELD: pa.array(corpus.doc_ids, pa.string()),
               VECTOR_FIELD: pa.FixedSizeListArray.from_arrays(values, vectors.shape[1])}
    if corpus.columns is not None:
        clash = [name for name in corpus.columns.column_names if name in RESERVED]
        if clash:
            raise DiveError(f"input column {clash[0]!r} clashes with dive's own column; rename it")
        columns.update({name: corpus.columns.column(name) for name in corpus.columns.column_names})
    return pa.table(columns)


class LanceDBSearch:
    """A LanceDB table as a :class:`~dive.search.Searcher` over the pipeline's float output."""

    def __init__(self, table: Any, fields: dict[str, Any], binary: Any = None) -> None:
        self.table = table
        self.fields = fields
        self.binary = binary
        """The binary codec when the table holds its bits (queries become bits, Hamming distance)."""

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(query_vectors, dtype=np.float32)
        if self.binary is not None:
            queries = self.binary.bits(queries)
        metric = HAMMING if self.binary is not None else METRIC
        query = self.table.search(list(queries), vector_column_name=VECTOR_FIELD).metric(metric).limit(k)
        if self.fields.get("ann_index"):
            query = query.nprobes(int(self.fields.get("nprobes", EngineConfig.nprobes)))
            refine_factor = int(self.fields.get("refine_factor", EngineConfig.refine_factor))
            if refine_factor:
                query = query.refine_factor(refine_factor)
        result = query.select([ROW_FIELD]).to_arrow()
        which = (result.column(QUERY_INDEX).to_numpy() if QUERY_INDEX in result.column_names
                 else np.zeros(result.num_rows, dtype=np.int64))
        distances = result.column(DISTANCE).to_numpy().astype(np.float64)
        scores = self.binary.dim - 2.0 * distances if self.binary is not None else 1.0 - distances
        hits: list[list[tuple[float, int]]] = [[] for _ in queries]
        for query_number, score, row in zip(which, scores, result.column(ROW_FIELD).to_numpy()):
            hits[int(query_number)].append((float(score), int(row)))
        return pad_results([sorted(query_hits, key=lambda hit: -hit[0]) for query_hits in hits], k)
