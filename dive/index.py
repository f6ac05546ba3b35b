"""``dive index`` / ``dive search``: a faiss index of a compressed corpus, queried with text.

``build_index`` stores the corpus the way the pipeline stores it (float32 output, or codec
codes) in the faiss index that ranks like dive's evaluation: ``IndexFlatIP`` without a codec,
``IndexScalarQuantizer`` for float16/int8, ``IndexPQ`` for pq, ``IndexBinaryFlat`` for binary.
Float storage is searched through :class:`dive.search.FlatSearch`, which scans a single query
on every core; codec storage through the codec's :meth:`~dive.quantize.base.Codec.faiss_searcher`.
A loaded index is a :class:`dive.search.Searcher` over frozen query vectors, behind the pipeline's method.
Beside ``PATH`` it writes ``PATH.json``: the document ids (faiss stores row numbers), the
pipeline and model folders, and the index's SHA-256, checked on load. Both files are written
atomically, the index first; faiss index files are plain binary, never code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from dive import __version__
from dive.encode import EncodeConfig, encode_texts
from dive.errors import DiveError
from dive.pipeline import Pipeline
from dive.saved import read_record
from dive.search import FlatSearch, Searcher, TransformedSearch
from dive.utils import atomic_path, sha256_file, write_json

FORMAT = "dive-index/1"
DEFAULT_TOP_K = 10
"""Documents returned per query when no ``k`` (``dive search --top``) is given."""


def manifest_path(index_path: Path) -> Path:
    return index_path.with_name(index_path.name + ".json")


@dataclass
class SearchIndex:
    """A loaded index: a :class:`~dive.search.Searcher` of the stored corpus that takes frozen query
    vectors (the pipeline's method in front of the faiss index), its pipeline, row -> document id,
    and the text model."""

    searcher: Searcher
    pipeline: Pipeline
    doc_ids: list[str]
    model: str | None

    def search_vectors(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)`` of the top ``k`` documents for frozen query vectors."""
        return self.searcher.search(query_vectors, min(k, len(self.doc_ids)))

    def search(self, texts: list[str], k: int = DEFAULT_TOP_K) -> list[list[dict[str, Any]]]:
        """Top-``k`` ``{"doc_id", "score"}`` per query text (encoded with the index's model)."""
        if not texts:
            raise DiveError("no query text given")
        scores, rows = self.search_vectors(encode_texts(texts, EncodeConfig(model=self.model), desc="encode queries"), k)
        return [[{"doc_id": self.doc_ids[row], "score": float(score)} for score, row in zip(query_scores, query_rows)
                 if row >= 0] for query_scores, query_rows in zip(scores, rows)]


def build_index(pipeline: Pipeline, pipeline_dir: str | Path, doc_ids: list[str], doc_vectors: np.ndarray,
                out: str | Path, model: str | None = None) -> dict[str, Any]:
    """Compress ``doc_vectors`` with the pipeline and write the faiss index ``out`` plus ``out.json``."""
    out = Path(out)
    if len(doc_ids) != len(doc_vectors):
        raise DiveError(f"{len(doc_ids)} document ids but {len(doc_vectors)} vectors")
    stored = pipeline.encode(doc_vectors)
    if pipeline.codec is None:
        index = faiss.IndexFlatIP(stored.shape[1])
        index.add(stored)
    else:
        index = pipeline.codec.faiss_index(stored)
    binary = isinstance(index, faiss.IndexBinary)
    with atomic_path(out) as tmp:
        (faiss.write_index_binary if binary else faiss.write_index)(index, str(tmp))
    summary = {"index": str(out), "n_vectors": len(doc_ids), "faiss_index": type(index).__name__,
               "index_bytes": out.stat().st_size, **pipeline.describe()}
    write_json(manifest_path(out), {"format": FORMAT, "dive_version": __version__, **summary, "binary": binary,
                                    "pipeline": str(Path(pipeline_dir).resolve()),
                                    "model": str(Path(model).resolve()) if model else None,
                                    "sha256": sha256_file(out), "doc_ids": list(doc_ids)})
    return summary


def load_index(path: str | Path) -> SearchIndex:
    """Read an index written by :func:`build_index`, verifying its checksum and size."""
    path = Path(path)
    record_path = manifest_path(path)
    if not record_path.exists():
        raise DiveError(f"{path}: no {record_path.name} beside it (not written by `dive index`)")
    record = read_record(record_path, FORMAT)
    if not path.exists():
        raise DiveError(f"{path}: missing (its {record_path.name} is here)")
    if sha256_file(path) != record.get("sha256"):
        raise DiveError(f"{path}: checksum does not match {record_path.name} (file altered or truncated)")
    index = (faiss.read_index_binary if record.get("binary") else faiss.read_index)(str(path))
    doc_ids = record.get("doc_ids")
    if not isinstance(doc_ids, list) or len(doc_ids) != index.ntotal:
        raise DiveError(f"{record_path}: its document ids do not match the index's {index.ntotal} vectors")
    pipeline = Pipeline.load(record["pipeline"])
    return SearchIndex(TransformedSearch(pipeline.transform, stored_searcher(index, pipeline)), pipeline,
                       [str(i) for i in doc_ids], record.get("model"))


def stored_searcher(index: Any, pipeline: Pipeline) -> Searcher:
    """A :class:`~dive.search.Searcher` of the faiss ``index`` for the pipeline's (float) output."""
    if pipeline.codec is not None:
        return pipeline.codec.faiss_searcher(index)
    return FlatSearch(index) if isinstance(index, faiss.IndexFlatIP) else index
