"""``dive index`` / ``dive search``: a faiss index of a compressed corpus, queried with text.

``build_index`` stores the corpus the way the pipeline stores it (float32 output, or codec
codes) in the faiss index that ranks like dive's evaluation: ``IndexFlatIP`` without a codec,
``IndexScalarQuantizer`` for float16/int8, ``IndexPQ`` for pq, ``IndexBinaryFlat`` for binary.
Float storage is searched through :class:`dive.search.FlatSearch`, which scans a single query
on every core; codec storage through the codec's :meth:`~dive.quantize.base.Codec.faiss_searcher`.
A loaded index is a :class:`dive.search.Searcher` over frozen query vectors, behind the pipeline's method.
Beside ``PATH`` it writes ``PATH.json``: the document ids (faiss stores row numbers), the
pipeline and model folders, the index's SHA-256 and the pipeline's (:func:`dive.pipeline.saved_sha256`),
both checked on load: a pipeline retrained or saved again since is refused, as its output no
longer matches the stored vectors. Both files are written atomically, the index first; faiss
index files are plain binary, never code, and are parsed from their verified bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from dive import __version__
from dive.encode import EncodeConfig, encode_texts
from dive.errors import DiveError, short_repr
from dive.pipeline import Pipeline, saved_sha256
from dive.saved import file_sha256, read_record, read_verified
from dive.search import FlatSearch, Searcher, TransformedSearch
from dive.utils import atomic_path, write_json

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
                                    "pipeline_sha256": saved_sha256(pipeline_dir),
                                    "model": str(Path(model).resolve()) if model else None,
                                    "sha256": file_sha256(out), "doc_ids": list(doc_ids)})
    return summary


def load_index(path: str | Path) -> SearchIndex:
    """Read an index written by :func:`build_index`: its manifest's fields checked, the index verified
    against its checksum before faiss parses it, and the pipeline against the checksum it had then."""
    path = Path(path)
    record_path = manifest_path(path)
    if not record_path.exists():
        raise DiveError(f"{path}: no {record_path.name} beside it (not written by `dive index`)")
    record = read_record(record_path, FORMAT)
    fields = _manifest_fields(record_path, record)
    if not path.exists():
        raise DiveError(f"{path}: missing (its {record_path.name} is here)")
    data = read_verified(path, fields["sha256"], f"{path}: checksum does not match {record_path.name} "
                                                 "(file altered or truncated)")
    index = _parse_index(path, data, fields["binary"])
    doc_ids = fields["doc_ids"]
    if len(doc_ids) != index.ntotal:
        raise DiveError(f"{record_path}: its document ids do not match the index's {index.ntotal} vectors")
    pipeline = Pipeline.load(fields["pipeline"], fields["pipeline_sha256"],
                             f"{path}: its pipeline {fields['pipeline']} has changed since `dive index` built it "
                             "(retrained or saved again); run `dive index` again")
    _check_index_fits(path, index, pipeline)
    return SearchIndex(TransformedSearch(pipeline.transform, stored_searcher(index, pipeline)), pipeline,
                       [str(i) for i in doc_ids], fields["model"])


MANIFEST_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "pipeline": (str, "the folder of the pipeline it was built with"),
    "pipeline_sha256": (str, "the pipeline's checksum (indexes of older dives lack it: run `dive index` again)"),
    "sha256": (str, "the index file's checksum"),
    "binary": (bool, "true or false"),
    "doc_ids": (list, "the list of document ids"),
    "model": ((str, type(None)), "the text model's folder, or null"),
}
"""What :func:`load_index` reads from an index manifest: each field's type, and what it is (for the refusal)."""


def _manifest_fields(record_path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """The fields :func:`load_index` uses, each checked for its type; one refusal naming the first that is wrong."""
    for name, (kind, meaning) in MANIFEST_FIELDS.items():
        if name not in record:
            raise DiveError(f"{record_path}: no '{name}' ({meaning}); run `dive index` again")
        if not _has_type(record[name], kind):
            raise DiveError(f"{record_path}: '{name}' must be {meaning}, got {short_repr(record[name])}")
    return {name: record[name] for name in MANIFEST_FIELDS}


def _has_type(value: Any, kind: type | tuple[type, ...]) -> bool:
    """``isinstance``, except that true/false is only a bool (JSON booleans are ints in Python)."""
    return isinstance(value, kind) and (not isinstance(value, bool) or kind is bool)


def _parse_index(path: Path, data: bytes, binary: bool) -> Any:
    """The faiss index serialised in ``data`` (verified bytes of ``path``); a file faiss cannot read is one line."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        return (faiss.deserialize_index_binary if binary else faiss.deserialize_index)(buffer)
    except (RuntimeError, ValueError, MemoryError) as error:
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise DiveError(f"{path}: not a readable faiss index ({reason[:160]})") from None


def _check_index_fits(path: Path, index: Any, pipeline: Pipeline) -> None:
    """Refuse an index of another kind or dimension than the one :func:`build_index` makes for ``pipeline``."""
    expected = _reference_index(pipeline)
    if type(index) is not type(expected):
        raise DiveError(f"{path}: a faiss {type(index).__name__}, but the pipeline is indexed as "
                        f"{type(expected).__name__} (not the index `dive index` wrote)")
    if index.d != expected.d:
        raise DiveError(f"{path}: a faiss index of dimension {index.d}, but the pipeline stores dimension "
                        f"{expected.d} (not the index `dive index` wrote)")


def _reference_index(pipeline: Pipeline) -> Any:
    """An index of the kind and dimension :func:`build_index` makes for ``pipeline``, holding one probe vector."""
    if pipeline.codec is None:
        return faiss.IndexFlatIP(pipeline.method.output_dim)
    probe = np.full((1, pipeline.method.output_dim), pipeline.method.output_dim ** -0.5, dtype=np.float32)
    return pipeline.codec.faiss_index(pipeline.codec.encode(probe))


def stored_searcher(index: Any, pipeline: Pipeline) -> Searcher:
    """A :class:`~dive.search.Searcher` of the faiss ``index`` for the pipeline's (float) output."""
    if pipeline.codec is not None:
        return pipeline.codec.faiss_searcher(index)
    return FlatSearch(index) if isinstance(index, faiss.IndexFlatIP) else index
