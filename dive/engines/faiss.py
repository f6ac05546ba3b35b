"""faiss: one index file that ranks like dive's evaluation, or a faiss ``index_factory`` ANN index.

Without ``factory`` the index is the exact one for the codec: ``IndexFlatIP`` without a codec,
``IndexScalarQuantizer`` for float16/int8, ``IndexPQ`` for pq, ``IndexBinaryFlat`` for binary
(the codec's :meth:`~dive.quantize.base.Codec.faiss_index`). Float storage is searched through
:class:`dive.search.FlatSearch`, which scans a single query on every core; codec storage through
the codec's :meth:`~dive.quantize.base.Codec.faiss_searcher`.

With ``factory`` (e.g. ``HNSW32``, ``IVF256,PQ16``, ``IVF64,Flat``) faiss builds that index over the
pipeline's float output with the inner-product metric, trained on the corpus itself: approximate.
Its search parameters are faiss's defaults (``nprobe=1``, ``efSearch=16``) unless ``search_params``
sets them (``nprobe=16``), stored in the manifest and applied on every load. A codec is refused
then: the factory string is the storage.

The file is checksummed in the manifest and parsed from its verified bytes (faiss index files are
plain binary, never code).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np

from dive.engines.base import Corpus, Engine, EngineConfig
from dive.errors import DiveError
from dive.pipeline import Pipeline
from dive.saved import file_sha256, read_verified
from dive.search import FlatSearch, Searcher
from dive.utils import atomic_path


class FaissEngine(Engine):
    """A faiss index file: exact per codec, or ``--factory``'s ANN index."""

    name = "faiss"
    summary = "one faiss index file: exact per codec (IndexFlatIP, IndexScalarQuantizer, IndexPQ, IndexBinaryFlat) " \
              "or an index_factory string (HNSW32, IVF256,PQ16)"
    layout = "file"

    def check_config(self, config: EngineConfig) -> None:
        if config.url is not None:
            raise DiveError(f"--url is for --engine qdrant, not {self.name}")
        if config.search_params is not None and config.factory is None:
            raise DiveError("--search-params tunes a --factory index; the exact index has none")

    def exact(self, pipeline: Pipeline) -> bool:
        return self.config.factory is None

    def write(self, pipeline: Pipeline, corpus: Corpus, target: Path) -> dict[str, Any]:
        index = self._build(pipeline, corpus.output)
        binary = isinstance(index, faiss.IndexBinary)
        with atomic_path(target) as tmp:
            (faiss.write_index_binary if binary else faiss.write_index)(index, str(tmp))
        return {"faiss_index": type(index).__name__, "factory": self.config.factory,
                "search_params": self.config.search_params, "binary": binary, "sha256": file_sha256(target)}

    def _build(self, pipeline: Pipeline, output: np.ndarray) -> Any:
        if self.config.factory is not None:
            if pipeline.codec is not None:
                raise DiveError(f"--factory builds its own storage from the float output; index a pipeline without "
                                f"a codec (this one has {pipeline.codec.name})")
            index = factory_index(self.config.factory, output)
            set_search_params(index, self.config.search_params)
            return index
        if pipeline.codec is None:
            index = faiss.IndexFlatIP(output.shape[1])
            index.add(output)
            return index
        return pipeline.codec.faiss_index(pipeline.codec.encode(output))

    def open(self, target: Path, fields: dict[str, Any], pipeline: Pipeline, n_docs: int) -> Searcher:
        data = read_verified(target, fields["sha256"], f"{target}: checksum does not match its manifest "
                                                       "(file altered or truncated)")
        index = parse_index(target, data, fields["binary"])
        if index.ntotal != n_docs:
            raise DiveError(f"{target}: its manifest's document ids do not match the index's {index.ntotal} vectors")
        check_index_fits(target, index, pipeline, fields.get("factory"))
        set_search_params(index, fields.get("search_params"))
        return stored_searcher(index, pipeline)


def factory_index(factory: str, vectors: np.ndarray) -> Any:
    """``faiss.index_factory(dim, factory, inner product)`` trained on and holding ``vectors``; a string
    faiss refuses, or a corpus too small to train it, is one line."""
    try:
        index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            index.train(vectors)
        index.add(vectors)
    except RuntimeError as error:
        raise DiveError(f"--factory {factory!r}: faiss refused it ({_first_line(error)})") from None
    return index


def set_search_params(index: Any, params: Any) -> None:
    """Apply faiss ``ParameterSpace`` settings (``nprobe=16,efSearch=128``) to ``index``; a setting the
    index does not have is one line."""
    if params is None:
        return
    if not isinstance(params, str):
        raise DiveError(f"faiss search parameters must be text like 'nprobe=16', got {params!r}")
    try:
        faiss.ParameterSpace().set_index_parameters(index, params)
    except RuntimeError as error:
        raise DiveError(f"--search-params {params!r}: faiss refused it ({_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return next((line for line in lines if line.startswith("Error")), lines[0] if lines else type(error).__name__)[:200]


def parse_index(path: Path, data: bytes, binary: bool) -> Any:
    """The faiss index serialised in ``data`` (verified bytes of ``path``); a file faiss cannot read is one line."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        return (faiss.deserialize_index_binary if binary else faiss.deserialize_index)(buffer)
    except (RuntimeError, ValueError, MemoryError) as error:
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise DiveError(f"{path}: not a readable faiss index ({reason[:160]})") from None


def check_index_fits(path: Path, index: Any, pipeline: Pipeline, factory: str | None = None) -> None:
    """Refuse an index of another kind or dimension than the one :class:`FaissEngine` makes for ``pipeline``."""
    expected = reference_index(pipeline, factory)
    if type(index) is not type(expected):
        raise DiveError(f"{path}: a faiss {type(index).__name__}, but the pipeline is indexed as "
                        f"{type(expected).__name__} (not the index `dive index` wrote)")
    if index.d != expected.d:
        raise DiveError(f"{path}: a faiss index of dimension {index.d}, but the pipeline stores dimension "
                        f"{expected.d} (not the index `dive index` wrote)")


def reference_index(pipeline: Pipeline, factory: str | None = None) -> Any:
    """An (empty or one-probe) index of the kind and dimension :class:`FaissEngine` makes for ``pipeline``."""
    dim = pipeline.method.output_dim
    if factory is not None:
        try:
            return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as error:
            raise DiveError(f"factory {factory!r}: faiss refused it ({_first_line(error)})") from None
    if pipeline.codec is None:
        return faiss.IndexFlatIP(dim)
    probe = np.full((1, dim), dim ** -0.5, dtype=np.float32)
    return pipeline.codec.faiss_index(pipeline.codec.encode(probe))


def stored_searcher(index: Any, pipeline: Pipeline) -> Searcher:
    """A :class:`~dive.search.Searcher` of the faiss ``index`` for the pipeline's (float) output."""
    if pipeline.codec is not None:
        return pipeline.codec.faiss_searcher(index)
    return FlatSearch(index) if isinstance(index, faiss.IndexFlatIP) else index
